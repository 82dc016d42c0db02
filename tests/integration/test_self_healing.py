"""Self-healing on real processes: rejoin re-sync, corrupt or lost chunks repaired.

Re-sync bound: a restarted node rejoins within a few protocol periods (0.2 s), its first
manifest exchange runs within 2 * max(1 s, 4 periods) and triggers a repair pass, which copies
at disk speed. We allow 60 s for 500 files on this 2-core machine and print the measured time.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time

import aiohttp
import pytest

from tests.support.chunks import flip_byte, read_chunk, stored_chunks
from tests.support.http import put_all
from tests.support.processes import NodeProcess, run_cli, wait_for

PERIOD = 0.2
RESYNC_BOUND = 60.0


def wait_members(nodes: list[NodeProcess]) -> None:
    def ok() -> bool:
        return all(
            [m["state"] for m in n.get_json("/status")["members"]] == ["alive"] * len(nodes) for n in nodes
        )

    wait_for(ok, 20, message="all members alive")


def verified_on(node: NodeProcess, node_id: str, prefix: str) -> int:
    """How many files under ``prefix`` ``node_id`` holds a verified current copy of."""
    count, after = 0, ""
    while True:
        page = node.get_json(f"/files?prefix={prefix}&long=1&limit=1000&after={after}", timeout=30)
        for f in page["files"]:
            count += any(r["node"] == node_id and r["verified"] for r in f["replicas"])
        if not page["next"]:
            return count
        after = page["next"]


def holds_good_copy(node: NodeProcess, sha: str) -> bool:
    """``node`` stores chunk ``sha`` on disk (file or segment record) and its bytes are right."""
    where = stored_chunks(node.data_dir).get(sha)
    return where is not None and hashlib.sha256(read_chunk(node.data_dir, sha)).hexdigest() == sha


@pytest.mark.slow
async def test_restarted_node_resyncs_500_missed_files(node_factory) -> None:
    nodes = node_factory(3, fsync="never", gossip_interval=PERIOD)
    wait_members(nodes)
    down = nodes[2]
    down_id = down.health()["node_id"]
    down.kill()
    payloads = {
        f"missed/{i:03d}": hashlib.sha256(str(i).encode()).digest() * (1 + i % 50) for i in range(500)
    }
    await put_all(nodes[:2], payloads)
    total = sum(len(d) for d in payloads.values())
    started = time.monotonic()
    down.start()
    down.wait_ready()
    wait_for(lambda: verified_on(down, down_id, "missed/") == 500, RESYNC_BOUND, interval=0.5,
             message="500 verified copies on the restarted node")  # fmt: skip
    elapsed = time.monotonic() - started
    print(f"\nre-sync of 500 files ({total / 1e6:.1f} MB) took {elapsed:.1f}s after restart")
    async with aiohttp.ClientSession() as s:
        for key, data in list(payloads.items())[::25]:
            async with s.get(f"{down.url}/files/{key}?local=1") as r:
                assert r.status == 200 and await r.read() == data


async def test_flipped_byte_and_deleted_chunk_are_repaired(node_factory) -> None:
    nodes = node_factory(3, fsync="never", gossip_interval=PERIOD, scrub_rate=512 * 1024 * 1024)
    wait_members(nodes)
    victim = nodes[1]
    body_a = b"A" * 300_000
    body_b = b"B" * 300_000
    sha_a, sha_b = hashlib.sha256(body_a).hexdigest(), hashlib.sha256(body_b).hexdigest()

    async def streamed(body: bytes):
        yield body

    async with aiohttp.ClientSession() as s:
        # "a" arrives whole (one-phase: a segment record), "b" streamed (staged: a chunk file)
        for key, body in (("rot/a", body_a), ("rot/b", streamed(body_b))):
            async with s.put(f"{nodes[0].url}/files/{key}", data=body) as r:
                assert r.status == 201
    wait_for(lambda: {sha_a, sha_b} <= stored_chunks(victim.data_dir).keys(), 20, message="chunks on victim")
    stored = stored_chunks(victim.data_dir)
    assert stored[sha_a].in_segment and not stored[sha_b].in_segment

    flip_byte(victim.data_dir, sha_a, at=1234, mask=0x01)  # rot inside the segment
    stored[sha_b].path.unlink()  # a lost chunk file

    async with aiohttp.ClientSession() as s:
        for gw in nodes:  # any gateway returns the right bytes
            async with s.get(f"{gw.url}/files/rot/a") as r:
                assert r.status == 200 and await r.read() == body_a

    def healed() -> bool:
        return all(holds_good_copy(victim, sha) for sha in (sha_a, sha_b))

    wait_for(healed, 30, message="victim holds correct copies again")
    assert any((victim.data_dir / "quarantine").iterdir()), "the bad chunk is kept in quarantine"
    status = victim.get_json("/status")
    assert status["scrub"]["corrupt_found"] + status["storage"]["corrupt_chunks_found"] >= 1
    assert status["repair"]["chunks_copied"] >= 2
    metrics = victim.get_json("/status")  # /metrics is text; check it separately
    assert metrics["repair"]["files_repaired"] >= 2
    async with aiohttp.ClientSession() as s, s.get(f"{victim.url}/metrics") as r:
        text = await r.text()
    assert "p2pstore_repair_files_total" in text and 'state="alive"' in text
    assert 'p2pstore_requests_total{' in text and 'api="internal"' in text
    assert "p2pstore_replication_pending" in text and "p2pstore_leader_term" in text


async def test_recover_command_reports(node_factory) -> None:
    nodes = node_factory(3, fsync="never", gossip_interval=PERIOD)
    wait_members(nodes)
    target = nodes[2].health()["node_id"]
    done = run_cli("--url", nodes[0].url, "recover", target)
    assert done.returncode == 0, done.stderr
    assert f"{target}:" in done.stdout.decode() and "repaired" in done.stdout.decode()
    bad = run_cli("--url", nodes[0].url, "recover", "no-such-node")
    assert bad.returncode == 4 and b"no member named" in bad.stderr and b"Traceback" not in bad.stderr


async def test_resync_keeps_to_the_repair_rate(node_factory) -> None:
    """``--repair-rate`` caps re-sync traffic: 8 MiB missed by a node come back at no more than
    2 MiB/s (a token bucket: the first chunk at once, then one 1 MiB chunk per half second)."""
    mib, rate = 1 << 20, 2 << 20
    nodes = node_factory(3, fsync="never", gossip_interval=PERIOD, repair_rate=rate)
    wait_members(nodes)
    down = nodes[2]
    down_id = down.health()["node_id"]
    down.kill()
    payloads = {f"throttled/{i}": os.urandom(mib) for i in range(8)}
    async with aiohttp.ClientSession() as s:
        for key, data in payloads.items():
            async with s.put(f"{nodes[0].url}/files/{key}", data=data) as r:
                assert r.status == 201, await r.text()
    down.start()
    down.wait_ready()
    first = done = None
    deadline = time.monotonic() + RESYNC_BOUND
    while done is None:
        copied = down.get_json("/status")["repair"]["bytes_copied"]
        now = time.monotonic()
        if copied and first is None:
            first = now
        if copied >= len(payloads) * mib:
            done = now
        assert now < deadline, f"only {copied} bytes re-synced within {RESYNC_BOUND}s"
        await asyncio.sleep(0.05)
    assert first is not None
    # 7 more chunks after the first, 0.5 s each; unthrottled this takes ~0.1 s
    assert done - first >= 7 * mib / rate - 0.5, f"8 MiB re-synced in {done - first:.2f}s"
    assert verified_on(down, down_id, "throttled/") == len(payloads)
