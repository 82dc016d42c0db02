"""`p2pstore recover NODE` (re-sync a node now) and `p2pstore members remove NODE`."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

import typer

from .client import CliError
from .common import TokenOption, UrlOption, print_json, request_json


def recover(
    ctx: typer.Context,
    node: Annotated[str, typer.Argument(help="Node id (or host:port) to re-sync.")],
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Re-sync NODE from live replicas now and report what was copied."""
    report = request_json(ctx, url, token, "POST", f"/recover/{quote(node, safe='')}")
    typer.echo(
        f"{report.get('node_id', node)}: {report.get('files_needing_repair', 0)} files needed data, "
        f"{report.get('files_repaired', 0)} repaired, {report.get('files_failed', 0)} failed, "
        f"{report.get('bytes_copied', 0)} bytes copied in {report.get('seconds', 0)} s"
    )
    if report.get("files_failed"):
        raise CliError(f"recovery of {node} left {report['files_failed']} files incomplete")


members = typer.Typer(help="Manage cluster membership.", no_args_is_help=True, rich_markup_mode=None)


@members.command("list")
def list_members(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON (a list of members).")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List the members as the answering node sees them: id, address, state, leader."""
    st = request_json(ctx, url, token, "GET", "/status")
    rows = st.get("members") or []
    if as_json:
        print_json(rows)
        return
    for m in rows:
        mark = "  (leader)" if m.get("id") == st.get("leader") else ""
        mark += "  (answering)" if m.get("id") == st.get("node_id") else ""
        typer.echo(f"{m.get('id', '-')}  {m.get('address', '-')}  {m.get('state', '-')}{mark}")


@members.command("remove")
def remove(
    ctx: typer.Context,
    node: Annotated[str, typer.Argument(help="Id of a dead member to forget for good.")],
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Forget a dead member (its data is re-replicated after --dead-after anyway)."""
    request_json(ctx, url, token, "DELETE", f"/members/{quote(node, safe='')}")
    typer.echo(f"removed {node}")


def register(app: typer.Typer) -> None:
    app.command("recover")(recover)
    app.add_typer(members, name="members")
