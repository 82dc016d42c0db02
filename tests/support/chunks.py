"""Where a node keeps its chunks on disk, seen from outside the node (tests that rot or count them).

A chunk is either a file of its own (``chunks/ab/<sha>``: staged piece by piece for a large
upload) or a record in a segment file (``segments/<id>.seg``, indexed in
``segments/index.sqlite3``: everything written whole). The index is opened read-only, so these
helpers work on a running node as well as a stopped one; a chunk in both homes is read from its
file (as ``ChunkStore`` does), so that is the copy reported here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from p2pstore.storage.segments import INDEX_NAME

SHA_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class StoredChunk:
    """A chunk's bytes: ``length`` bytes at ``offset`` of ``path`` (a chunk file: offset 0)."""

    path: Path
    offset: int
    length: int

    @property
    def in_segment(self) -> bool:
        return self.path.suffix == ".seg"


def chunk_files(data_dir: Path) -> dict[str, Path]:
    """Chunk files (``chunks/ab/<sha>``) by sha."""
    found: dict[str, Path] = {}
    for path in (Path(data_dir) / "chunks").glob("*/*"):
        if len(path.name) == 64 and set(path.name) <= SHA_HEX and path.is_file():
            found[path.name] = path
    return found


def segment_records(data_dir: Path) -> dict[str, StoredChunk]:
    """Indexed segment records by sha (none when the node never wrote a segment)."""
    folder = Path(data_dir) / "segments"
    index = folder / INDEX_NAME
    if not index.exists():
        return {}
    con = sqlite3.connect(f"file:{index}?mode=ro", uri=True, timeout=10.0)
    try:
        rows = con.execute("SELECT sha, segment, offset, length FROM records").fetchall()
    finally:
        con.close()
    return {sha: StoredChunk(folder / f"{seg:08d}.seg", off, length) for sha, seg, off, length in rows}


def stored_chunks(data_dir: Path) -> dict[str, StoredChunk]:
    """Every chunk the node holds on disk (files and segment records), by sha."""
    found = segment_records(data_dir)
    for sha, path in chunk_files(data_dir).items():
        with contextlib.suppress(FileNotFoundError):  # deleted while we looked
            found[sha] = StoredChunk(path, 0, path.stat().st_size)
    return found


def locate(data_dir: Path, sha: str) -> StoredChunk:
    """Where chunk ``sha`` is; fails the test when the node does not hold it."""
    found = stored_chunks(data_dir).get(sha)
    assert found is not None, f"chunk {sha[:12]} is not stored in {data_dir}"
    return found


def read_chunk(data_dir: Path, sha: str) -> bytes:
    """The bytes of chunk ``sha`` as they are on disk (not verified)."""
    where = locate(data_dir, sha)
    with open(where.path, "rb") as fh:
        fh.seek(where.offset)
        return fh.read(where.length)


def overwrite_chunk(data_dir: Path, sha: str, data: bytes) -> StoredChunk:
    """Replace the on-disk bytes of chunk ``sha`` in place with ``data`` (same length), behind
    the node's back: the node's index still names ``sha`` (silent rot, or a planted bad copy)."""
    where = locate(data_dir, sha)
    assert len(data) == where.length, f"chunk {sha[:12]} holds {where.length} bytes, not {len(data)}"
    fd = os.open(where.path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, where.offset)
        os.fsync(fd)
    finally:
        os.close(fd)
    return where


def flip_byte(data_dir: Path, sha: str, at: int = 0, mask: int = 0xFF) -> StoredChunk:
    """XOR the byte at ``at`` of chunk ``sha`` on disk with ``mask`` (never a no-op)."""
    if not 0 < mask < 256:
        raise ValueError(f"mask must be a non-zero byte, not {mask!r}")
    where = locate(data_dir, sha)
    assert 0 <= at < where.length, f"chunk {sha[:12]} has no byte {at}"
    fd = os.open(where.path, os.O_RDWR)
    try:
        byte = os.pread(fd, 1, where.offset + at)
        os.pwrite(fd, bytes([byte[0] ^ mask]), where.offset + at)
        os.fsync(fd)
    finally:
        os.close(fd)
    return where


def wipe_chunks(data_dir: Path) -> int:
    """Delete every chunk on a stopped node's disk (chunk files, segment files and their
    index), as a lost disk would; the metadata stays. Returns how many chunks were there."""
    lost = len(stored_chunks(data_dir))
    for path in chunk_files(data_dir).values():
        path.unlink()
    shutil.rmtree(Path(data_dir) / "segments", ignore_errors=True)
    return lost
