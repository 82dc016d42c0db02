"""`p2pstore cluster up`: a local N-node cluster of separate processes, for trying p2pstore.

Each node gets its own data folder and port; node 0 is the seed of the others; they share a
cluster secret kept in the data root so a second `cluster up` rejoins the same cluster.
Ctrl-C (or SIGTERM) stops every node gracefully.
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

app = typer.Typer(help="Run a local cluster of node processes.", no_args_is_help=True)
S3_OFFSET = 100  # node i serves S3 on base port + 100 + i


def cluster_secret(root: Path) -> str:
    path = root / "cluster-secret"
    if path.exists():
        return path.read_text().strip()
    secret = secrets.token_urlsafe(24)
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return secret


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
) -> None:
    """Start NODES local node processes and keep them running until Ctrl-C."""
    data_root.mkdir(parents=True, exist_ok=True)
    # The secret goes through the environment, not the command line every local user can read;
    # the nodes also see the caller's other P2PSTORE_* settings.
    procs = LocalNode.cluster(
        data_root, nodes, {"fsync": fsync}, ports=range(base_port, base_port + nodes), host=host,
        env={CLUSTER_SECRET_ENV: cluster_secret(data_root)}, keep_settings=True,
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
