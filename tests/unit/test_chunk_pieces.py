"""A body kept in the pieces it arrived in (no joined copy) is written, hashed and summed
exactly as the same bytes in one buffer."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest

from p2pstore.storage.chunks import (
    ChunkStore,
    body_size,
    pieces_of,
    read_sum,
    sha256_of,
    write_all,
)
from p2pstore.storage.segments import IOV_BATCH


def cut(data: bytes, rng: random.Random, most: int) -> list[bytes | memoryview]:
    """``data`` in pieces of random sizes (some empty, some memoryviews)."""
    pieces: list[bytes | memoryview] = []
    at = 0
    while at < len(data):
        n = rng.randint(0, most)
        piece = data[at : at + n]
        pieces.append(memoryview(piece) if rng.random() < 0.3 else piece)
        at += n
    return pieces


@pytest.mark.parametrize("most", [1, 300, 70_000])  # 1: thousands of pieces, over IOV_BATCH
def test_pieces_write_hash_and_sum_like_one_buffer(tmp_path: Path, most: int) -> None:
    rng = random.Random(most)
    data = rng.randbytes(1024 * 1024 if most > 1 else 3 * IOV_BATCH + 7)
    pieces = cut(data, rng, most)
    assert len(pieces) > 1 and body_size(pieces) == len(data)
    assert sha256_of(pieces) == hashlib.sha256(data).hexdigest()
    assert read_sum(pieces) == read_sum(data)
    path = tmp_path / "f"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        write_all(fd, pieces)
    finally:
        os.close(fd)
    assert path.read_bytes() == data


@pytest.mark.parametrize("cached", [True, False])
def test_a_chunk_written_from_pieces_is_named_and_verified_by_its_bytes(tmp_path: Path, cached: bool) -> None:
    store = ChunkStore(tmp_path)
    data = random.Random(1).randbytes(300_000)
    pieces = cut(data, random.Random(2), 65_536)
    sha = store.write(pieces, cached=cached)
    assert sha == hashlib.sha256(data).hexdigest()
    assert store.read(sha) == (data, read_sum(data))  # verified by sha256, read sum returned
    assert store.write([data[:10], data[10:]], sha) == sha  # stored already: not written again
    assert list(store.tmp_dir.iterdir()) == []


def test_one_buffer_is_one_piece() -> None:
    data = b"abc"
    assert list(pieces_of(data)) == [data] and body_size(data) == 3
    assert list(pieces_of(bytearray(data))) == [bytearray(data)]
    assert body_size([]) == 0 and sha256_of([]) == hashlib.sha256(b"").hexdigest()
