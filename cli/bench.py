"""`p2pstore bench`: PUT/GET throughput and latency against running nodes or local throw-away ones.

The same code as ``benchmarks/bench_http.py`` (p2pstore/bench/runner.py), so a deployed cluster
can be measured with nothing but the installed command. It uses its own ``--url``: without
``--url`` or ``--local`` it starts one local node rather than loading a cluster by accident.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .client import CliError
from .common import Connection


def bench(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(
            "--url", help="Running nodes to measure, comma-separated (round-robin).", show_default=False
        ),
    ] = None,
    local: Annotated[
        int | None,
        typer.Option(
            "--local", metavar="N", help="Start N local nodes in a temp dir (default: 1).", show_default=False
        ),
    ] = None,
    pids: Annotated[
        str | None,
        typer.Option("--pids", help="With --url: node pids (same order) for peak RSS.", show_default=False),
    ] = None,
    token: Annotated[
        str | None, typer.Option("--token", help="API token (Bearer).", show_default=False)
    ] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", help="Concurrent requests.")] = 16,
    phases: Annotated[
        str,
        typer.Option("--phases", help="Comma-separated (put|get)-(4k|1m|64m); a get needs its put before."),
    ] = "put-4k,get-4k,put-1m,get-1m,put-64m,get-64m",
    count_4k: Annotated[int, typer.Option("--count-4k", help="Objects in the 4k phases.")] = 2000,
    count_1m: Annotated[int, typer.Option("--count-1m", help="Objects in the 1m phases.")] = 200,
    count_64m: Annotated[int, typer.Option("--count-64m", help="Objects in the 64m phases.")] = 8,
    json_file: Annotated[
        Path | None,
        typer.Option("--json", help="Append one JSON line per phase to this file.", show_default=False),
    ] = None,
    fsync: Annotated[
        str, typer.Option("--fsync", help="fsync mode of --local nodes: always, batch or never.")
    ] = "always",
    replicas: Annotated[
        int | None,
        typer.Option("--replicas", help="R of --local nodes (default min(3, N)).", show_default=False),
    ] = None,
    write_quorum: Annotated[
        int | None,
        typer.Option("--write-quorum", help="W of --local nodes (default min(2, R)).", show_default=False),
    ] = None,
    read_quorum: Annotated[
        int | None,
        typer.Option(
            "--read-quorum", help="Replicas each GET consults (?r=; default: the nodes' R-W+1).",
            show_default=False,
        ),
    ] = None,
    read_lease: Annotated[
        float | None,
        typer.Option(
            "--read-lease", help="Read lease of --local nodes (s; 0 = quorum reads).", show_default=False
        ),
    ] = None,
    cache_written: Annotated[
        str | None,
        typer.Option(
            "--cache-written", help="--cache-written of --local nodes: gateway or all.", show_default=False
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir", help="Parent dir of --local node data (default: temp).", show_default=False
        ),
    ] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the --local data dir afterwards.")] = False,
    mem_1g: Annotated[
        bool, typer.Option("--mem-1g", help="1 GiB up+down through one node; check its peak RSS < 150 MiB.")
    ] = False,
) -> None:
    """Measure PUT/GET ops/s, MB/s, p50/p99/max latency and node peak RSS, phase by phase."""
    from p2pstore.bench.runner import (
        BenchError,
        BenchOptions,
        check_options,
        handle_signals,
        parse_phases,
        parse_urls,
        run_bench,
    )

    conn = ctx.find_object(Connection) or Connection()
    try:
        opts = BenchOptions(
            urls=parse_urls(url) if url is not None else [],
            local=local,
            pids=[int(p) for p in pids.split(",") if p.strip()] if pids else [],
            token=token or conn.token or None,
            concurrency=concurrency,
            phases=parse_phases(phases),
            count_4k=count_4k,
            count_1m=count_1m,
            count_64m=count_64m,
            json=json_file,
            fsync=fsync,
            replicas=replicas,
            write_quorum=write_quorum,
            read_quorum=read_quorum,
            read_lease=read_lease,
            cache_written=cache_written,
            data_dir=data_dir,
            keep=keep,
            mem_1g=mem_1g,
        )
        check_options(opts)
    except ValueError as exc:  # a --pids entry that is not a number
        raise CliError(f"--pids: {exc}", 2) from exc
    except BenchError as exc:  # a bad option: usage error, nothing started
        raise CliError(str(exc), 2) from exc
    handle_signals()  # SIGTERM/SIGHUP also stop the local nodes (as KeyboardInterrupt)
    try:
        errors = run_bench(opts)
    except BenchError as exc:  # the set-up failed (local nodes did not start)
        raise CliError(str(exc), 1) from exc
    if errors:
        what = "check failed" if mem_1g else f"{errors} request(s) failed"
        raise CliError(f"bench: {what} (see the figures above)", 1)


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
