"""Shared plumbing for CLI commands: connection options, asyncio runner, progress bars."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from .client import Client, parse_urls

T = TypeVar("T")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


@dataclass
class Connection:
    """What the root callback learned about where to send requests."""

    url: str | None = None
    token: str | None = None


# Per-command copies of the root options, so both `p2pstore --url X put f` and
# `p2pstore put f --url X` work; the per-command value wins.
UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="Node URL(s), comma-separated; the next one is tried when a node is unreachable.",
        show_default=False,
    ),
]
TokenOption = Annotated[str | None, typer.Option("--token", help="API token (Bearer).", show_default=False)]


def client_for(ctx: typer.Context, url: str | None, token: str | None) -> Client:
    """Build a failover client from per-command options, falling back to the root ones."""
    conn = ctx.find_object(Connection) or Connection()
    return Client(parse_urls(url or conn.url), token or conn.token or None)


def request_json(ctx: typer.Context, url: str | None, token: str | None, method: str, path: str) -> Any:
    """One JSON request through the failover client: the body of most admin commands."""
    client = client_for(ctx, url, token)

    async def go() -> Any:
        async with client:
            return await client.json(method, path)

    return run(go())


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one command's coroutine; each CLI invocation gets a fresh event loop."""
    return asyncio.run(coro)


def progress(enabled: bool | None = None) -> AbstractContextManager[Progress | None]:
    """A transfer progress bar on stderr, only when stderr is a terminal (never in pipes/CI)."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return nullcontext(None)
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )


def human_size(n: int | float | None) -> str:
    """Bytes as a short binary-unit string (1.5 MiB)."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} PiB"
