"""`p2pstore cluster up`: a local N-node cluster of separate processes, for trying p2pstore.

Each node gets its own data folder and port; node 0 is the seed of the others. Node-to-node
traffic is mutual TLS: the cluster CA and node certificates are made in ``<data root>/certs``
(kept, so a second `cluster up` rejoins the same cluster); ``--insecure-plain`` runs it in plain
HTTP signed with a cluster secret kept in the data root. Ctrl-C (or SIGTERM) stops every node
gracefully. `p2pstore cluster certs` makes a CA and certificates for nodes elsewhere.
"""

from __future__ import annotations

import secrets
import signal
import time
from pathlib import Path
from typing import Annotated

import typer

from p2pstore.launcher import CLUSTER_SECRET_ENV, LocalNode, NodeNotReady, stop_all

from .client import CliError

app = typer.Typer(help="Run a local cluster of node processes.", no_args_is_help=True, rich_markup_mode=None)
S3_OFFSET = 100  # node i serves S3 on base port + 100 + i
INTERNAL_OFFSET = 200  # node i takes node-to-node TLS traffic on base port + 200 + i


def cluster_secret(root: Path) -> str:
    path = root / "cluster-secret"
    if path.exists():
        return path.read_text().strip()
    secret = secrets.token_urlsafe(24)
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return secret


@app.command("certs")
def certs(
    out: Annotated[Path, typer.Option("--out", help="Folder for ca.pem, ca-key.pem and the node files.")],
    nodes: Annotated[
        int, typer.Option("--nodes", "-n", min=0, max=1000,
                          help="Certificates node0..N-1 for local nodes (localhost, 127.0.0.1).")
    ] = 0,
    host: Annotated[
        list[str] | None,
        typer.Option("--host", help="A certificate for the node peers call by this name or IP (repeatable)."),
    ] = None,
) -> None:
    """Make the cluster CA (kept when OUT already holds one) and node certificates signed by it."""
    from p2pstore.cluster.tls import CA_CERT, CA_KEY, make_cluster_certs

    if not nodes and not host:
        raise CliError("say how many local nodes (--nodes N) or name them (--host NAME, repeatable)")
    try:
        made = make_cluster_certs(out, nodes, host or [])
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot make certificates in {out}: {exc}") from exc
    typer.echo(f"cluster CA: {out / CA_CERT} (its key {out / CA_KEY}: keep it off the nodes)")
    for files in made:
        typer.echo(f"  {files.name}: --node-cert {files.cert} --node-key {files.key}")
    typer.echo(f"every node: --cluster-ca {out / CA_CERT}")


def local_certs(root: Path, nodes: int) -> Path:
    """``root/certs``: the CA and node0..N-1 certificates, made once and kept."""
    from p2pstore.cluster.tls import LOCAL_NAMES, make_cluster_certs, make_node_cert

    folder = root / "certs"
    if not (folder / "ca.pem").exists():
        make_cluster_certs(folder, nodes)
    for i in range(nodes):
        if not (folder / f"node{i}.pem").exists():
            make_node_cert(folder, f"node{i}", list(LOCAL_NAMES))
    return folder


@app.command("up")
def up(
    nodes: Annotated[int, typer.Option("--nodes", "-n", min=1, max=50, help="How many nodes.")] = 3,
    base_port: Annotated[int, typer.Option(help="Port of node 0; node i uses base+i.")] = 7000,
    data_root: Annotated[Path, typer.Option(help="Folder holding one data dir per node.")] = Path(
        "p2pstore-cluster"
    ),
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    fsync: Annotated[str, typer.Option(help="always | batch | never")] = "always",
    s3: Annotated[
        bool, typer.Option("--s3/--no-s3", help="Serve the S3 API too: node i on port base+100+i.")
    ] = True,
    insecure_plain: Annotated[
        bool, typer.Option("--insecure-plain", help="Node-to-node traffic in plain HTTP (signed) instead "
                           "of mutual TLS on port base+200+i.")
    ] = False,
) -> None:
    """Start NODES local node processes and keep them running until Ctrl-C."""
    data_root.mkdir(parents=True, exist_ok=True)
    # The secret goes through the environment, not the command line every local user can read;
    # the nodes also see the caller's other P2PSTORE_* settings.
    tls = None if insecure_plain else local_certs(data_root, nodes)
    flags = {"fsync": fsync, "insecure_plain": insecure_plain}
    env = {CLUSTER_SECRET_ENV: cluster_secret(data_root)} if insecure_plain else {}
    procs = LocalNode.cluster(
        data_root, nodes, flags, ports=range(base_port, base_port + nodes), host=host,
        env=env, keep_settings=True, tls=tls,
        internal_ports=range(base_port + INTERNAL_OFFSET, base_port + INTERNAL_OFFSET + nodes),
        s3_ports=range(base_port + S3_OFFSET, base_port + S3_OFFSET + nodes) if s3 else None,
    )  # fmt: skip
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    try:
        for proc in procs:
            proc.start()
        for proc in procs:
            try:
                proc.wait_ready(30.0)  # the others: once they found the first
            except NodeNotReady as exc:
                raise CliError(exc.summary) from exc
        typer.echo(f"p2pstore cluster of {nodes} nodes is up (data in {data_root}/, logs node*.log):")
        if tls is not None:
            typer.echo(f"node-to-node traffic: mutual TLS, certificates in {tls}/")
        else:
            typer.echo("WARNING: node-to-node traffic is plain HTTP (signed, not encrypted)")
        for proc in procs:
            typer.echo(f"  {proc.name}  {proc.url}" + (f"  S3 {proc.s3_url}" if s3 else ""))
        typer.echo(f"status page: {procs[0].url}/")
        typer.echo(f"try: P2PSTORE_URL={','.join(p.url for p in procs)} p2pstore status")
        if s3:
            typer.echo(f"S3 keys: P2PSTORE_URL={procs[0].url} p2pstore key create NAME --admin")
            typer.echo(f"then e.g.: aws --endpoint-url {procs[0].s3_url} s3 ls (docs/s3.md)")
        typer.echo("press Ctrl-C to stop all nodes")
        reported: set[int] = set()
        while not stopping:
            for i, proc in enumerate(procs):
                if proc.returncode is not None and i not in reported:
                    reported.add(i)
                    typer.echo(f"{proc.name} ({proc.url}) exited with code {proc.returncode}", err=True)
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        typer.echo("stopping nodes...")
        stop_all(procs, timeout=15.0)
        typer.echo("all nodes stopped")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="cluster")
