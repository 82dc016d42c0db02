"""EntryAnnouncer's queueing: whom it tells, in what batches, and where it stops."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from p2pstore.cluster import announce
from p2pstore.cluster.announce import EntryAnnouncer
from p2pstore.cluster.transport import PeerError
from p2pstore.core.manifest import ManifestEntry


def entry(i: int) -> ManifestEntry:
    return ManifestEntry(f"k{i}", f"{i:013d}.000000.n", 1, "a" * 64, ("a" * 64,), "x", False, 1.0)


class Peers:
    """Stands in for the transport: records each message per address; ``down`` ones fail."""

    def __init__(self, down: set[str]) -> None:
        self.down = down
        self.messages: dict[str, list[list[str]]] = {}

    async def call(self, address: str, path: str, message: Any, timeout: float) -> Any:
        assert path == "/announce" and timeout > 0
        if address in self.down:
            raise PeerError(address, "connection refused")
        self.messages.setdefault(address, []).append([w["key"] for w in message["entries"]])
        return {"applied": len(message["entries"])}


async def test_entries_go_in_batches_to_live_members_outside_the_replicas_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(announce, "ANNOUNCE_WINDOW", 0.01)
    monkeypatch.setattr(announce, "MAX_BATCH", 2)
    monkeypatch.setattr(announce, "MAX_PENDING", 3)
    members = [SimpleNamespace(id=n, address=f"{n}:1") for n in ("a", "b", "c", "d")]
    peers = Peers(down={"d:1"})
    cluster_peers = SimpleNamespace(me="me", live_peers=lambda: members, transport=peers)
    tasks: list[asyncio.Task] = []

    def spawn(coro: Any) -> asyncio.Task:
        tasks.append(asyncio.ensure_future(coro))
        return tasks[-1]

    announcer = EntryAnnouncer(cluster_peers, spawn)  # type: ignore[arg-type]

    for i in range(5):  # replicas a and "me": b, c and d are told; each queue stops at 3
        announcer.announce(entry(i), ["a", "me"])
    assert len(tasks) == 1, "one flush per window"
    assert announcer.stats() == {"sent": 0, "received": 0, "dropped": 6, "queued": 9}
    await asyncio.gather(*tasks)

    assert peers.messages == {"b:1": [["k0", "k1"], ["k2"]], "c:1": [["k0", "k1"], ["k2"]]}
    assert announcer.stats() == {"sent": 6, "received": 0, "dropped": 9, "queued": 0}  # d's 3 too

    announcer.announce(entry(9), ["b", "c"])  # a new window: a and d (down) are told
    await asyncio.gather(*tasks[1:])
    assert peers.messages["a:1"] == [["k9"]] and announcer.stats()["dropped"] == 10
    announcer.announce(entry(10), ["a", "b", "c", "d"])  # nobody else: nothing queued or spawned
    assert len(tasks) == 2 and announcer.stats()["queued"] == 0
