"""File commands: put, get, ls, rm, stat (a folder or a prefix goes through cli/transfer.py)."""

from __future__ import annotations

import json
import mimetypes
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from .client import ApiError, CliError, key_path
from .common import (
    TokenOption,
    UrlOption,
    blocking_for,
    human_size,
    out,
    print_json,
    progress,
)
from .failures import EXIT_FAILED, EXIT_NOT_FOUND, BadInput
from .versions import version_query

JobsOption = Annotated[
    int, typer.Option("-j", "--jobs", min=1, max=64, help="Files in flight at once (folders, prefixes).")
]


def _not_found(exc: ApiError, key: str) -> CliError:
    """404 on a file path always means the key is absent; say so in the user's terms."""
    return CliError(f"key not found: {key}", EXIT_NOT_FOUND) if exc.status == 404 else exc






def _print_record(rec: dict[str, Any]) -> None:
    """Key/value lines, stable and grep-friendly."""
    width = max(len(k) for k in rec) if rec else 0
    for name, value in rec.items():
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value) or "-"
        elif value is None or value == "":
            value = "-"
        out.print(f"{name + ':':<{width + 1}} {value}", markup=False)


def put(
    ctx: typer.Context,
    file: Annotated[
        Path, typer.Argument(exists=True, readable=True, help="File to upload, or a folder (all its files).")
    ],
    key: Annotated[
        str | None,
        typer.Argument(help="Key to store it under (default: the file name); for a folder, the key prefix."),
    ] = None,
    content_type: Annotated[
        str | None, typer.Option("--content-type", help="MIME type (default: guessed).")
    ] = None,
    w: Annotated[
        int | None,
        typer.Option("-w", "--w", min=1, help="Write quorum: replicas to confirm before success."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the node's JSON answer.")] = False,
    jobs: JobsOption = 8,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Upload a file, or a folder to KEY/ (streamed, sha256-verified by the node)."""
    if file.is_dir():
        _put_folder(ctx, file, key, jobs, url, token)
        return
    key = key or file.name
    if key.endswith("/"):
        key += file.name
    size = file.stat().st_size
    ctype = content_type or mimetypes.guess_type(file.name)[0] or "application/octet-stream"
    from .transfer import upload

    client = blocking_for(ctx, url, token)
    with progress() as bar:
        task = bar.add_task(f"uploading {key}", total=size) if bar else None

        def advance(n: int) -> None:
            if bar is not None and task is not None:
                bar.advance(task, n)

        try:
            rec = upload(client, file, key, advance, content_type=ctype, w=w)
        except ApiError as exc:
            raise CliError(f"upload of {key} failed: {exc.explained}", exc.exit_code) from exc
    if as_json:
        print_json(rec)
        return
    _print_record(
        {
            "key": rec.get("key", key),
            "size": rec.get("size", size),
            "sha256": rec.get("sha256"),
            "version": rec.get("version"),
            "replicas": _all_replicas(ctx, url, token, key, rec.get("replicas") or []),
        }
    )


def _all_replicas(ctx: typer.Context, url: str | None, token: str | None, key: str, acked: list[str]) -> str:
    """Every replica of ``key``: those that acknowledged, and the others (still copying)."""
    try:
        params = {"prefix": key, "limit": 1, "long": 1}
        page = blocking_for(ctx, url, token).json("GET", "/files", params=params)
        entry = next((f for f in page.get("files", []) if f.get("key") == key), {})
        placed = [r.get("node") for r in entry.get("replicas") or [] if isinstance(r, dict)]
    except CliError:
        placed = []
    rest = [n for n in placed if n not in acked]
    return ", ".join([*acked, *(f"{n} (copying)" for n in rest)]) or "-"


def _put_folder(
    ctx: typer.Context, folder: Path, prefix: str | None, jobs: int, url: str | None, token: str | None
) -> None:
    """Upload every file under ``folder`` as ``prefix + relative path``, ``jobs`` at a time."""
    from .transfer import run_parallel, upload, walk

    prefix = prefix if prefix is not None else folder.resolve().name + "/"
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    files = walk(folder)
    client = blocking_for(ctx, url, token)
    tasks = [
        (f.rel, f.size, lambda adv, f=f: upload(client, f.path, prefix + f.rel, adv)) for f in files
    ]
    outcome = run_parallel(jobs, tasks, label="uploading")
    _report_batch("uploaded", outcome, len(files), f"{folder} -> {prefix or '(root)'}")


def _report_batch(verb: str, outcome: Any, total: int, where: str) -> None:
    """One summary line; each failed file on its own line, then a non-zero exit."""
    failed = outcome.failed or []
    for name, why in failed:
        typer.echo(f"failed: {name}: {why}", err=True)
    typer.echo(f"{verb} {outcome.done} of {total} files ({human_size(outcome.nbytes)}), {where}")
    if failed:
        raise CliError(f"{len(failed)} of {total} files failed", EXIT_FAILED)


def _etag_sha(resp_etag: str | None) -> str | None:
    if not resp_etag:
        return None
    tag = resp_etag.strip()
    if tag.startswith("W/"):
        tag = tag[2:]
    return tag.strip('"').lower() or None




def get(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="Key to download; a prefix ending in '/': all keys under it.")],
    dest: Annotated[
        str | None, typer.Argument(help="Where to write (like -o); for a prefix, a folder.")
    ] = None,
    output: Annotated[
        str | None,
        typer.Option("-o", "--output", help="Write here (a file or directory); '-' is stdout."),
    ] = None,
    version: Annotated[
        str | None, typer.Option("--version", help="An older version (see `p2pstore versions KEY`).")
    ] = None,
    jobs: JobsOption = 8,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Download a file (or every key under PREFIX/); verified against its sha256 before it appears."""
    if dest is not None and output is not None:
        raise BadInput("give the destination once: as an argument or with -o")
    output = output if output is not None else dest
    query = version_query(version)
    if key.endswith("/") or key == "":
        if version is not None:
            raise BadInput("--version names one version of one file, not of a prefix")
        _get_prefix(ctx, key, Path(output or "."), jobs, url, token)
        return
    from .transfer import download, stream_to

    client = blocking_for(ctx, url, token)
    try:
        if output in (None, "-"):
            stream_to(client, key, sys.stdout.buffer, query)
            return
        target = Path(output)
        if target.is_dir():
            target = target / key.rsplit("/", 1)[-1]
        with progress() as bar:
            task = bar.add_task(f"downloading {key}", total=None) if bar else None

            def advance(n: int) -> None:
                if bar is not None and task is not None:
                    bar.advance(task, n)

            def sized(total: int) -> None:
                if bar is not None and task is not None:
                    bar.update(task, total=total)

            size, sha = download(client, key, target, advance, sized, query)
    except ApiError as exc:
        raise _not_found(exc, key) from exc
    typer.echo(f"{key} -> {target} ({human_size(size)}, sha256 {sha})", err=True)


def _get_prefix(
    ctx: typer.Context, prefix: str, folder: Path, jobs: int, url: str | None, token: str | None
) -> None:
    """Download every key under ``prefix`` into ``folder`` (key minus prefix = relative path)."""
    from .transfer import download, list_remote, local_target, run_parallel

    if folder.exists() and not folder.is_dir():
        raise BadInput(f"{folder} is not a folder")
    client = blocking_for(ctx, url, token)
    remote = list_remote(client, prefix)
    tasks = []
    for r in remote:
        target = local_target(folder, prefix, r.key)
        tasks.append((r.key, r.size, lambda adv, r=r, t=target: download(client, r.key, t, adv)))
    outcome = run_parallel(jobs, tasks, label="downloading")
    _report_batch("downloaded", outcome, len(remote), f"{prefix or '(all keys)'} -> {folder}")


def ls(
    ctx: typer.Context,
    prefix: Annotated[str, typer.Argument(help="Only keys starting with this.")] = "",
    long: Annotated[
        bool, typer.Option("-l", "--long", help="Size, version, modified time, replicas.")
    ] = False,
    limit: Annotated[
        int, typer.Option("--limit", min=1, help="Keys fetched per request (page size).")
    ] = 1000,
    max_keys: Annotated[int | None, typer.Option("--max", min=1, help="Stop after this many keys.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List keys, paging through the whole listing."""
    client = blocking_for(ctx, url, token)
    count = 0
    after: str | None = None
    while True:
        params: dict[str, Any] = {"prefix": prefix, "limit": limit, "after": after}
        if long:
            params["long"] = 1
        page = client.json("GET", "/files", params=params)
        for entry in page.get("files", []):
            _print_entry(entry, long, as_json)
            count += 1
            if max_keys is not None and count >= max_keys:
                return
        after = page.get("next")
        if not after or not page.get("files"):
            return


def _iso_time(value: Any) -> str:
    """Epoch seconds as UTC ISO time (2024-04-02T10:11:12Z); other values as they are."""
    if isinstance(value, int | float):
        import time

        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(value))
    return str(value) if value else "-"


def _print_entry(entry: dict[str, Any], long: bool, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(entry, sort_keys=True))
    elif not long:
        typer.echo(entry.get("key", ""))
    else:
        replicas = entry.get("replicas")
        rep = ""
        if isinstance(replicas, list):
            marks = [
                f"{r.get('node')}{'' if r.get('verified') else '?'}" if isinstance(r, dict) else str(r)
                for r in replicas
            ]
            rep = "  [" + ",".join(marks) + "]"
        sha = str(entry.get("sha256") or "")[:12]
        typer.echo(
            f"{entry.get('size', 0):>12}  {_iso_time(entry.get('modified')):<20}  "
            f"{entry.get('version') or '-':<20}  {sha:<12}  {entry.get('key', '')}{rep}"
        )


def rm(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="Key to delete.")],
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Delete a file (a versioned tombstone, replicated like a write)."""
    try:
        rec = blocking_for(ctx, url, token).json("DELETE", key_path(key))
    except ApiError as exc:
        raise _not_found(exc, key) from exc
    typer.echo(f"deleted {rec.get('key', key)} (version {rec.get('version', '-')})")


def stat(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="Key to describe.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Show a file's size, sha256, version and type without downloading it."""
    try:
        with blocking_for(ctx, url, token).open("HEAD", key_path(key)) as resp:
            h = resp.headers
    except ApiError as exc:
        raise _not_found(exc, key) from exc
    length = h.get("Content-Length")
    rec = {
        "key": key,
        "size": int(length) if length and length.isdigit() else length,
        "sha256": _etag_sha(h.get("ETag")),
        "version": h.get("X-P2PStore-Version"),
        "content_type": h.get("Content-Type"),
        "modified": h.get("Last-Modified"),
    }
    if as_json:
        print_json(rec)
    else:
        _print_record(rec)


def register(app: typer.Typer) -> None:
    """Attach the file commands to the root app."""
    for fn in (put, get, ls, rm, stat):
        app.command(fn.__name__)(fn)
