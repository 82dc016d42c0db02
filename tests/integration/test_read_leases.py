"""Read leases on real nodes: replicas answer GETs from their own copy while they hold leases,
and a replica that misses a write loses its leases before that write is acknowledged, so it
never serves the older version afterwards."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import msgpack

from tests.support.http import peer_headers
from tests.support.processes import NodeProcess, metric, start_nodes, wait_for
from tests.support.rot import rotted

MiB = 1 << 20


def leases(node: NodeProcess) -> dict:
    return node.get_json("/status")["read_leases"]


def local_copy(node: NodeProcess, key: str) -> bytes | None:
    """What the node itself holds for ``key`` (``?local=1``: no other replica asked)."""
    try:
        with urllib.request.urlopen(f"{node.url}/files/{key}?local=1", timeout=5) as r:
            return r.read()
    except urllib.error.HTTPError:
        return None


def read_missing(node: NodeProcess) -> None:
    """A GET through ``node``: a node asks for leases only while it serves reads."""
    try:
        urllib.request.urlopen(f"{node.url}/files/no-such-file", timeout=5).close()
    except urllib.error.HTTPError as exc:
        assert exc.code == 404
        exc.close()


def holds_all(nodes: list[NodeProcess]) -> bool:
    """Every node sees the others alive and reads under leases from them (it is asked to read,
    which starts its renewals)."""
    for n in nodes:
        read_missing(n)
        status = n.get_json("/status")
        if [m["state"] for m in status["members"]] != ["alive"] * len(nodes):
            return False
        if len(status["read_leases"]["held_from"]) != len(nodes) - 1:
            return False
    return True


async def test_replicas_answer_reads_locally_under_their_leases(tmp_path: Path) -> None:
    nodes = start_nodes(tmp_path, 3, fsync="never")
    try:
        wait_for(lambda: holds_all(nodes), 30, message="every node holds leases from the other two")
        async with aiohttp.ClientSession() as s:
            async with s.put(f"{nodes[0].url}/files/k", data=b"version one") as r:
                assert r.status == 201
            before = [leases(n)["lease_reads"] for n in nodes]
            for n in nodes:
                for _ in range(5):
                    async with s.get(f"{n.url}/files/k") as r:
                        assert r.status == 200 and await r.read() == b"version one"
            after = [leases(n)["lease_reads"] for n in nodes]
            assert [a - b for a, b in zip(after, before, strict=True)] == [5, 5, 5]
            assert metric(nodes[0], "p2pstore_lease_reads_total") == after[0]
            assert metric(nodes[0], "p2pstore_read_leases_held") == 2
            # an explicit read quorum still asks the others
            async with s.get(f"{nodes[1].url}/files/k", params={"r": "2"}) as r:
                assert r.status == 200 and await r.read() == b"version one"
            assert leases(nodes[1])["lease_reads"] == after[1]
            # a write through any node is read back at once through every other
            for i, n in enumerate(nodes):
                async with s.put(f"{n.url}/files/k", data=f"version {i + 2}".encode()) as r:
                    assert r.status == 201
                for m in nodes:
                    async with s.get(f"{m.url}/files/k") as r:
                        assert await r.read() == f"version {i + 2}".encode()
    finally:
        for n in nodes:
            n.terminate()


async def big_body(total: int) -> AsyncIterator[bytes]:
    for _ in range(total // MiB):
        yield os.urandom(MiB)


async def test_a_replica_that_misses_a_write_loses_its_lease_before_the_write_is_acknowledged(
    tmp_path: Path,
) -> None:
    """node0 refuses uploads over 4 MiB (its own --max-upload-bytes) but is otherwise healthy and
    keeps renewing its leases: a small file reaches all three replicas, a 10 MiB version only
    the other two (W=2). node0 read the small file under its leases; once the big version is
    acknowledged it must answer with that (its leases were revoked and had run out), never with
    its own older copy."""
    nodes = start_nodes(tmp_path, 3, fsync="never", read_lease=1.0)
    try:
        full = nodes[0]
        full.args = [*full.args, "--max-upload-bytes", str(4 * MiB)]
        full.restart()
        wait_for(lambda: holds_all(nodes), 30, message="every node holds leases from the other two")
        async with aiohttp.ClientSession() as s:
            async with s.put(f"{nodes[1].url}/files/f", data=b"small version") as r:
                assert r.status == 201
            wait_for(lambda: local_copy(full, "f") == b"small version", 10, message="node0 has its copy")
            reads = leases(full)["lease_reads"]
            async with s.get(f"{full.url}/files/f") as r:
                assert await r.read() == b"small version"
            assert leases(full)["lease_reads"] == reads + 1, "node0 read its own copy under leases"
            started = time.monotonic()
            async with s.put(f"{nodes[1].url}/files/f", data=big_body(10 * MiB),
                             headers={"Content-Length": str(10 * MiB)}) as r:  # fmt: skip
                answer = await r.json()
                assert r.status == 201, answer
            took = time.monotonic() - started
            assert full.health()["node_id"] not in answer["replicas"]
            async with s.get(f"{full.url}/files/f") as r:
                assert r.status == 200
                assert r.headers["X-P2PStore-Version"] == answer["version"]
                assert len(await r.read()) == 10 * MiB
        assert leases(nodes[1])["writes_waited"] >= 1
        assert sum(leases(n)["revoked_here"] for n in nodes[1:]) >= 1
        assert took < 30, f"the write waited {took:.1f} s for a lease to run out"
    finally:
        for n in nodes:
            n.terminate()


async def test_a_hung_leaseholder_delays_writes_by_its_lease_only(tmp_path: Path) -> None:
    """SIGSTOP one replica: writes through the others wait for its lease to run out (a second
    here, twice at most), then go on at W=2; resumed, it reads the newest version."""
    nodes = start_nodes(tmp_path, 3, fsync="never", read_lease=1.0)
    try:
        wait_for(lambda: holds_all(nodes), 30, message="every node holds leases from the other two")
        hung = nodes[2]
        async with aiohttp.ClientSession() as s:
            async with s.put(f"{nodes[0].url}/files/h", data=b"before") as r:
                assert r.status == 201
            hung.pause()
            try:
                for i in range(3):
                    started = time.monotonic()
                    async with s.put(f"{nodes[i % 2].url}/files/h", data=f"during {i}".encode()) as r:
                        assert r.status == 201, await r.text()
                    assert time.monotonic() - started < 10
            finally:
                hung.resume()
            async with s.get(f"{hung.url}/files/h") as r:
                assert r.status == 200 and await r.read() == b"during 2"
    finally:
        for n in nodes:
            n.terminate()


async def test_a_small_file_read_with_its_entry_is_still_verified(tmp_path: Path) -> None:
    """A lease read of a small file takes its bytes from the same query as its entry: a byte
    flipped in the replica's database row is caught, the bytes come from another replica, and
    the bad row is counted and replaced."""
    nodes = start_nodes(tmp_path, 3, fsync="never")
    try:
        wait_for(lambda: holds_all(nodes), 30, message="every node holds leases from the other two")
        data = os.urandom(4096)
        victim = nodes[2]
        async with aiohttp.ClientSession() as s:
            async with s.put(f"{nodes[0].url}/files/small", data=data) as r:
                assert r.status == 201
            wait_for(lambda: local_copy(victim, "small") == data, 10, message="the victim has its copy")
            with sqlite3.connect(victim.data_dir / "meta.sqlite", timeout=10) as db:
                flipped = db.execute("UPDATE files SET data = ? WHERE key = 'small'", (rotted(data),))
                assert flipped.rowcount == 1  # a small file's bytes live in its row
            reads = leases(victim)["lease_reads"]
            async with s.get(f"{victim.url}/files/small") as r:
                assert r.status == 200 and await r.read() == data
            assert leases(victim)["lease_reads"] == reads + 1
        assert victim.get_json("/status")["storage"]["corrupt_chunks_found"] >= 1
        wait_for(lambda: local_copy(victim, "small") == data, 20, message="the bad row replaced")
    finally:
        for n in nodes:
            n.terminate()


async def test_malformed_lease_messages_are_refused_and_change_nothing(tmp_path: Path) -> None:
    """/_internal/lease and /lease-revoke: a bad message is a 400 with a message; no grant, no
    revocation happens."""
    secret = "lease-secret"
    (node,) = start_nodes(tmp_path, 1, fsync="never", cluster_secret=secret)
    try:
        async with aiohttp.ClientSession() as s:
            for path, body in (("lease", {"holder": 1, "ring": "r"}), ("lease", ["x"]),
                               ("lease-revoke", {}), ("lease-revoke", {"holder": None})):  # fmt: skip
                url = f"{node.url}/_internal/{path}"
                data = msgpack.packb(body)
                async with s.post(url, data=data, headers=peer_headers(secret, url, body=data)) as r:
                    assert r.status == 400, (path, body)
                    assert "malformed" in (await r.json())["error"]
        assert leases(node)["revoked_here"] == 0
    finally:
        node.terminate()


async def test_leases_are_held_only_while_reads_are_served(tmp_path: Path) -> None:
    """A node asks for leases only for IDLE_LEASES durations after its last read: a cluster
    that only takes writes holds none (its writes wait for W replicas, not for every leaseholder),
    and the first reads after the quiet spell ask the quorum until the leases are back."""
    nodes = start_nodes(tmp_path, 3, fsync="never", read_lease=0.5)
    try:
        wait_for(lambda: holds_all(nodes), 30, message="every node holds leases from the other two")
        assert all(len(leases(n)["granted_to"]) == 2 for n in nodes)
        wait_for(lambda: all(not leases(n)["wanted"] and leases(n)["held_from"] == [] for n in nodes), 20,
                 message="no reads for 5 leases: no node wants or holds a lease")  # fmt: skip
        wait_for(lambda: all(leases(n)["granted_to"] == [] for n in nodes), 10,
                 message="and no node still promises one")  # fmt: skip
        waited = leases(nodes[0])["writes_waited"]
        async with aiohttp.ClientSession() as s:
            for i in range(5):
                async with s.put(f"{nodes[0].url}/files/w{i}", data=b"x" * 100) as r:
                    assert r.status == 201
            assert leases(nodes[0])["writes_waited"] == waited, "no replica holds a lease to wait for"
            reader = nodes[1]
            reads = leases(reader)["lease_reads"]
            async with s.get(f"{reader.url}/files/w0") as r:
                assert r.status == 200 and await r.read() == b"x" * 100
            assert leases(reader)["lease_reads"] == reads, "the first read after the quiet spell: quorum"

            async def lease_read() -> bool:
                async with s.get(f"{reader.url}/files/w1") as r:
                    assert r.status == 200 and await r.read() == b"x" * 100
                return leases(reader)["lease_reads"] > reads

            deadline = time.monotonic() + 10
            while not await lease_read():
                assert time.monotonic() < deadline, "the reader's leases came back"
                await asyncio.sleep(0.05)  # poll
            assert leases(reader)["wanted"] and len(leases(reader)["held_from"]) == 2
            assert not leases(nodes[2])["wanted"], "a node that reads nothing still asks for nothing"
            reader_id = reader.health()["node_id"]
            assert leases(nodes[0])["granted_to"] == leases(nodes[2])["granted_to"] == [reader_id]
    finally:
        for n in nodes:
            n.terminate()
