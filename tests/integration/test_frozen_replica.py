"""A replica that stops (SIGSTOP: alive to TCP, reading and answering nothing) costs a write at
most about --stall-timeout, as long as W other replicas take it; it is completed by repair once
it resumes. Reads turn to the next holder when one stalls mid-transfer."""

from __future__ import annotations

import os
import time

import aiohttp

from p2pstore.launcher import http_json
from tests.support.processes import wait_for

MiB = 1 << 20
STALL = 1.0
BOUND = 8.0  # seconds: far above STALL plus the work itself, far below a transfer's own timeouts


async def test_a_frozen_replica_costs_a_write_seconds_not_minutes(node_factory) -> None:
    """Three nodes, R=3, W=2; one replica frozen. A staged 24 MiB PUT (more than its socket
    buffers take: the queue to it fills), a staged 2 MiB PUT (the buffers swallow it all, then no
    answer comes) and a one-round-trip 4 KiB PUT are each acknowledged by the two others within
    the bound, the frozen node not among those that committed. After it resumes, it holds every
    file itself (repair)."""
    nodes = node_factory(3, fsync="never", stall_timeout=STALL, read_lease=0, scrub_rate=0)
    wait_for(lambda: all(len(n.get_json("/status")["members"]) == 3 for n in nodes), 20,
             message="three members everywhere")  # fmt: skip
    gateway, frozen = nodes[0], nodes[2]
    frozen_id = frozen.get_json("/status")["node_id"]
    bodies = {f"f{size}": os.urandom(size) for size in (24 * MiB, 2 * MiB, 4096)}
    frozen.pause()
    try:
        async with aiohttp.ClientSession() as s:
            for key, data in bodies.items():
                started = time.monotonic()
                async with s.put(f"{gateway.url}/files/{key}", data=data) as r:
                    assert r.status == 201, await r.text()
                    committed = (await r.json())["replicas"]
                elapsed = time.monotonic() - started
                print(f"{key}: acknowledged in {elapsed:.2f} s with one replica frozen")  # the figure
                assert elapsed < BOUND, f"{key}: {elapsed:.1f} s with one replica frozen"
                assert frozen_id not in committed and len(committed) >= 2, committed
    finally:
        frozen.resume()
    assert "dropped from this write" in gateway.log_text()

    def held_by_frozen() -> bool:
        statuses = [http_json(f"{frozen.url}/files/{k}?local=1", method="HEAD")[0] for k in bodies]
        return all(status == 200 for status in statuses)

    wait_for(held_by_frozen, 60, message="the resumed replica repaired every file")
    async with aiohttp.ClientSession() as s:
        for key, data in bodies.items():
            async with s.get(f"{frozen.url}/files/{key}?local=1") as r:
                assert r.status == 200 and await r.read() == data
