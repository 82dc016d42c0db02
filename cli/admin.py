"""Cluster-wide commands: status, checkpoint."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from .client import CliError
from .common import TokenOption, UrlOption, human_size, out, print_json, request_json


def _ago(ts: Any) -> str:
    """A member's last_seen (epoch seconds) as "3.2s ago"; other values shown as they are."""
    if ts is None or ts == "":
        return "-"
    if isinstance(ts, int | float):
        delta = time.time() - float(ts)
        if delta < 0:
            return "now"
        return f"{delta:.1f}s ago" if delta < 120 else f"{delta / 60:.0f}m ago"
    return str(ts)


def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw /status JSON.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Show the node's state and its view of cluster membership."""
    st = request_json(ctx, url, token, "GET", "/status")
    if as_json:
        print_json(st)
        return
    disk = st.get("disk") or {}
    out.print(f"node:     {st.get('node_id', '-')} ({st.get('address', '-')})", markup=False)
    out.print(f"version:  {st.get('version', '-')}", markup=False)
    out.print(
        f"files:    {st.get('files', '-')}  ({human_size(st.get('bytes'))} in "
        f"{st.get('chunks', '-')} chunks)",
        markup=False,
    )
    if disk:
        out.print(
            f"disk:     {human_size(disk.get('free'))} free of {human_size(disk.get('total'))}",
            markup=False,
        )
    if "leader" in st or "term" in st:
        leader = st.get("leader") or "no leader"
        out.print(f"leader:   {leader} (term {st.get('term', '-')})", markup=False)
    members = st.get("members")
    if members:
        from rich.table import Table

        table = Table(title="members", title_justify="left")
        for col in ("id", "address", "state", "incarnation", "last seen"):
            table.add_column(col)
        for m in members:
            table.add_row(
                str(m.get("id", "-")),
                str(m.get("address", "-")),
                str(m.get("state", "-")),
                str(m.get("incarnation", "-")),
                "this node (answering)" if m.get("id") == st.get("node_id") else _ago(m.get("last_seen")),
            )
        out.print(table)


def checkpoint(
    ctx: typer.Context,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Ask every node to save a checkpoint now; exits 1 if any node failed."""
    results = request_json(ctx, url, token, "POST", "/checkpoint").get("results", [])
    failed = 0
    for r in results:
        if r.get("ok"):
            typer.echo(f"{r.get('node_id', '?')}: ok {r.get('checkpoint') or ''}".rstrip())
        else:
            failed += 1
            typer.echo(f"{r.get('node_id', '?')}: FAILED {r.get('error') or 'unknown error'}")
    if not results:
        raise CliError("checkpoint: the node returned no results")
    if failed:
        raise CliError(f"checkpoint failed on {failed} of {len(results)} nodes")


def register(app: typer.Typer) -> None:
    """Attach the admin commands to the root app."""
    app.command("status")(status)
    app.command("checkpoint")(checkpoint)
