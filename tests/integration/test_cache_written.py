"""--cache-written: which replicas keep the chunk files of a write in the page cache."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import aiohttp
import pytest

from p2pstore.storage.store import LocalStore
from tests.integration.test_staging import in_pieces
from tests.support.pagecache import resident_fraction
from tests.support.processes import NodeProcess, wait_for

MiB = 1 << 20


@pytest.mark.parametrize("cached", [True, False])
async def test_a_store_drops_what_it_wrote_from_the_cache_once_durable_when_asked(
    tmp_path: Path, cached: bool
) -> None:
    store = LocalStore(tmp_path / "s", chunk_size=MiB, fsync="always")
    try:
        data = os.urandom(3 * MiB)
        blob = await store.write_stream(in_pieces(data, [100_000]), hashlib.sha256(data).hexdigest(),
                                        cached=cached)  # fmt: skip
        staged = sorted(blob.staging.iterdir())
        assert len(staged) == 3
        single = os.urandom(MiB // 2)
        sha = hashlib.sha256(single).hexdigest()
        store.write_verified_file(single, sha, cached=cached)
        fractions = [resident_fraction(p) for p in [*staged, store.chunks.path(sha)]]
        assert all(f == (1.0 if cached else 0.0) for f in fractions), fractions
        await store.write_chunk(os.urandom(MiB), "0" * 64)  # repair: never kept cached
        assert resident_fraction(store.chunks.path("0" * 64)) == 0.0
        assert await store.read_chunk(sha) == single  # dropped is not lost: read back from disk
    finally:
        store.close()


def chunk_files(node: NodeProcess) -> list[Path]:
    return sorted(p for p in (node.data_dir / "chunks").rglob("*") if p.is_file() and len(p.name) == 64)


@pytest.mark.parametrize("mode", ["gateway", "all"])
async def test_only_the_gateway_keeps_its_copy_cached_by_default(node_factory, mode: str) -> None:
    """A 3 MiB file (staged in 1 MiB chunks) and a 512 KiB one (sent whole) through node 0: its
    copies stay in the page cache, the other replicas' leave it once durable; with
    ``--cache-written all`` every copy stays. (No scrubber: it would read them back in.)"""
    nodes = node_factory(3, fsync="always", chunk_size=MiB, scrub_rate=0, cache_written=mode)
    wait_for(lambda: all(len(n.get_json("/status")["members"]) == 3 for n in nodes), 20,
             message="three members everywhere")  # fmt: skip
    async with aiohttp.ClientSession() as s:
        for key, size in (("big", 3 * MiB), ("whole", MiB // 2)):
            async with s.put(f"{nodes[0].url}/files/{key}", data=os.urandom(size)) as r:
                assert r.status == 201, await r.text()
    wait_for(lambda: all(len(chunk_files(n)) == 4 for n in nodes), 10, message="4 chunk files everywhere")
    for i, node in enumerate(nodes):
        fractions = [resident_fraction(p) for p in chunk_files(node)]
        kept = i == 0 or mode == "all"
        assert all(f == (1.0 if kept else 0.0) for f in fractions), (i, fractions)
