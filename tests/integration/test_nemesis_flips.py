"""The chaos nemesis rots each kind of stored chunk on a real node: a chunk file, a chunk's
record in a segment file, a small chunk kept in SQLite. Each flip hits the one chunk of its
kind, and the node refuses to serve it."""

from __future__ import annotations

import hashlib
import random

import aiohttp
import pytest

from p2pstore.chaos.nemesis import Nemesis
from tests.support.chunks import read_chunk, stored_chunks
from tests.support.processes import NodeProcess


async def streamed(body: bytes):
    yield body


async def test_flip_bytes_rots_files_segment_records_and_small_chunks(node_factory) -> None:
    (node,) = node_factory(1, fsync="never", scrub_rate=0)
    bodies = {
        "db": b"kept in its row " * 500,  # 8 KiB: inline in SQLite
        "segment": random.Random(1).randbytes(200_000),  # whole, with its length: a segment record
        "file": random.Random(2).randbytes(200_000),  # streamed: staged as a chunk file
    }
    async with aiohttp.ClientSession() as s:
        for key, body in bodies.items():
            data = streamed(body) if key == "file" else body
            async with s.put(f"{node.url}/files/{key}", data=data) as r:
                assert r.status == 201, await r.text()
    shas = {key: hashlib.sha256(body).hexdigest() for key, body in bodies.items()}
    homes = {sha: c.in_segment for sha, c in stored_chunks(node.data_dir).items()}
    assert homes == {shas["segment"]: True, shas["file"]: False}

    nemesis = Nemesis([node])
    with pytest.raises(ValueError, match="where must be"):
        nemesis.flip_bytes(node, where="disk")
    rng = random.Random(7)
    async with aiohttp.ClientSession() as s:
        for kind in ("file", "segment", "db"):
            done = nemesis.flip_bytes(node, rng, where=kind)
            assert done is not None and done.startswith(f"{kind} {shas[kind][:12]}@"), done
            if kind != "db":
                assert hashlib.sha256(read_chunk(node.data_dir, shas[kind])).hexdigest() != shas[kind]
            async with s.get(f"{node.url}/files/{kind}") as r:  # the only copy: refused
                assert r.status >= 500 and "error" in await r.json(), kind
    assert [e.action for e in nemesis.events] == ["flip_bytes"] * 3
    assert node.get_json("/status")["storage"]["corrupt_chunks_found"] == 3


def test_flip_bytes_finds_nothing_on_an_empty_node(node: NodeProcess) -> None:
    assert Nemesis([node]).flip_bytes(node, random.Random(1)) is None
