"""`p2pstore cluster up`: a local N-node cluster of separate processes, for trying p2pstore.

Each node gets its own data folder and port; node 0 is the seed of the others; they share a
cluster secret kept in the data root so a second `cluster up` rejoins the same cluster.
Ctrl-C (or SIGTERM) stops every node gracefully.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Annotated

import typer

from .client import CliError

app = typer.Typer(help="Run a local cluster of node processes.", no_args_is_help=True)


def cluster_secret(root: Path) -> str:
    path = root / "cluster-secret"
    if path.exists():
        return path.read_text().strip()
    secret = secrets.token_urlsafe(24)
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return secret


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CliError(f"node at {url} exited with code {proc.returncode}; see its log")
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as resp:
                if json.load(resp).get("joined", True):  # the others: once they found the first
                    return
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    raise CliError(f"node at {url} did not become ready within {timeout:.0f}s")


@app.command("up")
def up(
    nodes: Annotated[int, typer.Option("--nodes", "-n", min=1, max=50, help="How many nodes.")] = 3,
    base_port: Annotated[int, typer.Option(help="Port of node 0; node i uses base+i.")] = 7000,
    data_root: Annotated[Path, typer.Option(help="Folder holding one data dir per node.")] = Path(
        "p2pstore-cluster"
    ),
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    fsync: Annotated[str, typer.Option(help="always | batch | never")] = "always",
) -> None:
    """Start NODES local node processes and keep them running until Ctrl-C."""
    data_root.mkdir(parents=True, exist_ok=True)
    secret = cluster_secret(data_root)
    procs: list[tuple[str, subprocess.Popen]] = []
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    try:
        for i in range(nodes):
            port = base_port + i
            url = f"http://{host}:{port}"
            args = [sys.executable, "-m", "p2pstore", "node", "start",
                    "--data-dir", str(data_root / f"node{i}"), "--host", host, "--port", str(port),
                    "--fsync", fsync]  # fmt: skip
            if i > 0:
                args += ["--seeds", f"{host}:{base_port}"]
            log = open(data_root / f"node{i}.log", "ab")  # noqa: SIM115 - lives as long as the node
            env = {**os.environ, "P2PSTORE_CLUSTER_SECRET": secret}
            procs.append((url, subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env,
                                                start_new_session=True)))  # fmt: skip
        for url, proc in procs:
            wait_healthy(url, proc)
        typer.echo(f"p2pstore cluster of {nodes} nodes is up (data in {data_root}/, logs node*.log):")
        for i, (url, _) in enumerate(procs):
            typer.echo(f"  node{i}  {url}")
        typer.echo(f"status page: {procs[0][0]}/")
        typer.echo(f"try: P2PSTORE_URL={','.join(u for u, _ in procs)} p2pstore status")
        typer.echo("press Ctrl-C to stop all nodes")
        reported: set[int] = set()
        while not stopping:
            for i, (url, proc) in enumerate(procs):
                if proc.poll() is not None and i not in reported:
                    reported.add(i)
                    typer.echo(f"node{i} ({url}) exited with code {proc.returncode}", err=True)
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        typer.echo("stopping nodes...")
        for _, proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        typer.echo("all nodes stopped")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="cluster")
