"""Checkpoints: consistent snapshots of the metadata database, and restoring from them.

A checkpoint is written with SQLite's backup API into ``DIR/checkpoints/`` via a temp name,
fsynced and renamed, so a crash mid-checkpoint leaves only the older, complete ones.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

from .chunks import fsync_dir
from .metadata import DatabaseCorrupt, MetadataDB, check_integrity

log = logging.getLogger(__name__)

DB_NAME = "meta.sqlite"
SUFFIX = ".sqlite"


def checkpoint_dir(data_dir: Path) -> Path:
    return data_dir / "checkpoints"


def list_checkpoints(data_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (names sort by time)."""
    folder = checkpoint_dir(data_dir)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.startswith("meta-") and p.suffix == SUFFIX)


def create_checkpoint(db: MetadataDB, data_dir: Path, keep: int = 5) -> dict[str, object]:
    """Snapshot ``db`` durably, prune to the newest ``keep``; return name, size and time."""
    folder = checkpoint_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    now_ns = time.time_ns()  # one reading for both parts: names sort in the order they were made
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now_ns // 1_000_000_000))
    name = f"meta-{stamp}-{now_ns % 1_000_000_000:09d}{SUFFIX}"
    tmp = folder / f".{name}.tmp"
    final = folder / name
    try:
        db.backup_to(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        fsync_dir(folder)
    finally:
        tmp.unlink(missing_ok=True)
    size = final.stat().st_size
    checkpoints = list_checkpoints(data_dir)
    for old in checkpoints[: max(0, len(checkpoints) - keep)]:
        old.unlink(missing_ok=True)
    return {"checkpoint": name, "size": size, "time": now_ns / 1e9}


def restore_checkpoint(data_dir: Path, name: str | None = None) -> str:
    """Replace the node's database with checkpoint ``name`` (newest when None); return its name.

    The node must not be running. The chosen checkpoint is integrity-checked first, so a bad
    one is refused rather than installed.
    """
    checkpoints = list_checkpoints(data_dir)
    if name is not None:
        chosen = checkpoint_dir(data_dir) / name
        if chosen not in checkpoints:
            raise FileNotFoundError(f"no checkpoint named {name!r} in {checkpoint_dir(data_dir)}")
    elif checkpoints:
        chosen = checkpoints[-1]
    else:
        raise FileNotFoundError(f"no checkpoints in {checkpoint_dir(data_dir)}")
    try:
        check_integrity(chosen, immutable=True)
    except DatabaseCorrupt as exc:
        raise ValueError(f"checkpoint {chosen.name} is damaged: {exc}") from exc
    target = data_dir / DB_NAME
    tmp = data_dir / f".{DB_NAME}.restore"
    shutil.copyfile(chosen, tmp)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    for suffix in ("-wal", "-shm"):
        (data_dir / (DB_NAME + suffix)).unlink(missing_ok=True)
    os.replace(tmp, target)
    fsync_dir(data_dir)
    log.warning("restored metadata from checkpoint %s", chosen.name)
    return chosen.name
