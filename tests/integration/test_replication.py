"""Triple replication through any node, failover reads and quorum writes, on real processes."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random
import time
from typing import Any

import aiohttp
import msgpack
import pytest

from p2pstore.core.placement import replicas as place
from tests.support.http import generated_body, generated_sha256, peer_headers
from tests.support.processes import NodeProcess, metric, wait_for

MiB = 1 << 20
PERIOD = 0.2


def node_ids(nodes: list[NodeProcess]) -> list[str]:
    return [n.health()["node_id"] for n in nodes]


def wait_members(nodes: list[NodeProcess]) -> None:
    def all_alive() -> bool:
        for n in nodes:
            members = n.get_json("/status")["members"]
            if len(members) != len(nodes) or any(m["state"] != "alive" for m in members):
                return False
        return True

    wait_for(all_alive, 20, message=f"{len(nodes)} nodes see each other alive")


async def sha_of(session: aiohttp.ClientSession, url: str) -> tuple[int, str | None]:
    async with session.get(url) as r:
        if r.status != 200:
            await r.read()
            return r.status, None
        digest = hashlib.sha256()
        async for piece in r.content.iter_chunked(MiB):
            digest.update(piece)
        return r.status, digest.hexdigest()


def mixed_sizes(n: int, seed: int = 1) -> list[int]:
    rng = random.Random(seed)
    fixed = [0, 1, MiB - 1, MiB, MiB + 1, 20 * MiB, 7 * MiB + 3]
    big = [rng.randint(2 * MiB, 12 * MiB) for _ in range(6)]
    small = [rng.randint(0, 200_000) for _ in range(n - len(fixed) - len(big))]
    return fixed + big + small


@pytest.mark.slow
async def test_200_files_on_three_nodes_then_two_killed(node_factory) -> None:
    nodes = node_factory(3, fsync="never", gossip_interval=PERIOD, chunk_size=MiB)
    wait_members(nodes)
    a = nodes[0]
    sizes = mixed_sizes(200)
    expected: dict[str, str] = {}
    sem = asyncio.Semaphore(8)
    async with aiohttp.ClientSession() as s:

        async def upload(i: int, size: int) -> None:
            key = f"mixed/{i:03d}"
            async with sem, s.put(f"{a.url}/files/{key}", data=generated_body(size, seed=i)) as r:
                assert r.status == 201, await r.text()
                body = await r.json()
            assert body["sha256"] == generated_sha256(size, seed=i)
            expected[key] = body["sha256"]

        await asyncio.gather(*(upload(i, size) for i, size in enumerate(sizes)))

        async def copies(key: str) -> int:
            found = 0
            for n in nodes:
                status, sha = await sha_of(s, f"{n.url}/files/{key}?local=1")
                found += status == 200 and sha == expected[key]
            return found

        async def all_on_three() -> bool:
            counts = await asyncio.gather(*(copies(k) for k in expected))
            return all(c == 3 for c in counts)

        deadline = asyncio.get_running_loop().time() + 30  # the third copy may land after the ack
        while not await all_on_three():
            assert asyncio.get_running_loop().time() < deadline, "some files are not on 3 nodes"
            await asyncio.sleep(0.2)

    nodes[1].kill()
    nodes[2].kill()
    async with aiohttp.ClientSession() as s:
        for key, sha in expected.items():
            assert await sha_of(s, f"{a.url}/files/{key}") == (200, sha), key
        async with s.put(f"{a.url}/files/after-failure", data=b"x") as r:
            assert r.status == 503
            assert "replicas" in (await r.json())["error"]
        async with s.get(f"{a.url}/files/after-failure") as r:
            assert r.status == 503  # absent here, but only one of three replicas could say so
        async with s.get(f"{a.url}/files/after-failure?r=1") as r:
            assert r.status == 404
        async with s.put(f"{a.url}/files/after-failure?w=1", data=b"x") as r:
            assert r.status == 201, await r.text()


@pytest.mark.slow
async def test_replica_killed_mid_download_and_any_gateway(node_factory) -> None:
    nodes = node_factory(5, fsync="never", gossip_interval=PERIOD)
    wait_members(nodes)
    ids = node_ids(nodes)
    by_id = dict(zip(ids, nodes, strict=True))
    gateway = nodes[0]
    key = next(f"big/{i}" for i in range(1000) if ids[0] not in place(f"big/{i}", ids, 3))
    holders = place(key, ids, 3)
    size = 200 * MiB
    sha = generated_sha256(size, seed=3)
    async with aiohttp.ClientSession() as s:
        async with s.put(f"{nodes[1].url}/files/{key}", data=generated_body(size, seed=3)) as r:
            assert r.status == 201, await r.text()

        def on_all_three() -> bool:
            rows = gateway.get_json(f"/files?prefix={key}&long=1")["files"][0]["replicas"]
            return sorted(r["node"] for r in rows if r["verified"]) == sorted(holders)

        wait_for(on_all_three, 30, message="3 verified copies")
        digest = hashlib.sha256()
        got = 0
        async with s.get(f"{gateway.url}/files/{key}") as r:
            assert r.status == 200
            async for piece in r.content.iter_chunked(MiB):
                digest.update(piece)
                got += len(piece)
                if got >= 20 * MiB and by_id[holders[0]].running:
                    by_id[holders[0]].kill()  # the replica the gateway reads from first
        assert not by_id[holders[0]].running, "the replica was killed during the download"
        assert got == size
        assert digest.hexdigest() == sha

        # writes through any node, reads through any other
        live = [n for n in nodes if n.running]
        for i, writer in enumerate(live):
            async with s.put(f"{writer.url}/files/any/{i}", data=f"via {i}".encode()) as r:
                assert r.status == 201
        for i in range(len(live)):
            for reader in live:
                async with s.get(f"{reader.url}/files/any/{i}") as r:
                    assert r.status == 200 and await r.read() == f"via {i}".encode()


async def test_concurrent_writers_converge_to_newest(node_factory) -> None:
    nodes = node_factory(3, fsync="never", gossip_interval=PERIOD)
    wait_members(nodes)
    async with aiohttp.ClientSession() as s:

        async def write(i: int) -> str:
            gw = nodes[i % 3]
            async with s.put(f"{gw.url}/files/contended", data=f"writer {i}".encode() * 100) as r:
                assert r.status == 201
                return (await r.json())["version"]

        versions = await asyncio.gather(*(write(i) for i in range(30)))
        newest = max(versions)

        async def replica_versions() -> set[str]:
            found = set()
            for n in nodes:
                async with s.get(f"{n.url}/files/contended?local=1") as r:
                    found.add(r.headers.get("X-P2PStore-Version", "missing"))
                    await r.read()
            return found

        deadline = asyncio.get_running_loop().time() + 20
        while (got := await replica_versions()) != {newest}:
            assert asyncio.get_running_loop().time() < deadline, got
            await asyncio.sleep(0.2)
        for n in nodes:
            async with s.get(f"{n.url}/files/contended") as r:
                assert r.headers["X-P2PStore-Version"] == newest


async def test_deletes_and_overwrites_replicate(node_factory) -> None:
    nodes = node_factory(3, fsync="never", gossip_interval=PERIOD)
    wait_members(nodes)
    async with aiohttp.ClientSession() as s:
        async with s.put(f"{nodes[0].url}/files/d", data=b"one") as r:
            assert r.status == 201
        async with s.put(f"{nodes[1].url}/files/d", data=b"two") as r:
            assert r.status == 201
        async with s.delete(f"{nodes[2].url}/files/d") as r:
            assert r.status == 200

        async def gone_everywhere() -> bool:
            for n in nodes:
                async with s.get(f"{n.url}/files/d?local=1") as r:
                    await r.read()
                    if r.status != 404:
                        return False
            return True

        deadline = asyncio.get_running_loop().time() + 20
        while not await gone_everywhere():
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.2)
        for n in nodes:
            async with s.get(f"{n.url}/files/d") as r:
                assert r.status == 404


async def test_internal_endpoints_need_the_cluster_secret(node_factory) -> None:
    secret = "correct-horse"
    nodes = node_factory(2, fsync="never", gossip_interval=PERIOD, cluster_secret=secret)
    wait_members(nodes)
    n = nodes[0]
    entry = {
        "key": "forged",
        "version": "9999999999999.000000.evil",
        "size": 0,
        "sha256": hashlib.sha256(b"").hexdigest(),
        "chunks": [],
        "content_type": "x",
        "deleted": False,
        "modified": 1.0,
    }
    body = msgpack.packb({"upload": None, "entry": entry})
    async with aiohttp.ClientSession() as s:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            async with s.post(f"{n.url}/_internal/commit", data=body, headers=headers) as r:
                assert r.status == 401
                assert "secret" in (await r.json())["error"]
            async with s.post(f"{n.url}/_internal/gossip", data=b"\x80", headers=headers) as r:
                assert r.status == 401
        async with s.get(f"{n.url}/files/forged") as r:
            assert r.status == 404
        for junk in (
            b"\xc1",
            msgpack.packb([1, 2]),
            msgpack.packb({"kind": "membership", "from": "x", "msg": 5}),
        ):
            url = f"{n.url}/_internal/gossip"
            async with s.post(url, data=junk, headers=peer_headers(secret, url, body=junk)) as r:
                assert r.status == 400 and "malformed" in (await r.json())["error"]
        url, junk = f"{n.url}/_internal/commit", msgpack.packb({"entry": {"key": ""}})
        async with s.post(url, data=junk, headers=peer_headers(secret, url, body=junk)) as r:
            assert r.status == 400
    assert n.health() is not None
    assert "rejected malformed message" in n.log_text()


async def test_nodes_with_different_chunk_sizes_serve_each_others_files(node_factory, tmp_path) -> None:
    """A gateway that does not hold a file and uses another chunk size still serves it, ranges too
    (a single chunk larger than the gateway's chunk size included)."""
    from p2pstore.launcher import flags_to_args
    from tests.support.processes import NodeProcess

    secret = "mixed-chunks"
    nodes = node_factory(3, fsync="never", gossip_interval=PERIOD, chunk_size="16KiB", cluster_secret=secret)
    extra = NodeProcess(
        tmp_path / "odd",
        args=flags_to_args(
            {
                "fsync": "never",
                "gossip_interval": PERIOD,
                "chunk_size": "64KiB",
                "cluster_secret": secret,
                "seeds": nodes[0].address,
            }
        ),
    )
    extra.start()
    try:
        extra.wait_ready()
        all_nodes = [*nodes, extra]
        wait_members(all_nodes)
        ids = node_ids(all_nodes)
        key = next(f"mix/{i}" for i in range(1000) if ids[3] not in place(f"mix/{i}", ids, 3))
        body = bytes(range(256)) * 400  # 102,400 bytes: 7 chunks of 16 KiB
        async with aiohttp.ClientSession() as s:
            async with s.put(f"{nodes[0].url}/files/{key}", data=body) as r:
                assert r.status == 201, await r.text()
            async with s.get(f"{extra.url}/files/{key}") as r:
                assert r.status == 200 and await r.read() == body
            async with s.get(f"{extra.url}/files/{key}", headers={"Range": "bytes=20000-70000"}) as r:
                assert r.status == 206 and await r.read() == body[20000:70001]
    finally:
        extra.terminate()


def lookups_served(node: NodeProcess) -> int:
    """Version lookups ("entries" calls) this node has answered."""
    return metric(node, "p2pstore_requests_total{", 'method="RPC entries"')


def three_with_secret(node_factory, secret: str, **flags: Any) -> list[NodeProcess]:
    """Three nodes (R=3) that see each other; the test may call /_internal/ with ``secret``."""
    nodes = node_factory(3, fsync="never", gossip_interval=PERIOD, cluster_secret=secret, **flags)
    wait_members(nodes)
    return nodes


async def three_replicas_of(s: aiohttp.ClientSession, nodes: list[NodeProcess], key: str, data: bytes) -> str:
    """PUT ``key`` and wait until every node holds it locally; return its version."""
    async with s.put(f"{nodes[0].url}/files/{key}", data=data) as r:
        assert r.status == 201
        version = (await r.json())["version"]
    deadline = asyncio.get_running_loop().time() + 20
    while [await local_version(s, n, key) for n in nodes] != [version] * len(nodes):
        assert asyncio.get_running_loop().time() < deadline, f"{key} did not reach all replicas"
        await asyncio.sleep(0.05)  # the third replica commits after the acknowledgement
    return version


async def local_version(s: aiohttp.ClientSession, node: NodeProcess, key: str) -> str | None:
    async with s.get(f"{node.url}/files/{key}?local=1") as r:
        return r.headers.get("X-P2PStore-Version") if r.status == 200 else None


async def plant_newer(s: aiohttp.ClientSession, node: NodeProcess, key: str, than: str, data: bytes,
                      secret: str) -> str:  # fmt: skip
    """Write a newer version of ``key`` on ``node`` alone (as a ?w=1 write that reached one
    replica so far); return that version."""
    wall, counter, node_id = than.split(".", 2)
    version = f"{int(wall) + 1000:013d}.{counter}.{node_id}"
    sha = hashlib.sha256(data).hexdigest()
    entry = {
        "key": key, "version": version, "size": len(data), "sha256": sha, "chunks": [sha],
        "content_type": "text/plain", "deleted": False, "modified": 2.0,
    }  # fmt: skip
    url, body = f"{node.url}/_internal/write", msgpack.packb({"entry": entry, "data": data})
    async with s.post(url, data=body, headers=peer_headers(secret, url, body=body)) as r:
        assert r.status == 200, await r.text()
    return version


async def test_reads_ask_a_quorum_and_the_newest_version_wins(node_factory) -> None:
    """R=3, W=2: a read asks R-W+1 = 2 replicas (the gateway and one peer) when they agree;
    ``?r=3`` asks all three; a replica holding a newer version makes the others get asked.
    Read leases off: with them, replicas answer alone (test_read_leases.py)."""
    secret = "quorum-secret"
    nodes = three_with_secret(node_factory, secret, read_lease=0)
    a, b, c = nodes
    async with aiohttp.ClientSession() as s:
        v1 = await three_replicas_of(s, nodes, "q", b"version one")

        for r_param, per_read in (("", 1), ("?r=3", 2), ("?r=1", 0)):
            before = lookups_served(b) + lookups_served(c)
            for _ in range(10):
                async with s.get(f"{a.url}/files/q{r_param}") as r:
                    assert r.status == 200 and await r.read() == b"version one"
            assert lookups_served(b) + lookups_served(c) - before == 10 * per_read, r_param

        for bad in ("0", "4", "x"):
            async with s.get(f"{a.url}/files/q?r={bad}") as r:
                assert r.status == 400 and "r must" in (await r.json())["error"]

        data = b"version two"
        v2 = await plant_newer(s, b, "q", v1, data, secret)
        # b sees the others disagree and returns its newer copy; r=3 finds it from anywhere.
        for url in (f"{b.url}/files/q", f"{a.url}/files/q?r=3", f"{c.url}/files/q?r=3"):
            async with s.get(url) as r:
                assert r.status == 200 and await r.read() == data, url
                assert r.headers["X-P2PStore-Version"] == v2


async def test_a_read_sends_the_newest_version_to_replicas_found_behind(node_factory) -> None:
    """Read repair: a replica holds a version the other two missed; the first read that sees
    the difference sends them the entry (they fetch the data), so every replica serves it; an
    older entry sent the same way changes nothing; a malformed one is refused. Read leases off:
    the version planted on one replica bypasses the coordinator they rely on."""
    secret = "repair-secret"
    nodes = three_with_secret(node_factory, secret, read_lease=0)
    a, b, c = nodes
    async with aiohttp.ClientSession() as s:
        v1 = await three_replicas_of(s, nodes, "k", b"old bytes")
        # Each node's first exchange runs once it sees a peer, whether clients are served or not.
        def each_synced_once() -> bool:
            return all(metric(n, "p2pstore_manifest_syncs_total") for n in nodes)

        await asyncio.to_thread(wait_for, each_synced_once, 20)
        stop, every_node_busy = asyncio.Event(), asyncio.Event()

        async def keep_serving() -> None:
            """Client requests on every node (another key): anti-entropy then waits 15 s between
            exchanges, so within this test only the read's push can bring a and c up to date."""
            while not stop.is_set():
                for n in nodes:
                    async with s.get(f"{n.url}/files/other-key") as r:
                        await r.read()
                every_node_busy.set()
                await asyncio.sleep(0.05)

        busy = asyncio.ensure_future(keep_serving())
        try:
            await asyncio.wait_for(every_node_busy.wait(), 10)  # before the newer version exists
            data = b"the newest bytes"
            v2 = await plant_newer(s, b, "k", v1, data, secret)
            assert [await local_version(s, n, "k") for n in nodes] == [v1, v2, v1]
            assert metric(b, "p2pstore_read_repairs_total") == 0
            async with s.get(f"{b.url}/files/k") as r:  # b asks a peer, disagrees, asks the other
                assert r.status == 200 and await r.read() == data
            deadline = asyncio.get_running_loop().time() + 8
            while [await local_version(s, n, "k") for n in nodes] != [v2] * 3:
                assert asyncio.get_running_loop().time() < deadline, "a and c did not get the newest version"
                await asyncio.sleep(0.05)
            assert metric(b, "p2pstore_read_repairs_total") == 2  # one push to each of a and c
        finally:
            stop.set()
            await busy
        for n in (a, c):  # entry and data: each serves its own copy
            async with s.get(f"{n.url}/files/k?local=1") as r:
                assert await r.read() == data

        old_entry = {
            "key": "k", "version": v1, "size": 9, "sha256": hashlib.sha256(b"old bytes").hexdigest(),
            "chunks": [hashlib.sha256(b"old bytes").hexdigest()], "content_type": "text/plain",
            "deleted": False, "modified": 1.0,
        }  # fmt: skip
        cases = (({"entries": [old_entry]}, 200), ({"entries": []}, 400), ({"entries": [{}]}, 400))
        for body, status in cases:
            url, raw = f"{a.url}/_internal/read-repair", msgpack.packb(body)
            async with s.post(url, data=raw, headers=peer_headers(secret, url, body=raw)) as r:
                assert r.status == status, body
                if status == 200:
                    assert msgpack.unpackb(await r.read()) == {"applied": 0}
        assert await local_version(s, a, "k") == v2


async def test_large_upload_hashed_once_by_the_gateway_checks_the_client_checksum(node_factory) -> None:
    """A staged (> 1 MiB) write: replicas hash only their chunks and the gateway checks the
    client's X-Content-SHA256 against its own whole-file hash: a wrong one stores nothing
    anywhere, a right one is served with that hash as its ETag."""
    secret = "stage-secret"
    nodes = node_factory(3, fsync="never", gossip_interval=PERIOD, cluster_secret=secret, chunk_size=1 << 20)
    wait_members(nodes)
    a = nodes[0]
    body = random.Random(7).randbytes(3 * (1 << 20) + 12345)  # four chunks
    sha = hashlib.sha256(body).hexdigest()
    wrong = hashlib.sha256(b"not the body").hexdigest()
    async with aiohttp.ClientSession() as s:
        async with s.put(f"{a.url}/files/big", data=body, headers={"X-Content-SHA256": wrong}) as r:
            assert r.status == 400 and "does not match" in (await r.json())["error"]
        for n in nodes:
            async with s.get(f"{n.url}/files/big?local=1") as r:
                assert r.status == 404
        async with s.put(f"{a.url}/files/big", data=body, headers={"X-Content-SHA256": sha}) as r:
            assert r.status == 201 and (await r.json())["sha256"] == sha
        for n in nodes:
            async with s.get(f"{n.url}/files/big") as r:
                assert r.status == 200 and r.headers["ETag"] == f'"{sha}"' and await r.read() == body

        url = f"{a.url}/_internal/stage/{'ab' * 8}"
        async with s.put(url, data=body, headers=peer_headers(secret, url, "PUT", unsigned="UNSIGNED")) as r:
            assert r.status == 200
            staged = msgpack.unpackb(await r.read())
        assert staged["size"] == len(body) and len(staged["chunks"]) == 4 and staged["sha256"] is None


async def test_raw_one_phase_write_checks_secret_header_and_bytes(node_factory) -> None:
    """POST /_internal/write-raw (a large one-phase write's body, entry in a header): the
    cluster secret is required, a bad header or bytes that do not match the entry change nothing."""
    secret = "raw-secret"
    node = node_factory(1, fsync="never", cluster_secret=secret)[0]
    data = bytes(range(256)) * 1024  # 256 KiB: above the RPC frame limit, below one-phase max
    sha = hashlib.sha256(data).hexdigest()
    entry = {
        "key": "raw", "version": "1795926025997.000000.nabcdef", "size": len(data), "sha256": sha,
        "chunks": [sha], "content_type": "x/y", "deleted": False, "modified": 1.0,
    }  # fmt: skip
    header = base64.b64encode(msgpack.packb(entry)).decode()
    url = f"{node.url}/_internal/write-raw"

    def auth(entry: str) -> dict[str, str]:
        return {**peer_headers(secret, url, unsigned="ENTRY", entry=entry), "X-P2PStore-Entry": entry}

    async with aiohttp.ClientSession() as s:
        async with s.post(url, data=data, headers={"X-P2PStore-Entry": header}) as r:
            assert r.status == 401
        for bad_header in ("", "!!notbase64", base64.b64encode(b"\xc1").decode()):
            async with s.post(url, data=data, headers=auth(bad_header)) as r:
                assert r.status == 400, bad_header
        async with s.post(url, data=data[:-1] + b"x", headers=auth(header)) as r:
            assert r.status == 400 and "does not match" in (await r.json())["error"]
        async with s.get(f"{node.url}/files/raw") as r:
            assert r.status == 404
        async with s.post(url, data=data, headers=auth(header)) as r:
            answer = msgpack.unpackb(await r.read())
            assert r.status == 200 and answer["applied"] is True
            assert isinstance(answer["leases"], dict)  # the read leases the coordinator must respect
        async with s.get(f"{node.url}/files/raw") as r:
            assert r.status == 200 and await r.read() == data
            assert r.headers["Content-Type"] == "x/y"


async def test_not_found_needs_a_read_quorum(node_factory) -> None:
    """With two of three nodes down, a key the survivor lacks may still exist on them (a write
    W=2 acknowledged there): the survivor says 503, not 404, unless the client accepts one
    answer (?r=1); files it holds are still served."""
    nodes = node_factory(3, fsync="never", gossip_interval=PERIOD)
    wait_members(nodes)
    async with aiohttp.ClientSession() as s:
        async with s.put(f"{nodes[0].url}/files/here", data=b"kept") as r:
            assert r.status == 201
        wait_for(lambda: all(n.get_json("/files?prefix=here")["files"] for n in nodes), 10,
                 message="the file on every node")  # fmt: skip
        for n in nodes[1:]:
            n.kill()
        async with s.get(f"{nodes[0].url}/files/elsewhere") as r:
            answer = await r.json()
            assert r.status == 503, answer
            assert "1 of its 3 replicas" in answer["error"] and answer["detail"]["read_quorum"] == 2
        async with s.get(f"{nodes[0].url}/files/elsewhere?r=1") as r:
            assert r.status == 404
        async with s.get(f"{nodes[0].url}/files/here") as r:
            assert r.status == 200 and await r.read() == b"kept"


async def test_a_cluster_that_lost_two_of_three_keeps_refusing_one_copy_writes(node_factory) -> None:
    """Placement drops members dead for longer than --dead-after, but W=2 stays W=2: the one node
    left must not start acknowledging writes it can store only once."""
    nodes = node_factory(3, fsync="never", gossip_interval=PERIOD, dead_after=1)
    wait_members(nodes)
    a = nodes[0]
    for n in nodes[1:]:
        n.kill()
    def both_dead() -> bool:
        return sorted(m["state"] for m in a.get_json("/status")["members"]) == ["alive", "dead", "dead"]

    wait_for(both_dead, 30, message="the survivor sees both others dead")
    async with aiohttp.ClientSession() as s:
        until = asyncio.get_running_loop().time() + 3.0  # well past dead_after (1 s)
        i = 0
        while asyncio.get_running_loop().time() < until:
            async with s.put(f"{a.url}/files/alone-{i}", data=b"x") as r:
                assert r.status == 503, (i, await r.text())
            i += 1
            await asyncio.sleep(0.25)


async def test_versions_far_in_the_future_are_refused(node_factory) -> None:
    """A peer (or anyone holding the secret) offering a version years ahead of the clocks: a
    write, a read repair and an announcement carrying it change nothing, and the key and the
    cluster's clocks stay usable: the next PUT wins and is served. Skew within a minute passes."""
    secret = "future-secret"
    nodes = three_with_secret(node_factory, secret, read_lease=0)
    a = nodes[0]
    data = b"planted"
    sha = hashlib.sha256(data).hexdigest()
    far = {
        "key": "k", "version": "9999999999999.999999.nforged", "size": len(data), "sha256": sha,
        "chunks": [sha], "content_type": "x/y", "deleted": False, "modified": 2.0,
    }  # fmt: skip

    async def post(s: aiohttp.ClientSession, method: str, message: dict) -> aiohttp.ClientResponse:
        url, body = f"{a.url}/_internal/{method}", msgpack.packb(message)
        return await s.post(url, data=body, headers=peer_headers(secret, url, body=body))

    async with aiohttp.ClientSession() as s:
        async with await post(s, "write", {"entry": far, "data": data}) as r:
            assert r.status == 400 and "ahead of this node's clock" in (await r.json())["error"]
        for method in ("read-repair", "announce"):
            async with await post(s, method, {"entries": [far]}) as r:
                assert r.status == 200 and msgpack.unpackb(await r.read()) == {"applied": 0}, method
        async with s.put(f"{a.url}/files/k", data=b"real") as r:
            assert r.status == 201, await r.text()
            assert not (await r.json())["version"].startswith("9999")
        for n in nodes:
            async with s.get(f"{n.url}/files/k") as r:
                assert r.status == 200 and await r.read() == b"real"
        near = {**far, "version": f"{int(time.time() * 1000) + 30_000:013d}.000000.nskewed"}
        async with await post(s, "write", {"entry": near, "data": data}) as r:
            assert r.status == 200, await r.text()
    assert "ahead of this node's clock" in a.log_text()


async def test_ranges_across_read_pieces_and_chunks_through_every_node(node_factory) -> None:
    """Chunks are read and sent as 1 MiB pieces (from local disk, or from a peer by a gateway
    that holds no copy): ranges that start, end or cross inside a piece, on piece and chunk
    boundaries, come back byte-exact through every node of a 4-node cluster (R=3)."""
    nodes = node_factory(4, fsync="never")
    body = random.Random(5).randbytes(10 * MiB + 12345)  # chunks of 4, 4 and 2 MiB + a bit
    async with aiohttp.ClientSession() as s:
        async with s.put(f"{nodes[0].url}/files/ranged", data=body) as r:
            assert r.status == 201, await r.text()
        cuts = [(0, len(body)), (1, MiB + 1), (MiB - 7, MiB + 7), (3 * MiB + 5, 4 * MiB + 5),
                (4 * MiB, 8 * MiB), (4 * MiB - 1, 4 * MiB + 1), (2 * MiB, 2 * MiB + 1),
                (9 * MiB + 3, len(body))]  # fmt: skip
        for node in nodes:
            for lo, hi in cuts:
                async with s.get(f"{node.url}/files/ranged", headers={"Range": f"bytes={lo}-{hi - 1}"}) as r:
                    assert r.status in (200, 206), (node.url, lo, hi)
                    assert await r.read() == body[lo:hi], (node.url, lo, hi)
