"""The anti-entropy shell's own decisions, over a real LocalStore: a node catching up after its
start answers peers' openings busy (and nothing else changes), and answers them as usual after."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from p2pstore.cluster.antientropy import AntiEntropy
from p2pstore.core.hlc import HybridLogicalClock, make_version
from p2pstore.core.manifest import ManifestEntry
from p2pstore.core.merkle import HASH_BYTES
from p2pstore.storage.store import LocalStore


@pytest.fixture
def store(tmp_path: Path):
    s = LocalStore(tmp_path / "node", chunk_size=1 << 20, fsync="never")
    yield s
    s.close()


def entry(key: str) -> ManifestEntry:
    sha = hashlib.sha256(key.encode()).hexdigest()
    version = make_version(1_700_000_000_000, 0, "n1")
    return ManifestEntry(key, version, 3, sha, (sha,), "application/octet-stream", False, 1.7e9)


async def test_a_node_catching_up_answers_openings_busy_then_as_usual(store: LocalStore) -> None:
    await store.apply_entries([entry("a")])
    ae = AntiEntropy(store, HybridLogicalClock("n1"), None, None, lambda: False, 0.5)  # type: ignore[arg-type]
    opening = {"type": "merkle-root", "shape": [16, 4], "root": b"\0" * HASH_BYTES}
    root = store.merkle().root()
    ae.catching_up = True
    assert await ae.handle(opening) == {"type": "merkle-done", "busy": True}
    assert store.merkle().root() == root and ae.entries_served == 0
    ae.catching_up = False
    answer = await ae.handle(opening)
    assert answer["type"] == "merkle-level" and answer["level"] == 0  # it holds "a": roots differ
