"""Deletes stay deleted, garbage goes away, and data moves when a node is gone for long."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import time
import urllib.error
import urllib.request

import aiohttp
import pytest

from p2pstore.core.placement import replicas as place
from p2pstore.storage.chunks import ChunkStore
from tests.support.chunks import stored_chunks
from tests.support.processes import NodeProcess, wait_for

PERIOD = 0.2


def wait_members(nodes: list[NodeProcess]) -> None:
    def ok() -> bool:
        return all(
            [m["state"] for m in n.get_json("/status")["members"]] == ["alive"] * len(nodes) for n in nodes
        )

    wait_for(ok, 30, message="all members alive")


def chunk_count(node: NodeProcess) -> int:
    """Chunks on disk (files and segment records) plus small files' bytes kept in SQLite
    (inline in their rows, or by name)."""
    files = len(stored_chunks(node.data_dir))
    conn = sqlite3.connect(f"file:{node.data_dir / 'meta.sqlite'}?mode=ro", uri=True)
    try:
        small = conn.execute(
            "SELECT (SELECT count(*) FROM small_chunks) + (SELECT count(*) FROM files WHERE data IS NOT NULL)"
        ).fetchone()[0]
    finally:
        conn.close()
    return files + small


@pytest.mark.slow
async def test_deletes_while_replica_down_stay_deleted_and_are_collected(node_factory) -> None:
    nodes = node_factory(3, fsync="never", gossip_interval=PERIOD, tombstone_grace=3)
    wait_members(nodes)
    # half small (stored in SQLite), half large enough for chunk files
    bodies = {
        f"del/{i:03d}": hashlib.sha256(b"%d" % i).digest() * (300 if i % 2 else 3000) for i in range(100)
    }
    async with aiohttp.ClientSession() as s:
        for i, (key, body) in enumerate(bodies.items()):
            async with s.put(f"{nodes[i % 3].url}/files/{key}", data=body) as r:
                assert r.status == 201
    wait_for(lambda: all(chunk_count(n) == 100 for n in nodes), 30, message="100 chunks on every node")
    down = nodes[2]
    down.kill()
    async with aiohttp.ClientSession() as s:
        for key in bodies:
            async with s.delete(f"{nodes[0].url}/files/{key}") as r:
                assert r.status == 200, await r.text()
    down.start()
    down.wait_ready()
    wait_members(nodes)
    async with aiohttp.ClientSession() as s:
        for _ in range(3):  # several rounds of anti-entropy: a deleted file must never reappear
            for key in list(bodies)[::10]:
                for n in nodes:
                    async with s.get(f"{n.url}/files/{key}") as r:
                        assert r.status == 404, (key, n.url)
            await asyncio.sleep(1)
    # after the grace period: tombstones purged by the leader, chunks gone from every disk
    wait_for(lambda: all(chunk_count(n) == 0 for n in nodes), 60, message="chunks collected everywhere")
    wait_for(
        lambda: all(n.get_json("/status")["tombstones"] == 0 for n in nodes), 60, message="tombstones purged"
    )
    for n in nodes:
        assert n.get_json("/files?prefix=del/")["files"] == []


def local_body(node: NodeProcess, key: str) -> bytes | None:
    try:
        with urllib.request.urlopen(f"{node.url}/files/{key}?local=1", timeout=5) as r:
            return r.read()
    except (urllib.error.HTTPError, OSError):
        return None


@pytest.mark.slow
def test_long_dead_node_is_replaced_then_surplus_removed(node_factory) -> None:
    """Small files (inline in SQLite), chunk files, and chunk files two keys share (the same
    bytes under two names, placed apart): once the owners are back, every temporary copy goes,
    except a chunk that a file the node still replicates references too."""
    nodes = node_factory(5, fsync="never", gossip_interval=PERIOD, dead_after=4)
    wait_members(nodes)
    ids = [n.health()["node_id"] for n in nodes]
    by_id = dict(zip(ids, nodes, strict=True))
    victim_id = ids[4]
    bodies = {f"move/{i}": f"move/{i}".encode() * 1000 for i in range(60)}
    for i in range(20):
        big = hashlib.sha256(b"big %d" % i).digest() * 4096  # 128 KiB: a chunk file
        bodies[f"big/{i}"] = big
        bodies[f"twin/{i}"] = big  # the same chunk under another key
    for key, body in bodies.items():
        req = urllib.request.Request(f"{nodes[0].url}/files/{key}", data=body, method="PUT")
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 201
    held = [k for k in bodies if victim_id in place(k, ids, 3)]
    assert any(k.startswith("move/") for k in held) and any(k.startswith("big/") for k in held)
    survivors = [i for i in ids if i != victim_id]
    unique = {k for k in bodies if not k.startswith(("big/", "twin/"))}

    def holders(key: str) -> set[str]:
        return {i for i, n in by_id.items() if n.running and local_body(n, key) == bodies[key]}

    def placed(members: list[str]) -> bool:
        """Every file on its replicas; a file with bytes of its own on no other node."""
        for key in held:
            have, want = holders(key), set(place(key, members, 3))
            if not want <= have or (key in unique and have != want):
                return False
        return True

    wait_for(lambda: all(len(holders(k)) >= 3 for k in held), 30, message="3 copies of each file")
    by_id[victim_id].kill()
    # after dead_after, each file it held is again on 3 live nodes (the next in placement)
    wait_for(lambda: placed(survivors), 60, interval=0.5, message="files re-replicated to 3 live nodes")
    # bring it back: it owns its files again, and the temporary copies are removed
    by_id[victim_id].start()
    by_id[victim_id].wait_ready()
    wait_for(lambda: placed(ids), 60, interval=0.5, message="surplus copies removed, owners confirmed")
    # each file the victim holds had one temporary holder, which handed it off
    assert sum(n.get_json("/status")["repair"]["handed_off_files"] for n in nodes) >= len(held)
    for key, body in bodies.items():  # and nothing any replica needs went with them
        assert all(local_body(by_id[i], key) == body for i in place(key, ids, 3)), key


@pytest.mark.parametrize("home", ["file", "segment"])
async def test_the_first_orphan_scan_waits_while_clients_are_served(node_factory, home: str) -> None:
    """A crash can leave a chunk no entry references (a staged chunk file, or a segment record
    whose delete a crash undid); the walk over every chunk name that finds such chunks pauses
    while clients are served (up to a minute at a time) instead of competing with them, and
    collects it once they pause."""
    node = node_factory(1, fsync="never", gossip_interval=PERIOD, tombstone_grace=1)[0]
    node.terminate()
    orphan = b"left behind by a crash" * 100
    sha = hashlib.sha256(orphan).hexdigest()
    store = ChunkStore(node.data_dir, "never")
    try:
        store.write_file(orphan, sha) if home == "file" else store.write(orphan, sha)
        assert store.touch(sha, time.time() - 3600)  # old enough to collect
    finally:
        store.close()
    assert stored_chunks(node.data_dir)[sha].in_segment == (home == "segment")
    node.start()
    node.wait_ready()
    busy_until = time.monotonic() + 8  # four housekeeping rounds (every 2 s)
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < busy_until:
            async with s.get(f"{node.url}/files/nothing-here") as r:
                assert r.status == 404
            await asyncio.sleep(0.1)
            assert sha in stored_chunks(node.data_dir), "the orphan scan ran while clients were being served"
    wait_for(lambda: sha not in stored_chunks(node.data_dir), 20, message="orphan collected, clients gone")
