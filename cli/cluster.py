"""`p2pstore cluster up`: a local N-node cluster of separate processes, for trying p2pstore.

Each node gets its own data folder and port; node 0 is the seed of the others. Node-to-node
traffic is mutual TLS: the cluster CA and node certificates are made in ``<data root>/certs``
(kept, so a second `cluster up` rejoins the same cluster); ``--insecure-plain`` runs it in plain
HTTP signed with a cluster secret kept in the data root. Ctrl-C (or SIGTERM) stops every node
gracefully. `p2pstore cluster certs` makes a CA and certificates for nodes elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .cluster_state import alive, default_root, find_node, launch, load, save, set_pid, stop_pid
from .common import print_json
from .failures import EXIT_BAD_INPUT, EXIT_REFUSED, CliError

if TYPE_CHECKING:
    from p2pstore.launcher import LocalNode

app = typer.Typer(help="Run a local cluster of node processes.", no_args_is_help=True, rich_markup_mode=None)
S3_OFFSET = 100  # node i serves S3 on base port + 100 + i
INTERNAL_OFFSET = 200  # node i takes node-to-node TLS traffic on base port + 200 + i
CHOOSE_ANOTHER = "choose another --base-port"


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


DataRootOption = Annotated[
    Path | None,
    typer.Option(
        "--data-root", envvar="P2PSTORE_CLUSTER_ROOT", show_default=False,
        help="Folder of the cluster's state, data dirs and logs "
        "[default: $XDG_STATE_HOME/p2pstore/cluster or ~/.local/state/p2pstore/cluster].",
    ),
]  # fmt: skip


def _root(data_root: Path | None) -> Path:
    return (data_root or default_root()).absolute()


def _restart_hint(root: Path, name: str) -> str:
    where = "" if root == default_root().absolute() else f" --data-root {root}"
    return f"p2pstore cluster restart {name}{where}"


def _node_state(proc: LocalNode) -> dict[str, Any]:
    return {
        "name": proc.name, "url": proc.url, "port": proc.port, "s3_port": proc.s3_port or None,
        "internal_port": proc.internal_port, "data_dir": str(proc.data_dir), "log": str(proc.log_path),
        "command": proc.command(), "pid": proc.pid,
    }  # fmt: skip


def _running(root: Path) -> bool:
    """Whether a `cluster up` or any node of the cluster in ``root`` still runs."""
    try:
        old = load(root)
    except CliError:
        return False
    nodes_alive = any(alive(n.get("pid"), n["data_dir"]) for n in old["nodes"])
    return nodes_alive or alive(old.get("up_pid"), "cluster")


@app.command("up")
def up(
    nodes: Annotated[int, typer.Option("--nodes", "-n", min=1, max=50, help="How many nodes.")] = 3,
    base_port: Annotated[int, typer.Option(help="Port of node 0; node i uses base+i.")] = 7000,
    data_root: DataRootOption = None,
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
    """Start NODES local node processes and keep them running until Ctrl-C or `cluster stop`."""
    from p2pstore.launcher import CLUSTER_SECRET_ENV, LocalNode, NodeNotReady, stop_all

    root = _root(data_root)
    root.mkdir(parents=True, exist_ok=True)
    if _running(root):
        raise CliError(f"a cluster is already running in {root}: see 'p2pstore cluster status'", EXIT_REFUSED)
    _check_ports(host, base_port, nodes, s3=s3, internal=not insecure_plain)
    # The secret goes through the environment, not the command line every local user can read;
    # the nodes also see the caller's other P2PSTORE_* settings.
    tls = None if insecure_plain else local_certs(root, nodes)
    flags: dict[str, object] = {"fsync": fsync, "insecure_plain": insecure_plain}
    if s3 and "P2PSTORE_S3_DOMAIN" not in os.environ:  # http://<bucket>.localhost:PORT/ works too
        flags["s3_domain"] = ["localhost"]
    secret = cluster_secret(root) if insecure_plain else None
    env = {CLUSTER_SECRET_ENV: secret} if secret else {}
    procs = LocalNode.cluster(
        root, nodes, flags, ports=_ports(base_port, 0, nodes), host=host,
        env=env, keep_settings=True, tls=tls, internal_ports=_ports(base_port, INTERNAL_OFFSET, nodes),
        s3_ports=_ports(base_port, S3_OFFSET, nodes) if s3 else None,
    )  # fmt: skip
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    state: dict[str, Any] = {"up_pid": os.getpid(), "cluster_secret": secret, "tls": tls and str(tls)}
    try:
        for proc in procs:
            proc.start()
        state["nodes"] = [_node_state(p) for p in procs]
        save(root, state)
        for proc in procs:
            try:
                proc.wait_ready(30.0)  # the others: once they found the first
            except NodeNotReady as exc:
                raise CliError(exc.summary) from exc
        typer.echo(f"p2pstore cluster of {nodes} nodes is up (data in {root}/, logs node*.log):")
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
            if "s3_domain" in flags:
                typer.echo(f"virtual-host style: http://<bucket>.localhost:{procs[0].s3_port}/<key>")
        typer.echo(f"a stopped node is not restarted by itself; bring it back: {_restart_hint(root, 'NODE')}")
        typer.echo("press Ctrl-C (or run 'p2pstore cluster stop') to stop all nodes")
        _watch(root, procs, lambda: stopping)
    except KeyboardInterrupt:
        pass
    finally:
        typer.echo("stopping nodes...")
        stop_all(procs, timeout=15.0)
        with contextlib.suppress(CliError, OSError):
            final = load(root)
            for node in final["nodes"]:  # nodes `cluster restart` started are not our children
                stop_pid(node.get("pid") or 0, node["data_dir"])
                node["pid"] = None
            final["up_pid"] = None
            save(root, final)
        typer.echo("all nodes stopped")


def port_layout(
    base_port: int, nodes: int, *, s3: bool = True, internal: bool = True
) -> list[tuple[int, str]]:
    """Every port `cluster up` listens on, each with what it serves."""
    roles = [(0, "HTTP API")]
    if s3:
        roles.append((S3_OFFSET, "S3 API"))
    if internal:
        roles.append((INTERNAL_OFFSET, "node-to-node port"))
    return [(port, f"node{i}'s {role}") for offset, role in roles
            for i, port in enumerate(_ports(base_port, offset, nodes))]  # fmt: skip


def _ports(base_port: int, offset: int, nodes: int) -> range:
    """Node i's port for one role: base + offset + i."""
    return range(base_port + offset, base_port + offset + nodes)


def _check_ports(host: str, base_port: int, nodes: int, *, s3: bool, internal: bool) -> None:
    """Refuse to start when a port is taken: one clear line instead of a node that dies later."""
    from p2pstore.launcher import port_free

    for port, role in port_layout(base_port, nodes, s3=s3, internal=internal):
        if not 0 < port < 65536:
            raise CliError(f"port {port} ({role}) is out of range: {CHOOSE_ANOTHER}", EXIT_BAD_INPUT)
        if not port_free(port, host):
            raise CliError(f"port {port} ({role}) is in use on {host}: {CHOOSE_ANOTHER}", EXIT_REFUSED)


def _watch(root: Path, procs: list[LocalNode], stopping: Callable[[], bool]) -> None:
    """Report each node that stops (once per process) with the command that brings it back."""
    reported: set[int] = set()
    while not stopping():
        with contextlib.suppress(CliError, OSError):
            by_name = {n["name"]: n for n in load(root)["nodes"]}
        for proc in procs:
            node = by_name.get(proc.name, {})
            pid = node.get("pid") or proc.pid
            if pid in reported:
                continue
            if pid == proc.pid:
                if proc.returncode is None:
                    continue
                why = f"exited with code {proc.returncode}"
            elif alive(pid, node.get("data_dir", "")):
                continue
            else:
                why = f"(pid {pid}) stopped"
            reported.add(pid)
            typer.echo(f"{proc.name} ({proc.url}) {why}; restart it with: {_restart_hint(root, proc.name)}",
                       err=True)  # fmt: skip
        time.sleep(0.2)


@app.command("status")
def status(
    data_root: DataRootOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Show each node of the local cluster: URL, pid, running or not, joined."""
    from p2pstore.launcher import http_json

    root = _root(data_root)
    state = load(root)
    rows = []
    for node in state["nodes"]:
        running = alive(node.get("pid"), node["data_dir"])
        health: Any = None
        if running:
            with contextlib.suppress(OSError, ValueError):
                health = http_json(node["url"] + "/health", timeout=2.0)[1]
        rows.append({
            "name": node["name"], "url": node["url"], "s3_port": node.get("s3_port"), "pid": node.get("pid"),
            "running": running, "node_id": health.get("node_id") if isinstance(health, dict) else None,
            "joined": bool(isinstance(health, dict) and health.get("joined")), "data_dir": node["data_dir"],
        })  # fmt: skip
    if as_json:
        print_json({"data_root": str(root), "nodes": rows})
        return
    typer.echo(f"cluster in {root}")
    for r in rows:
        if not r["running"]:
            typer.echo(f"  {r['name']:<8} {r['url']:<24} stopped   ({_restart_hint(root, r['name'])})")
        else:
            joined = "joined" if r["joined"] else "not answering" if r["node_id"] is None else "joining"
            node_id = r["node_id"] or "-"
            typer.echo(f"  {r['name']:<8} {r['url']:<24} running   pid {r['pid']}  {node_id}  {joined}")
    down = sum(not r["running"] for r in rows)
    if down:
        raise CliError(f"{down} of {len(rows)} nodes are not running", 1)


@app.command("restart")
def restart(
    node: Annotated[str, typer.Argument(help="The node: its name (node2), index or port.")],
    data_root: DataRootOption = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait until it is ready.")] = 60.0,
) -> None:
    """Start NODE again (stopping it first if it still runs), with its data dir, ports and secret."""
    from p2pstore.launcher import http_json

    root = _root(data_root)
    state = load(root)
    entry = find_node(state, node)
    stop_pid(entry.get("pid") or 0, entry["data_dir"])
    pid = launch(entry, state.get("cluster_secret"))
    set_pid(root, entry["name"], pid)
    deadline = time.monotonic() + timeout
    while True:
        if not alive(pid, entry["data_dir"]):
            raise CliError(f"{entry['name']} exited before it was ready; see {entry['log']}")
        with contextlib.suppress(OSError, ValueError):
            code, body = http_json(entry["url"] + "/health", timeout=1.0)
            if code == 200 and isinstance(body, dict) and body.get("joined"):
                break
        if time.monotonic() > deadline:
            raise CliError(f"{entry['name']} was not ready within {timeout:.0f}s; see {entry['log']}")
        time.sleep(0.05)
    typer.echo(f"{entry['name']} restarted: {entry['url']} (pid {pid}, node {body.get('node_id')})")


@app.command("stop")
def stop_cmd(data_root: DataRootOption = None) -> None:
    """Stop every node of the local cluster (and the `cluster up` that watches them)."""
    root = _root(data_root)
    state = load(root)
    up_pid = state.get("up_pid")
    if alive(up_pid, "cluster"):
        os.kill(up_pid, signal.SIGTERM)  # it stops its nodes and clears the pids
        deadline = time.monotonic() + 60
        while alive(up_pid, "cluster") and time.monotonic() < deadline:
            time.sleep(0.05)
        state = load(root)
    stopped = 0
    for node in state["nodes"]:
        if alive(node.get("pid"), node["data_dir"]):
            stop_pid(node["pid"], node["data_dir"])
            stopped += 1
        node["pid"] = None
    state["up_pid"] = None
    save(root, state)
    typer.echo(f"cluster in {root} stopped")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="cluster")
