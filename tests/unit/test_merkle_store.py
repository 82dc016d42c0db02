"""The node's Merkle tree stays equal to one rebuilt from scratch: a hypothesis state machine
drives a real LocalStore (SQLite on disk) through writes, deletes, repairs (entries from peers,
older or newer), tombstone purges and restarts, and after every step compares the tree the store
maintains incrementally with a tree built anew from every stored entry. Clean restarts load the
tree saved at close; crashes rebuild it."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from p2pstore.core.hlc import make_version
from p2pstore.core.manifest import ManifestEntry, entry_hash, merge
from p2pstore.core.merkle import MerkleTree, leaf_of
from p2pstore.storage.store import LocalStore

KEYS = st.sampled_from(
    ["a", "a/b", "photos/1.jpg", "photos/2.jpg", ".p2pstore/s3/buckets/x", ".p2pstore/versions/a/1", "ü/ß"]
)


def live(key: str, ms: int, body: bytes) -> ManifestEntry:
    sha = hashlib.sha256(body).hexdigest()
    return ManifestEntry(
        key, make_version(ms, 0, "node-a"), len(body), sha, (sha,), "text/plain", False, ms / 1000
    )


class TreeMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="p2pstore-merkle-"))
        self.loop = asyncio.new_event_loop()
        self.store = LocalStore(self.dir, chunk_size=1 << 20, fsync="never")
        self.model: dict[str, ManifestEntry] = {}
        self.clock = 1_700_000_000_000

    def _apply(self, e: ManifestEntry, body: bytes | None = None) -> None:
        small = {e.sha256: body} if body is not None else None
        self.loop.run_until_complete(self.store.apply_entries([e], small))
        self.model[e.key] = merge(self.model.get(e.key), e)  # type: ignore[assignment]

    @rule(key=KEYS, body=st.binary(max_size=40))
    def write(self, key: str, body: bytes) -> None:
        self.clock += 1
        self._apply(live(key, self.clock, body), body)

    @rule(key=KEYS)
    def delete(self, key: str) -> None:
        self.clock += 1
        self._apply(ManifestEntry.tombstone(key, make_version(self.clock, 0, "node-a"), self.clock / 1000))

    @rule(key=KEYS, offset=st.integers(-5, 5), body=st.binary(max_size=8), tombstone=st.booleans())
    def repair(self, key: str, offset: int, body: bytes, tombstone: bool) -> None:
        """An entry from a peer, as anti-entropy or repair applies it: older ones lose."""
        ms = self.clock + offset
        if tombstone:
            self._apply(ManifestEntry.tombstone(key, make_version(ms, 1, "node-b"), ms / 1000))
        else:
            self._apply(live(key, ms, body))

    @rule()
    def purge(self) -> None:
        tombstones = self.store.db.tombstones_before(float("inf"))
        purged = self.loop.run_until_complete(self.store.purge_tombstones(tombstones))
        assert purged == len(tombstones)
        for t in tombstones:
            del self.model[t.key]

    @rule()
    def restart(self) -> None:
        before = self.store.merkle()
        self.store.close()
        self.store = LocalStore(self.dir, chunk_size=1 << 20, fsync="never")
        assert self.store.merkle() == before
        assert self.store.db.tree_source == "saved"

    @rule()
    def crash(self) -> None:
        """Stop without a clean close (nothing saved): the next start rebuilds from the rows, and
        a tree saved at an earlier clean close was forgotten by the first write after it."""
        store = self.store
        store._io.shutdown(wait=True)
        store._dbw.shutdown(wait=True)
        store.db.close(save_tree=False)
        store.lock.release()
        self.store = LocalStore(self.dir, chunk_size=1 << 20, fsync="never")

    @invariant()
    def tree_equals_rebuilt(self) -> None:
        stored = list(self.store.db.iter_all())
        assert {e.key: e for e in stored} == self.model
        scratch = MerkleTree.build((leaf_of(e.key), entry_hash(e)) for e in stored)
        assert self.store.merkle() == scratch
        assert self.store.db.build_merkle() == scratch

    def teardown(self) -> None:
        self.store.close()
        self.loop.close()
        shutil.rmtree(self.dir, ignore_errors=True)


TreeMachine.TestCase.settings = settings(
    max_examples=30, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_tree_equals_rebuilt = TreeMachine.TestCase
