"""Shared plumbing for CLI commands: connection options, asyncio runner, progress bars."""

from __future__ import annotations

import json
import sys
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .blocking import BlockingClient
from .client import parse_urls

if TYPE_CHECKING:  # rich and asyncio are imported when used: start-up time is a feature
    from rich.console import Console
    from rich.progress import Progress



class _LazyConsole:
    """A rich Console made on first use, so commands that print plain lines never import rich."""

    def __init__(self, stderr: bool) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    def real(self) -> Console:
        """The Console itself (for rich objects that take one, such as a Progress)."""
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=self._stderr, highlight=False, soft_wrap=True)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real(), name)


out: Any = _LazyConsole(stderr=False)
err: Any = _LazyConsole(stderr=True)


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




def blocking_for(ctx: typer.Context, url: str | None, token: str | None) -> BlockingClient:
    """The standard-library failover client (quick commands, parallel transfers)."""
    conn = ctx.find_object(Connection) or Connection()
    return BlockingClient(parse_urls(url or conn.url), token or conn.token or None)


def request_json(
    ctx: typer.Context, url: str | None, token: str | None, method: str, path: str, body: Any = None
) -> Any:
    """One JSON request through the failover client: the body of most admin commands."""
    client = blocking_for(ctx, url, token)
    try:
        if body is None:
            return client.json(method, path)
        payload = json.dumps(body).encode()
        return client.json(method, path, headers={"Content-Type": "application/json"}, body=lambda: payload)
    finally:
        client.close()


def print_json(data: Any) -> None:
    """JSON for scripts: indented, keys sorted, plain (no colours)."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def progress(enabled: bool | None = None) -> AbstractContextManager[Progress | None]:
    """A transfer progress bar on stderr, only when stderr is a terminal (never in pipes/CI)."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return nullcontext(None)
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err.real(),
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
