"""Version commands (docs/versions.md): ``versions KEY`` lists a file's versions,
``restore KEY --version V`` makes one current again, ``versioning FOLDER`` shows or sets a
folder's versioning. ``get KEY --version V`` (cli/files.py) downloads one."""

from __future__ import annotations

import time
from typing import Annotated, Any
from urllib.parse import quote

import typer

from .client import ApiError, CliError, key_path
from .common import TokenOption, UrlOption, human_size, print_json, request_json


def version_query(version: str | None) -> str:
    """The query string that names one version of a file (empty: the current one)."""
    return "" if version is None else "?version=" + quote(version, safe="")


def versions(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="Key whose versions to list.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List a file's versions, newest first (the current one marked *)."""
    try:
        rec: dict[str, Any] = request_json(ctx, url, token, "GET", key_path(key) + "?versions=1")
    except ApiError as exc:
        raise CliError(f"no versions of {key}") if exc.status == 404 else exc from exc
    if as_json:
        print_json(rec)
        return
    for v in rec["versions"]:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v["modified"]))
        what = "(delete marker)" if v["delete_marker"] else f"{human_size(v['size']):>9}  {v['sha256'][:16]}"
        typer.echo(f"{'*' if v['latest'] else ' '} {v['version']}  {when}  {what}")


def restore(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="Key to restore.")],
    version: Annotated[str, typer.Option("--version", help="Version id (see `p2pstore versions KEY`).")],
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Make an old version of a file current again (it keeps its version id)."""
    path = "/restore/" + key_path(key).removeprefix("/files/") + version_query(version)
    try:
        rec = request_json(ctx, url, token, "POST", path)
    except ApiError as exc:
        raise CliError(f"no version {version} of {key}") if exc.status == 404 else exc from exc
    typer.echo(f"restored {rec['key']} to version {rec['version']}")


def versioning(
    ctx: typer.Context,
    folder: Annotated[str, typer.Argument(help="Top-level folder (an S3 bucket is one).")],
    enable: Annotated[bool, typer.Option("--enable", help="Keep every overwritten or deleted version.")] = (
        False
    ),
    suspend: Annotated[bool, typer.Option("--suspend", help="Stop keeping new versions.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Show a folder's versioning, or turn it on (--enable) or suspend it (--suspend)."""
    if enable and suspend:
        raise CliError("--enable and --suspend exclude each other")
    path = "/versioning/" + quote(folder, safe="")
    if not (enable or suspend):
        rec = request_json(ctx, url, token, "GET", path)
    else:
        rec = request_json(ctx, url, token, "PUT", path, {"status": "Enabled" if enable else "Suspended"})
    typer.echo(f"{rec['folder']}: versioning {rec['status']}")


def register(app: typer.Typer) -> None:
    for fn in (versions, restore, versioning):
        app.command(fn.__name__)(fn)
