"""A handoff pass over real stores on disk: it walks the manifest by pages (never holding every
chunk name) and drops exactly the copies this node no longer needs, keeping a chunk that a
file it still replicates shares (as a chunk file or inline bytes) and a file whose owners have
not confirmed it. Four stores stand for four nodes; the peers' answers come from their stores
(the node-to-node call is what this test leaves out: test_housekeeping runs it for real)."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from p2pstore.cluster import housekeeping
from p2pstore.cluster.housekeeping import Housekeeper
from p2pstore.config import NodeConfig
from p2pstore.core.hlc import make_version
from p2pstore.core.manifest import ManifestEntry
from p2pstore.core.placement import replicas as place
from p2pstore.storage.store import LocalStore

IDS = ["me", "n1", "n2", "n3"]
MiB = 1024 * 1024


async def one_piece(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def put(store: LocalStore, key: str, data: bytes) -> ManifestEntry:
    blob = await store.write_stream(one_piece(data))
    entry = ManifestEntry(
        key=key, version=make_version(1000, 0, "n1"), size=blob.size, sha256=blob.sha256,
        chunks=tuple(blob.chunks), content_type="application/octet-stream", deleted=False,
        modified=time.time(),
    )  # fmt: skip
    assert await store.commit(blob, entry)
    return entry


def keys_where(mine: bool, count: int, prefix: str) -> list[str]:
    """``count`` keys this node ("me") replicates (``mine``) or not, among IDS, R=3."""
    found, i = [], 0
    while len(found) < count:
        key = f"{prefix}/{i}"
        if ("me" in place(key, IDS, 3)) == mine:
            found.append(key)
        i += 1
    return found


async def test_a_pass_hands_off_surplus_and_keeps_what_owned_files_share(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(housekeeping, "HANDOFF_PAGE", 3)  # many pages over a dozen entries
    monkeypatch.setattr(housekeeping, "BATCH", 2)
    stores = {n: LocalStore(tmp_path / n, chunk_size=MiB, fsync="never") for n in IDS}
    try:
        me = stores["me"]
        surplus = keys_where(False, 7, "s")
        owned = keys_where(True, 2, "o")
        body = {k: os.urandom(100_000) for k in surplus}  # chunk files
        body[surplus[1]] = body[owned[0]] = os.urandom(100_000)  # a chunk file an owned file shares
        body[surplus[2]] = body[owned[1]] = b"small, inline, owned too"  # inline bytes shared
        body[surplus[3]] = body[surplus[4]] = os.urandom(100_000)  # shared by two surplus files
        body[surplus[5]] = b"small and only surplus"
        unconfirmed = surplus[6]
        for key, data in body.items():
            await put(me, key, data)
            for node in place(key, IDS, 3):
                if node != "me" and key != unconfirmed:
                    await put(stores[node], key, data)

        def view(node: str, key: str) -> dict[str, Any]:
            entry = stores[node].get(key)
            complete = entry is not None and stores[node].has_all_chunks(entry)
            return {"entry": entry.to_wire() if entry else None, "complete": complete}

        async def views(node: str, keys: list[str], timeout: float | None = None) -> list[dict[str, Any]]:
            return [view(node, k) for k in keys]

        peers = SimpleNamespace(
            me="me", placement_ids=lambda: IDS, replicas_for=lambda k: place(k, IDS, 3),
            is_alive_member=lambda n: True, views=views,
        )  # fmt: skip
        hk = Housekeeper(me, peers, None, lambda: False, NodeConfig())  # type: ignore[arg-type]
        await hk.handoff()

        def here(key: str) -> bool:
            entry = me.get(key)
            return entry is not None and me.has_all_chunks(entry)

        assert all(here(k) for k in owned)  # nothing an owned file needs went
        assert await me.read_chunk(me.get(owned[0]).chunks[0]) == body[owned[0]]
        assert here(surplus[1]) and here(surplus[2])  # their bytes are an owned file's too
        gone = [surplus[0], surplus[3], surplus[4], surplus[5]]
        assert not any(here(k) for k in gone)  # handed off: chunk files, shared ones, inline bytes
        assert here(unconfirmed) and hk._surplus_left  # its owners lack it: kept, tried again
        assert hk.handed_off_files == 6
        for key in body:  # and every owner still holds its files
            for node in place(key, IDS, 3):
                if node != "me" and key != unconfirmed:
                    entry = stores[node].get(key)
                    assert entry is not None and stores[node].has_all_chunks(entry)
        assert hashlib.sha256(body[owned[1]]).hexdigest() == me.get(owned[1]).sha256
    finally:
        for s in stores.values():
            s.close()
