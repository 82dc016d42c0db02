"""A cluster larger than R: members outside a key's replica set learn its new entries at once."""

from __future__ import annotations

import time

import aiohttp

from tests.support.processes import NodeProcess, wait_for

KEYS = [f"announce/{i:02d}" for i in range(20)]


def listed(node: NodeProcess) -> set[str]:
    return {f["key"] for f in node.get_json("/files?prefix=announce/")["files"]}


def announced(node: NodeProcess) -> dict[str, int]:
    return node.get_json("/status")["replication"]["announced"]


async def test_members_outside_the_replicas_list_new_files_and_deletes_at_once(node_factory) -> None:
    """Four nodes, R=2: every write reaches two replicas (and the gateway's manifest); the rest
    would learn of it from anti-entropy only, at most every 15 s while clients are served (as
    here: the test keeps asking every node). All four list each file within moments of its ack,
    and the entries came as announcements; deletes too."""
    nodes = node_factory(4, replicas=2, fsync="never")
    wait_for(lambda: all(len(n.get_json("/status")["members"]) == 4 for n in nodes), 20,
             message="four members everywhere")  # fmt: skip
    async with aiohttp.ClientSession() as s:
        for key in KEYS:
            async with s.put(f"{nodes[0].url}/files/{key}", data=key.encode()) as r:
                assert r.status == 201, await r.text()
        acked = time.monotonic()
        wait_for(lambda: all(listed(n) == set(KEYS) for n in nodes), 3,
                 message="every node lists every new file")  # fmt: skip
        listed_after = time.monotonic() - acked
        stats = [announced(n) for n in nodes]
        # Each key has 4 - 2 replicas - (the gateway, if it is not one) >= 1 member to tell.
        assert sum(s["received"] for s in stats) >= len(KEYS), stats
        assert stats[0]["sent"] >= len(KEYS) and stats[0]["dropped"] == 0, stats

        async with s.delete(f"{nodes[0].url}/files/{KEYS[0]}") as r:
            assert r.status in (200, 204), await r.text()
        wait_for(lambda: all(KEYS[0] not in listed(n) for n in nodes), 3,
                 message="every node stops listing the deleted file")  # fmt: skip
    assert listed_after < 3
