"""`p2pstore bench`: PUT/GET throughput and latency against running nodes or local throw-away ones.

The runner is p2pstore/bench/runner.py (``benchmarks/bench_http.py`` runs this same command), so
a deployed cluster can be measured with nothing but the installed command. It uses its own
``--url``: without ``--url`` or ``--local`` it starts one local node rather than loading a cluster
by accident. Its options are the fields of ``BenchOptions`` (p2pstore/bench/options.py), each
with its flag in its metadata: the command's parameters are built from them.
"""

from __future__ import annotations

import inspect
import typing
from typing import Annotated, Any

import typer

from p2pstore.bench.options import BenchError, BenchOptions, flag_name, flags, options_from_flags

from .client import CliError
from .common import Connection


def bench(ctx: typer.Context, **values: Any) -> None:
    """Measure PUT/GET ops/s, MB/s, p50/p99/max latency and node peak RSS, phase by phase."""
    from p2pstore.bench.runner import handle_signals, run_bench  # its imports cost start-up time

    conn = ctx.find_object(Connection) or Connection()
    values["token"] = values.get("token") or conn.token or None
    try:
        opts = options_from_flags(values)
    except BenchError as exc:  # a bad option: usage error, nothing started
        raise CliError(str(exc), 2) from exc
    handle_signals()  # SIGTERM/SIGHUP also stop the local nodes (as KeyboardInterrupt)
    try:
        errors = run_bench(opts)
    except BenchError as exc:  # the set-up failed (local nodes did not start)
        raise CliError(str(exc), 1) from exc
    if errors:
        what = "check failed" if opts.mem_1g else f"{errors} request(s) failed"
        raise CliError(f"bench: {what} (see the figures above)", 1)


def _signature() -> inspect.Signature:
    """``bench``'s parameters as typer reads them: ``ctx``, then one option per BenchOptions flag
    (a field that parses text is a text option; a default of None is not shown)."""
    hints = typing.get_type_hints(BenchOptions)
    params = [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)]
    for f, flag in flags():
        if flag.parse is not None:
            kind: Any = str if flag.text_default is not None else str | None
            default: Any = flag.text_default
        else:
            kind, default = hints[f.name], f.default
        option = typer.Option(flag_name(f, flag), help=flag.help, metavar=flag.metavar,
                              show_default=default is not None)  # fmt: skip
        params.append(
            inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[kind, option]
            )
        )
    return inspect.Signature(params, return_annotation=None)


bench.__signature__ = _signature()  # type: ignore[attr-defined]


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
