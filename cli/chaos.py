"""`p2pstore chaos`: a long Jepsen-style run on a throw-away local cluster, then the verdict.

It starts its own nodes (never touches a running cluster), hurts them for ``--duration``
seconds while clients write and read, heals, checks the recorded history and exits 1 when
the checker found a violation. The history stays in ``--workdir`` for later inspection.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer

from .client import CliError

_FAULTS = {"kill", "pause", "restart", "partition", "one_way"}


def chaos(
    nodes: Annotated[int, typer.Option("--nodes", min=3, help="Cluster size (3 or more).")] = 5,
    duration: Annotated[float, typer.Option("--duration", min=1, help="Seconds of load under faults.")] = 300,
    backend: Annotated[
        str,
        typer.Option("--backend", help="processes (anywhere) or netns (root + iproute2: partitions too)."),
    ] = "processes",
    clients: Annotated[int, typer.Option("--clients", min=1, help="Concurrent clients.")] = 4,
    keys: Annotated[int, typer.Option("--keys", min=1, help="Size of the key space.")] = 8,
    faults: Annotated[
        str | None,
        typer.Option(
            "--faults",
            help="Comma-separated: kill,pause,restart,partition,one_way (default: all the backend supports).",
        ),
    ] = None,
    max_down: Annotated[
        int | None,
        typer.Option("--max-down", min=1, max=2, help="Nodes hurt at once (default 1 for 3, else 2)."),
    ] = None,
    flip_every: Annotated[
        float,
        typer.Option("--flip-every", min=0, help="Seconds between flipped bytes in stored chunks; 0 = off."),
    ] = 0.0,
    bound: Annotated[
        float, typer.Option("--bound", help="Seconds allowed to converge after healing.")
    ] = 120.0,
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed for faults and workload.")] = None,
    workdir: Annotated[
        Path | None,
        typer.Option("--workdir", help="Where node data, logs and history.jsonl go (default: temp)."),
    ] = None,
    fsync: Annotated[str, typer.Option("--fsync", help="Node fsync mode: always, batch or never.")] = "never",
    tls: Annotated[
        bool, typer.Option("--tls", help="Node-to-node traffic over mutual TLS (processes backend).")
    ] = False,
) -> None:
    """Run a chaos test on a local cluster it starts itself; print the checker summary."""
    from p2pstore.chaos.nemesis import Unsupported
    from p2pstore.chaos.runner import ChaosConfig, run_chaos
    from p2pstore.chaos.workload import WorkloadConfig

    if backend not in ("processes", "netns"):
        raise CliError(f"--backend must be processes or netns, not {backend!r}", 2)
    fault_list = tuple(f.strip() for f in faults.split(",") if f.strip()) if faults else None
    if fault_list:
        unknown = set(fault_list) - _FAULTS
        if unknown:
            raise CliError(f"unknown faults {sorted(unknown)}; choose from {sorted(_FAULTS)}", 2)
        if backend == "processes" and set(fault_list) & {"partition", "one_way"}:
            raise CliError("partitions need --backend netns", 2)
    if tls and backend != "processes":
        raise CliError("--tls goes with --backend processes for now", 2)
    workdir = workdir or Path(tempfile.mkdtemp(prefix="p2pstore-chaos-"))
    cfg = ChaosConfig(
        nodes=nodes,
        duration=duration,
        backend=backend,
        seed=seed,
        max_down=max_down,
        faults=fault_list,
        flip_every=flip_every,
        convergence_bound=bound,
        workload=WorkloadConfig(clients=clients, keys=keys, seed=seed),
        node_flags={"fsync": fsync},
        tls=tls,
    )
    typer.echo(f"chaos: {nodes} nodes, {backend}, {duration:.0f}s of load; workdir {workdir}", err=True)
    started = time.monotonic()
    try:
        result = run_chaos(cfg, workdir)
    except Unsupported as exc:
        raise CliError(str(exc), 2) from exc
    typer.echo(result.report.summary())
    typer.echo(f"  history: {result.history_path} ({time.monotonic() - started:.0f}s in all)")
    if not result.report.ok:
        raise CliError(f"chaos check failed: {len(result.report.violations)} violations", 1)


def register(app: typer.Typer) -> None:
    app.command("chaos")(chaos)
