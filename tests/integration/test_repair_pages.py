"""A full repair pass walks the manifest by key range, a page at a time: it finds every entry
this node lacks data of without a set of every chunk name (the start-up pass of a node holding
1,000,000 files peaked at ~320 MiB with one), and a row holding its own bytes costs no lookup."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from p2pstore.cluster import repair as repair_module
from p2pstore.cluster.repair import Repairer
from p2pstore.core.hlc import make_version
from p2pstore.core.manifest import ManifestEntry
from p2pstore.storage.store import LocalStore

CHUNK = 256 * 1024


def entry(key: str, data: bytes) -> ManifestEntry:
    sha = hashlib.sha256(data).hexdigest()
    return ManifestEntry(
        key=key, version=make_version(int(time.time() * 1000), 0, "n1"), size=len(data), sha256=sha,
        chunks=(sha,), content_type="application/octet-stream", deleted=False, modified=time.time(),
    )  # fmt: skip


@pytest.fixture
async def store(tmp_path: Path):
    s = LocalStore(tmp_path / "store", chunk_size=CHUNK, fsync="never")
    yield s
    s.close()


async def test_a_full_pass_pages_through_the_manifest_and_repairs_what_is_missing(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    inline = [entry(f"small/{i:05d}", b"tiny %d" % i) for i in range(1500)]
    await store.in_db(
        store.db.apply_batch, [(inline, {e.sha256: b"tiny %d" % i for i, e in enumerate(inline)})]
    )
    bodies = {f"big/{i:03d}": os.urandom(CHUNK // 2 + i) for i in range(40)}
    big = [entry(k, d) for k, d in bodies.items()]  # entries whose chunk files this node lacks
    await store.in_db(store.db.apply_batch, [(big, {})])
    held = big[1]  # one of them is here already
    await store.write_chunk(bodies[held.key], held.sha256)
    by_sha = {hashlib.sha256(d).hexdigest(): d for d in bodies.values()}
    elsewhere = {e.key for e in big[::10]}  # placed on other nodes: not this node's to repair

    def replicas_for(key: str) -> list[str]:
        return ["b", "c", "d"] if key in elsewhere else ["me", "b", "c"]

    fetched: list[str] = []

    async def fetch(sha: str, sources: Any, bad: Any, count_bad: bool = True) -> bytes:
        assert list(sources) == ["b", "c"]
        fetched.append(sha)
        return by_sha[sha]

    peers = SimpleNamespace(me="me", replicas_for=replicas_for, is_live=lambda n: True)

    def no_presence_set() -> Any:
        raise AssertionError("a full pass must not read every chunk name into a set")

    monkeypatch.setattr(store, "chunk_presence", no_presence_set)
    monkeypatch.setattr(repair_module, "REPAIR_PAGE", 100)
    pages: list[int] = []
    page_of = store.db.chunk_lists_after

    def counting_page(after: str, limit: int) -> Any:
        rows = page_of(after, limit)
        pages.append(len(rows))
        return rows

    monkeypatch.setattr(store.db, "chunk_lists_after", counting_page)
    looked_up: list[str] = []
    has_chunk = store.has_chunk
    monkeypatch.setattr(store, "has_chunk", lambda sha, small=False: looked_up.append(sha) or has_chunk(sha))

    repairer = Repairer(store, peers, fetch, CHUNK, rate=0)  # type: ignore[arg-type]
    report = await repairer.run_pass()

    wanted = [e for e in big if e.key not in elsewhere and e is not held]
    assert report["files_needing_repair"] == report["files_repaired"] == len(wanted)
    assert sorted(fetched) == sorted(e.sha256 for e in wanted)
    assert all(store.has_chunk(e.sha256) for e in wanted)
    assert not any(has_chunk(e.sha256) for e in big if e.key in elsewhere)
    assert max(pages) == 100 and sum(pages) == len(inline) + len(big)  # every row, a page at a time
    assert not {e.sha256 for e in inline} & set(looked_up)  # rows holding their bytes: no lookup

    fetched.clear()
    again = await repairer.run_pass()  # nothing left to do: nothing fetched
    assert again["files_needing_repair"] == 0 and fetched == []


async def test_the_safety_net_pass_is_paced_until_an_event_asks_for_speed(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = [entry(f"small/{i:05d}", b"tiny %d" % i) for i in range(500)]
    await store.in_db(
        store.db.apply_batch, [(entries, {e.sha256: b"tiny %d" % i for i, e in enumerate(entries)})]
    )
    monkeypatch.setattr(repair_module, "REPAIR_PAGE", 100)
    pauses: list[float] = []
    sleep = repair_module.asyncio.sleep

    async def noting_sleep(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 2:
            repairer.trigger()  # e.g. the scrubber found a bad chunk: finish the pass at once
        await sleep(0)

    monkeypatch.setattr(repair_module.asyncio, "sleep", noting_sleep)
    peers = SimpleNamespace(me="me", replicas_for=lambda k: ["me"], is_live=lambda n: True)
    repairer = Repairer(store, peers, None, CHUNK, rate=0)  # type: ignore[arg-type]
    repairer._full = False  # as the loop leaves it when the timer starts a pass
    await repairer.run_pass(paced=True)
    assert len(pauses) == 2 and all(0 < p <= repair_module.SWEEP_PAUSE for p in pauses)
    pauses.clear()
    repairer._full = False
    await repairer.run_pass(paced=False)  # an event's pass: no pauses at all
    assert pauses == []
