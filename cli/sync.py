"""`p2pstore sync SRC DST`: make a folder and a key prefix hold the same files, either way.

The cluster side is written ``p2p:PREFIX`` (``p2p:photos/``; ``p2p:`` alone is every key), the
other side is a local folder. A file is copied when it is missing on the destination or its size
or sha256 differs (the listing gives the cluster side's sha256; the local side is hashed only
when the sizes match). ``--delete`` removes what the source does not have, ``--dry-run`` prints
the plan and changes nothing. Each copy is whole or absent (sha256-checked uploads; downloads
verified, fsynced and renamed in), so an interrupted sync is resumed by running it again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from .blocking import BlockingClient
from .client import key_path
from .common import TokenOption, UrlOption, blocking_for, human_size
from .failures import EXIT_FAILED, BadInput, CliError

REMOTE = "p2p:"


@dataclass
class Plan:
    """What a sync will do: (name, size, path/key) copies, deletions, and the unchanged count."""

    copy: list[tuple[str, int, Any]] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    unchanged: int = 0


def _prefix(raw: str) -> str:
    """``p2p:photos`` -> ``photos/``; ``p2p:`` -> ``""`` (every key)."""
    prefix = raw[len(REMOTE) :]
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


def _same(local: Path, size: int, sha: str, local_size: int) -> tuple[bool, str | None]:
    """Whether a local file matches a remote one (hashing only when the sizes agree)."""
    from .transfer import sha256_file

    if size != local_size:
        return False, None
    digest = sha256_file(local)
    return digest == sha, digest


def plan_upload(client: BlockingClient, folder: Path, prefix: str, delete: bool, jobs: int) -> Plan:
    """Local folder -> cluster prefix."""
    from concurrent.futures import ThreadPoolExecutor

    from .transfer import list_remote, walk

    remote = {r.key: r for r in list_remote(client, prefix)}
    local = walk(folder)
    plan = Plan()

    def check(f: Any) -> tuple[Any, bool, str | None]:
        r = remote.get(prefix + f.rel)
        if r is None:
            return f, False, None
        same, digest = _same(f.path, r.size, r.sha256, f.size)
        return f, same, digest

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for f, same, digest in pool.map(check, local):
            if same:
                plan.unchanged += 1
            else:
                plan.copy.append((f.rel, f.size, (f.path, prefix + f.rel, digest)))
    if delete:
        wanted = {prefix + f.rel for f in local}
        plan.delete = sorted(k for k in remote if k not in wanted)
    return plan


def plan_download(client: BlockingClient, prefix: str, folder: Path, delete: bool, jobs: int) -> Plan:
    """Cluster prefix -> local folder."""
    from concurrent.futures import ThreadPoolExecutor

    from .transfer import list_remote, local_target, walk

    remote = list_remote(client, prefix)
    plan = Plan()

    def check(r: Any) -> tuple[Any, Path, bool]:
        target = local_target(folder, prefix, r.key)
        if not target.is_file():
            return r, target, False
        return r, target, _same(target, r.size, r.sha256, target.stat().st_size)[0]

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for r, target, same in pool.map(check, remote):
            if same:
                plan.unchanged += 1
            else:
                plan.copy.append((r.key[len(prefix) :], r.size, (r.key, target)))
    if delete and folder.is_dir():
        wanted = {r.key[len(prefix) :] for r in remote}
        plan.delete = sorted(f.rel for f in walk(folder) if f.rel not in wanted)
    return plan


def sync(
    ctx: typer.Context,
    src: Annotated[str, typer.Argument(help="Source: a local folder or p2p:PREFIX.")],
    dst: Annotated[str, typer.Argument(help="Destination: p2p:PREFIX or a local folder.")],
    delete: Annotated[
        bool, typer.Option("--delete", help="Remove what the source does not have from the destination.")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would change; change nothing.")] = (
        False
    ),
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Name each file copied or deleted.")] = (
        False
    ),
    jobs: Annotated[int, typer.Option("-j", "--jobs", min=1, max=64, help="Files in flight at once.")] = 8,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Copy only what differs (size + sha256) from SRC to DST; one side is p2p:PREFIX."""
    from .transfer import download, remove_stale_parts, run_parallel, upload

    if src.startswith(REMOTE) == dst.startswith(REMOTE):
        raise BadInput(f"one side must be the cluster, written {REMOTE}PREFIX (sync ./photos p2p:photos/)")
    client = blocking_for(ctx, url, token)
    if dst.startswith(REMOTE):
        folder, prefix = Path(src), _prefix(dst)
        if not folder.is_dir():
            raise BadInput(f"{folder} is not a folder")
        plan = plan_upload(client, folder, prefix, delete, jobs)
        tasks = [
            (name, size, lambda adv, a=args: upload(client, a[0], a[1], adv, sha=a[2]))
            for name, size, args in plan.copy
        ]
        where = f"{folder} -> {REMOTE}{prefix}"
    else:
        prefix, folder = _prefix(src), Path(dst)
        if folder.exists() and not folder.is_dir():
            raise BadInput(f"{folder} is not a folder")
        if not dry_run and folder.is_dir():
            remove_stale_parts(folder)  # what an interrupted download left
        plan = plan_download(client, prefix, folder, delete, jobs)
        tasks = [
            (name, size, lambda adv, a=args: download(client, a[0], a[1], adv))
            for name, size, args in plan.copy
        ]
        where = f"{REMOTE}{prefix} -> {folder}"

    if dry_run:
        for name, size, _ in plan.copy:
            typer.echo(f"would copy {name} ({human_size(size)})")
        for name in plan.delete:
            typer.echo(f"would delete {name}")
        typer.echo(
            f"dry run: {len(plan.copy)} to copy, {plan.unchanged} unchanged, "
            f"{len(plan.delete)} to delete, {where}"
        )
        return

    outcome = run_parallel(jobs, tasks, label="syncing")
    failed = list(outcome.failed or [])
    copied = {name for name, _, _ in tasks} - {name for name, _ in failed}
    if verbose:
        for name in sorted(copied):
            typer.echo(f"copied {name}")
    deleted = 0
    if not failed:  # deleting after a partial copy could leave the destination with less than before
        for name in plan.delete:
            try:
                if dst.startswith(REMOTE):
                    client.json("DELETE", key_path(name))
                else:
                    (folder / name).unlink()
            except (CliError, OSError) as exc:
                why = getattr(exc, "explained", None) or getattr(exc, "message", None) or str(exc)
                failed.append((name, why))
                continue
            deleted += 1
            if verbose:
                typer.echo(f"deleted {name}")
    for name, why in failed:
        typer.echo(f"failed: {name}: {why}", err=True)
    typer.echo(
        f"synced {where}: {outcome.done} copied ({human_size(outcome.nbytes)}), "
        f"{plan.unchanged} unchanged, {deleted} deleted"
    )
    if failed:
        raise CliError(f"{len(failed)} files failed; run the same sync again to finish", EXIT_FAILED)


def register(app: typer.Typer) -> None:
    """Attach `sync` to the root app."""
    app.command("sync")(sync)
