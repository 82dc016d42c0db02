"""A node that was down while files were written, overwritten and deleted catches up after it
restarts: its manifest's Merkle root equals its peers' (same entries, tombstones included) and
it serves every current file from its own disk, on real processes over real sockets."""

from __future__ import annotations

import asyncio
import hashlib

import aiohttp

from tests.support.http import put_all
from tests.support.processes import NodeProcess, wait_for

PERIOD = 0.2


def body(key: str, size: int) -> bytes:
    seed = hashlib.sha256(key.encode()).digest()
    return (seed * (size // 32 + 1))[:size]


def roots(nodes: list[NodeProcess]) -> set[str]:
    return {n.get_json("/status")["manifest"]["root"] for n in nodes}


async def local_copies(node: NodeProcess, files: dict[str, bytes | None]) -> int:
    """How many of ``files`` the node serves from its own disk as expected (None: deleted)."""
    good = 0
    async with aiohttp.ClientSession() as s:
        for key, data in files.items():
            async with s.get(f"{node.url}/files/{key}?local=1") as r:
                got = await r.read()
                good += (r.status == 404) if data is None else (r.status == 200 and got == data)
    return good


async def test_node_down_during_writes_catches_up_manifest_and_data(node_factory) -> None:
    nodes = node_factory(3, gossip_interval=PERIOD)
    wait_for(lambda: all(len(n.get_json("/status")["members"]) == 3 for n in nodes), 20)
    before = {f"old/{i:03d}": body(f"old/{i}", 1000 + i) for i in range(60)}
    await put_all(nodes, before)
    wait_for(lambda: len(roots(nodes)) == 1, 30, message="equal manifests before the outage")
    down, up = nodes[2], nodes[:2]
    down.kill()

    written = {f"new/{i:03d}": body(f"new/{i}", 200 + 37 * i) for i in range(240)}
    written |= {f"big/{i}": body(f"big/{i}", (6 << 20) + i) for i in range(3)}  # several chunks each
    overwritten = {f"old/{i:03d}": body(f"again/{i}", 5000) for i in range(0, 60, 3)}
    await put_all(up, written | overwritten)
    async with aiohttp.ClientSession() as s:
        for i in range(1, 60, 6):
            async with s.delete(f"{up[i % 2].url}/files/old/{i:03d}") as r:
                assert r.status in (200, 204), await r.text()
    deleted = {f"old/{i:03d}": None for i in range(1, 60, 6)}
    assert len(roots(up)) == 1

    down.start()
    down.wait_ready()
    wait_for(lambda: len(roots(nodes)) == 1, 30, interval=0.2, message="the restarted node's manifest")
    status = down.get_json("/status")["manifest"]
    assert status["entries"] == nodes[0].get_json("/status")["manifest"]["entries"]
    assert status["entries_learned"] >= len(written) + len(overwritten) + len(deleted)

    expected: dict[str, bytes | None] = {**before, **written, **overwritten, **deleted}
    await asyncio.to_thread(
        wait_for,
        lambda: asyncio.run(local_copies(down, expected)) == len(expected),
        60,
        interval=0.5,
        message="every current file on the restarted node's disk, and no deleted one",
    )


async def test_restarted_node_catches_up_from_one_peer_then_compares_with_the_rest(node_factory) -> None:
    """Right after start a node exchanges with one peer first: the entries it missed are shipped
    once, not once per peer (both peers hold all of them), and its manifest ends equal."""
    nodes = node_factory(3, gossip_interval=PERIOD)
    wait_for(lambda: all(len(n.get_json("/status")["members"]) == 3 for n in nodes), 20)
    down, up = nodes[2], nodes[:2]
    down.kill()
    missed = {f"missed/{i:03d}": body(f"missed/{i}", 300 + i) for i in range(300)}
    await put_all(up, missed)
    assert len(roots(up)) == 1
    served0 = sum(n.get_json("/status")["manifest"]["entries_served"] for n in up)

    down.start()
    down.wait_ready()
    wait_for(lambda: len(roots(nodes)) == 1, 30, interval=0.2, message="the restarted node's manifest")
    served = sum(n.get_json("/status")["manifest"]["entries_served"] for n in up) - served0
    assert down.get_json("/status")["manifest"]["entries_learned"] >= len(missed)
    assert served < 1.5 * len(missed)  # both peers at once: about 2 x 300
