"""--cache-written: which replicas keep the chunks of a write (chunk files, segment records) in
the page cache."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from p2pstore.config import NodeConfig
from p2pstore.core.manifest import ManifestEntry
from p2pstore.launcher import free_port
from p2pstore.node import Node
from p2pstore.server import build_app
from p2pstore.storage.store import LocalStore
from tests.integration.test_staging import in_pieces
from tests.support.chunks import stored_chunks
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
        assert stored_chunks(store.data_dir)[sha].in_segment  # written whole: a segment record
        fractions = [resident_fraction(p) for p in staged] + [chunk_residency(store.data_dir, sha)]
        assert all(f == (1.0 if cached else 0.0) for f in fractions), fractions
        assert await store.read_chunk(sha) == single  # dropped is not lost: read back from disk
    finally:
        store.close()


async def test_repaired_chunks_leave_the_page_cache_once_durable(tmp_path: Path) -> None:
    """Repair never keeps what it wrote cached, whatever was written before it in the segment:
    each record's pages leave the page cache once fsynced (those of a cached record stay)."""
    store = LocalStore(tmp_path / "s", chunk_size=4 * MiB, fsync="always")
    try:
        kept = os.urandom(MiB // 2)
        kept_sha = hashlib.sha256(kept).hexdigest()
        store.write_verified_file(kept, kept_sha, cached=True)  # a gateway's own copy
        repaired = [os.urandom(MiB // 2), os.urandom(MiB), os.urandom(MiB)]
        for data in repaired:
            await store.write_chunk(data, hashlib.sha256(data).hexdigest())
        shas = [hashlib.sha256(d).hexdigest() for d in repaired]
        assert all(stored_chunks(store.data_dir)[sha].in_segment for sha in [kept_sha, *shas])
        assert chunk_residency(store.data_dir, kept_sha) == 1.0
        assert [chunk_residency(store.data_dir, sha) for sha in shas] == [0.0] * 3
        for sha, data in zip(shas, repaired, strict=True):
            assert await store.read_chunk(sha) == data  # dropped is not lost
    finally:
        store.close()


def chunk_residency(data_dir: Path, sha: str) -> float:
    """The share of chunk ``sha``'s pages in the page cache, in its chunk file or its segment."""
    where = stored_chunks(data_dir)[sha]
    return resident_fraction(where.path, where.offset, where.length)


def residencies(node: NodeProcess) -> dict[str, float]:
    """Every chunk ``node`` stores on disk -> the share of its pages in the page cache."""
    return {sha: chunk_residency(node.data_dir, sha) for sha in stored_chunks(node.data_dir)}


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
    wait_for(lambda: all(len(stored_chunks(n.data_dir)) == 4 for n in nodes), 10, message="4 chunks each")
    for i, node in enumerate(nodes):
        homes = sorted(c.in_segment for c in stored_chunks(node.data_dir).values())
        assert homes == [False, False, False, True], homes  # 3 chunk files, 1 segment record
        fractions = residencies(node)
        kept = i == 0 or mode == "all"
        assert all(f == (1.0 if kept else 0.0) for f in fractions.values()), (i, fractions)


async def test_a_read_right_after_a_write_waits_for_the_gateways_own_commit(
    tmp_path: Path, node_factory
) -> None:
    """The gateway acknowledges after W=2 commits; when the two peers commit first, a GET through
    it right away must not fetch every chunk from a peer (whose copy left its page cache): it
    waits the moment its own commit needs and reads its own copy. The gateway runs in this
    process (its own commit held until the write is acknowledged); the peers are real processes.
    (No read leases: a fresh node's grantors count every replica as a holder at first, and writes
    then wait for all.)"""
    secret = f"test-secret-{os.getpid()}"
    cfg = NodeConfig(data_dir=tmp_path / "gateway", host="127.0.0.1", port=free_port(), cluster_secret=secret,
                     chunk_size=MiB, scrub_rate=0, read_lease=0)  # fmt: skip
    node = Node(cfg)
    runner = web.AppRunner(build_app(node))
    await runner.setup()
    await web.TCPSite(runner, cfg.host, cfg.port).start()
    node.start()
    try:
        # Started from a thread: the gateway answers their joins on this loop meanwhile.
        peers = await asyncio.to_thread(
            node_factory, 2, seeds=cfg.advertise_address, cluster_secret=secret, chunk_size=MiB, scrub_rate=0,
            read_lease=0,
        )
        deadline = time.monotonic() + 20
        while len(node.cluster.gossip.live_peers()) < 2:
            assert time.monotonic() < deadline, "the gateway sees both peers"
            await asyncio.sleep(0.05)
        commit = node.cluster.replica.commit
        acknowledged = asyncio.Event()

        async def slow_commit(upload: str | None, entry: ManifestEntry) -> bool:
            # Held until the PUT is answered, not for a fixed time: the peers' commits (fsync on)
            # can take longer than any fixed delay on a loaded machine. A moment more, so the GET
            # below arrives while this commit still runs.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(acknowledged.wait(), 30)
            await asyncio.sleep(0.2)
            return await commit(upload, entry)

        node.cluster.replica.commit = slow_commit  # type: ignore[method-assign]
        local_reads: list[str] = []
        read_chunk = node.store.read_chunk_pieces  # a GET reads a local chunk as pieces

        async def counting_read_chunk(sha: str) -> list[bytes]:
            local_reads.append(sha)
            return await read_chunk(sha)

        node.store.read_chunk_pieces = counting_read_chunk  # type: ignore[method-assign]
        data = os.urandom(3 * MiB)
        async with aiohttp.ClientSession() as s:
            async with s.put(f"{cfg.url}/files/fresh", data=data) as r:
                assert r.status == 201, await r.text()
            assert node.cluster.reads.own_commits, "acknowledged before the gateway's own commit"
            acknowledged.set()
            async with s.get(f"{cfg.url}/files/fresh") as r:
                assert r.status == 200 and await r.read() == data
        assert len(local_reads) == 3, local_reads
        for peer in peers:  # never read: their copies stay out of the page cache
            assert list(residencies(peer).values()) == [0.0] * 3
    finally:
        await node.stop()
        await runner.cleanup()
        node.close()
