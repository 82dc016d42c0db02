"""The coordinator's read path: find the newest entry among a read quorum of the key's
replicas (core/quorum.py decides), repair the replicas found behind, and stream verified
chunks from a holder, switching holder per chunk on failure or mismatch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from ..core import quorum
from ..core.manifest import ManifestEntry
from ..errors import CorruptData, NotFound, StoreError, Unavailable
from ..storage.chunks import READ_PIECE, sha256_of
from ..storage.store import LocalStore
from .antientropy import AntiEntropy
from .background import Background
from .budget import ByteBudget
from .leases import Leases
from .peers import Peers
from .replica import view_of
from .transport import PeerError

log = logging.getLogger("p2pstore.reads")

LOOKUP_TIMEOUT = 2.0
OWN_COMMIT_WAIT = 2.0  # seconds a read waits for this coordinator's own commit of a write it just acked
READ_BUDGET = 32 << 20  # bytes of chunk buffers all reads through a node hold at once (read-ahead included)
READ_REPAIR_DELAY = 0.5  # seconds before a read pushes the newest entry to replicas found behind


@dataclass
class Resolved:
    """The newest entry for a key among reachable replicas, and who holds it complete."""

    entry: ManifestEntry
    holders: list[str]
    small: bytes | None = None  # a small file's bytes, read from this node with the entry


class Answers:
    """The views a read gathered: typed for the quorum rules, raw for the entries they carry."""

    def __init__(self) -> None:
        self.views: dict[str, quorum.View] = {}
        self.wires: dict[str, Any] = {}

    def add(self, node_id: str, wire: Any) -> None:
        try:
            self.views[node_id] = quorum.View.from_wire(wire)
        except ValueError as exc:  # a malformed answer counts as none
            log.debug("malformed view from %s ignored: %s", node_id, exc)
            return
        self.wires[node_id] = wire["entry"]

    def entry(self, version: str, me: str, local: ManifestEntry | None) -> ManifestEntry:
        """The entry of ``version``: this node's own (already decoded), else a peer's, validated."""
        if local is not None and local.version == version:
            return local
        wire = next(w for n, w in self.wires.items() if w is not None and self.views[n].version == version)
        return ManifestEntry.from_wire(wire)


class ChunkFetcher:
    """One verified chunk from the first of its holders that has a good copy."""

    def __init__(self, me: str, store: LocalStore, peers: Peers, stall: float) -> None:
        self.me = me
        self.store = store
        self.peers = peers
        self.idle = 2 * stall  # a holder silent this long mid-transfer: the next holder is asked
        self.bad_copies_reported = 0

    async def fetch(self, sha: str, holders: list[str], bad: set[str], count_bad: bool = True) -> bytes:
        """The chunk's verified bytes in one object (repair and compose write it whole)."""
        pieces = await self.fetch_pieces(sha, holders, bad, count_bad, whole=True)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    async def fetch_pieces(
        self, sha: str, holders: list[str], bad: set[str], count_bad: bool = True, whole: bool = False
    ) -> list[bytes]:
        """The chunk's bytes, every one verified, as pieces of at most 1 MiB (one piece when
        ``whole``): a GET sends and frees them one by one."""
        reasons: list[str] = []
        for node_id in holders:
            if node_id in bad:
                continue
            try:
                if node_id == self.me:
                    if whole:
                        return [await self.store.read_chunk(sha)]
                    return await self.store.read_chunk_pieces(sha)
                address = self.peers.address(node_id)
                transport = self.peers.transport
                piece = None if whole else READ_PIECE
                pieces = await transport.get_pieces(address, f"/chunk/{sha}", self.idle, piece)
                if sha256_of(pieces) != sha:
                    raise CorruptData(f"chunk {sha[:12]} from {node_id} failed verification")
                return pieces
            except (PeerError, StoreError, OSError) as exc:
                bad.add(node_id)
                if count_bad:
                    self.bad_copies_reported += 1
                reasons.append(f"{node_id}: {getattr(exc, 'message', exc)}")
                log.warning("replica %s could not serve chunk %s: %s", node_id, sha[:12], exc)
        raise Unavailable(
            f"no replica could serve a verified copy of chunk {sha[:12]} ({'; '.join(reasons)})"
        )


class ReadCoordinator:
    """Reads through this node, for any key (it is the gateway, a replica or neither)."""

    def __init__(
        self, me: str, store: LocalStore, peers: Peers, leases: Leases, antientropy: AntiEntropy,
        fetcher: ChunkFetcher, background: Background, write_quorum: int, chunk_size: int,
        budget: ByteBudget | None = None,
    ) -> None:  # fmt: skip
        self.me = me
        self.store = store
        self.peers = peers
        self.leases = leases
        self.antientropy = antientropy
        self.fetcher = fetcher
        self.background = background
        self.write_quorum = write_quorum
        self.chunk_size = chunk_size
        self.budget = budget or ByteBudget(READ_BUDGET)  # chunk buffers of every read through this node
        self.read_repairs_pushed = 0  # newest entries sent to replicas a read found behind
        self.own_commits: dict[str, asyncio.Task] = {}  # key -> this node's own commit, running
        self._pushing: set[str] = set()  # versions with a read repair pending (one push each)
        self._read_turn = 0

    # ---- finding the newest entry ----
    async def resolve(self, key: str, r: int | None = None, lease: bool = True) -> Resolved:
        """Find the newest entry among this node and a read quorum of the key's replicas.

        ``lease=False``: a quorum read even where read leases are held, and one that does not
        ask for them. Leases are for keys clients read; a node that holds them makes every
        write of its keys report and wait for it, so reads the node makes for itself (the S3
        registry's records, every few seconds) must not keep them in force during writes.

        A quorum (R - W + 1, this node included when it is a replica) meets every write that W
        replicas acknowledged. When the answers disagree (another version, a missing entry, an
        incomplete copy) or a replica does not answer, the key's other reachable replicas are
        asked too: a lagging replica costs one more lookup, never a stale read. If no reachable
        replica holds a complete copy, the replicas this node believes are down are asked as
        well (briefly): just after a partition heals, a node's view of who is alive lags
        behind, and a read should not fail for that.
        """
        self.peers.check_joined()
        me = self.me
        replicas = self.peers.replicas_for(key)
        await self._own_commit_done(key)
        local, complete, small = self.store.get_for_read(key)
        lease_read = r is None and lease and self.leases.may_read_locally(replicas) and complete
        if lease_read and local is not None and not local.deleted:
            self.leases.lease_reads += 1  # no write is acknowledged without us: no lookup
            return Resolved(local, [me, *(n for n in replicas if n != me)], small)
        answers = Answers()
        answers.add(me, view_of(local, complete))
        others = [n for n in self.peers.reachable(replicas) if n != me]
        q = quorum.read_quorum(len(replicas), self.write_quorum, r)
        need = q - (me in replicas)
        if 0 < need < len(others):  # spread the lookups over the replicas
            self._read_turn = turn = (self._read_turn + 1) % len(others)
            others = others[turn:] + others[:turn]
        await self._gather(key, others[:need], answers)
        if not quorum.settled(answers.views, me, replicas, need):
            await self._gather(key, others[need:], answers)
        verdict = quorum.decide(answers.views, me)
        absent = verdict is None or verdict.deleted
        if absent and not quorum.may_deny(answers.views, replicas, q):
            await self._ask_the_rest(key, replicas, answers)
            verdict = quorum.decide(answers.views, me)
            if verdict is None and not quorum.may_deny(answers.views, replicas, q):
                answered = quorum.answered(answers.views, replicas)
                raise Unavailable(
                    f"{key} is on none of the {answered} of its {len(replicas)} replicas that answered; "
                    f"{q} are needed to tell that it does not exist (add ?r=1 to accept one)",
                    {"answered": answered, "replicas": len(replicas), "read_quorum": q},
                )
        resolved = await self._settle(key, verdict, answers, local)
        if not resolved.holders:
            await self._ask_the_rest(key, replicas, answers)
            resolved = await self._settle(key, quorum.decide(answers.views, me), answers, local)
        if not resolved.holders:
            raise Unavailable(f"no reachable replica holds a complete copy of {key}")
        if resolved.entry is local and resolved.holders[0] == me:
            resolved.small = small
        return resolved

    async def _settle(
        self, key: str, verdict: quorum.Verdict | None, answers: Answers, local: ManifestEntry | None
    ) -> Resolved:
        """Act on the verdict: bring this node's manifest and the stale replicas up to the
        winning entry, then answer it (NotFound for none or a tombstone)."""
        if verdict is None:
            raise NotFound(f"key not found: {key}")
        best = answers.entry(verdict.version, self.me, local)
        if verdict.reader_behind:
            # Read repair of this node's manifest; the repairer then fetches the data if this
            # node is a replica (the entry alone would leave it incomplete until a full pass).
            await self.antientropy.apply_remote_entries([best])
        if verdict.stale and best.version not in self._pushing:
            self._pushing.add(best.version)
            self.background.spawn(self._push_entry(list(verdict.stale), best))
        if verdict.deleted:
            raise NotFound(f"key not found: {key}")
        return Resolved(best, list(verdict.holders))

    async def _ask_the_rest(self, key: str, replicas: list[str], answers: Answers) -> None:
        """Every replica not asked yet, those believed down included: briefly, when the ones
        believed up could not settle the read."""
        await self._gather(key, [n for n in replicas if n not in answers.views], answers)

    async def _gather(self, key: str, peers: list[str], answers: Answers) -> None:
        if len(peers) == 1:  # the common quorum read: no gather, no extra tasks
            with contextlib.suppress(Exception):
                answers.add(peers[0], await self._remote_view(peers[0], key))
            return
        results = await asyncio.gather(*(self._remote_view(n, key) for n in peers), return_exceptions=True)
        for node_id, result in zip(peers, results, strict=True):
            if not isinstance(result, BaseException):
                answers.add(node_id, result)

    async def _remote_view(self, node_id: str, key: str) -> Any:
        return (await self.peers.views(node_id, [key], timeout=LOOKUP_TIMEOUT))[0]

    def lookup_local(self, key: str) -> Resolved:
        """This node's own complete copy, or NotFound (``?local=1``)."""
        entry = self.store.get(key)
        if entry is None or entry.deleted or not self.store.has_all_chunks(entry):
            raise NotFound(f"no local copy of {key} on {self.me}")
        return Resolved(entry, [self.me])

    async def _push_entry(self, nodes: list[str], entry: ManifestEntry) -> None:
        """Read repair of the replicas a read found behind: send them the newest entry (they
        apply it if it is still newer, then fetch its data), instead of leaving them stale until
        anti-entropy, which runs only every 15 s while clients are served. A replica that missed
        a write it should have had would otherwise answer older reads from coordinators whose
        quorum it is in. Sent after a short delay: a read racing a write usually finds the last
        replica a few milliseconds short of its own commit, which then lands with the data;
        pushed earlier, the bare entry would make that replica fetch the data a second time."""
        try:
            await asyncio.sleep(READ_REPAIR_DELAY)
            wire = {"entries": [entry.to_wire()]}
            for node_id in nodes:
                try:
                    await self.peers.call(node_id, "/read-repair", wire, timeout=5)
                    self.read_repairs_pushed += 1
                except PeerError as exc:  # down: anti-entropy will do
                    log.debug("read repair of %s on %s failed: %s", entry.key[:80], node_id, exc)
        finally:
            self._pushing.discard(entry.version)

    # ---- this node's own commit of a write it just acknowledged ----
    def note_own_commit(self, key: str, task: asyncio.Task) -> None:
        """Remember this node's own commit of ``key`` while it runs (see _own_commit_done)."""
        self.own_commits[key] = task

        def forget(done: asyncio.Task) -> None:
            if self.own_commits.get(key) is done:
                del self.own_commits[key]

        task.add_done_callback(forget)

    async def _own_commit_done(self, key: str) -> None:
        """Let this coordinator's own commit of a write it just acknowledged finish before a read
        of that key looks: the acknowledgement needs only W commits, and when the others came
        first a read right after the write would otherwise fetch every chunk from another
        replica, whose copy left its page cache (``--cache-written gateway``), while this node's
        own copy is a moment from done. Bounded; a commit that fails or hangs is read around."""
        task = self.own_commits.get(key)
        if task is not None and not task.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(task), OWN_COMMIT_WAIT)

    # ---- streaming the bytes ----
    async def read_range(self, resolved: Resolved, start: int, end: int) -> AsyncIterator[bytes]:
        """Verified bytes [start, end), switching replica per chunk on failure; one chunk ahead.
        Raises rather than serve a byte that fails its sha256."""
        entry = resolved.entry
        bad: set[str] = set()
        if resolved.small is not None and entry.chunks == (entry.sha256,):
            try:  # read with the entry: no second query
                data = self.store.check_small_chunk(entry.sha256, resolved.small)
            except CorruptData:
                bad.add(self.me)  # the other holders are asked below
                self.fetcher.bad_copies_reported += 1
            else:
                yield data[start:end]
                return
        fetch = self.fetcher.fetch
        spans = chunk_spans(entry, self.chunk_size, self.store)
        if spans is None:  # chunk lengths unknown: read them in order, learning offsets as we go
            offset = 0
            for sha in entry.chunks:
                if offset >= end:
                    return
                data = await fetch(sha, resolved.holders, bad)
                if offset + len(data) > start:
                    yield data[max(0, start - offset) : min(len(data), end - offset)]
                offset += len(data)
            return
        wanted = [(sha, off, length) for sha, off, length in spans if off + length > start and off < end]
        budget, holders = self.budget, resolved.holders
        held = 0  # bytes of the budget this read holds: its chunk in hand plus the one read ahead
        ahead: asyncio.Future[list[bytes]] | None = None
        try:
            for i, (sha, offset, length) in enumerate(wanted):
                if ahead is None:  # nothing read ahead: wait for room, holding nothing
                    await budget.acquire(length)
                    held += length
                    pieces = await self.fetcher.fetch_pieces(sha, holders, bad)
                else:
                    pieces, ahead = await ahead, None
                if i + 1 < len(wanted) and budget.try_acquire(nxt := wanted[i + 1][2]):
                    held += nxt  # read ahead while this chunk is sent, when the budget has room
                    ahead = asyncio.ensure_future(self.fetcher.fetch_pieces(wanted[i + 1][0], holders, bad))
                pieces.reverse()  # popped from the end: each piece is freed once it is sent
                pos = offset
                while pieces:
                    piece = pieces.pop()
                    lo, hi = max(0, start - pos), min(len(piece), end - pos)
                    pos += len(piece)
                    if hi > lo:
                        yield piece if (lo, hi) == (0, len(piece)) else piece[lo:hi]
                    del piece
                budget.release(length)
                held -= length
        finally:
            if ahead is not None and not ahead.done():
                ahead.cancel()
            budget.release(held)


def chunk_spans(
    entry: ManifestEntry, chunk_size: int, store: LocalStore
) -> list[tuple[str, int, int]] | None:
    """(sha, offset, length) for each chunk: from the entry's stored lengths (a composed object,
    whose parts each end with a short chunk), else from the usual chunk size, else from local
    files; None when nothing tells (a file written with another chunk size, held elsewhere).
    Stored lengths always win: uneven chunks can fit the count-and-size test by chance."""
    n = len(entry.chunks)
    if n == 0:
        return []
    if entry.lengths:
        spans, offset = [], 0
        for sha, length in zip(entry.chunks, entry.lengths, strict=True):
            spans.append((sha, offset, length))
            offset += length
        return spans
    if n == 1:
        return [(entry.chunks[0], 0, entry.size)]
    if (n - 1) * chunk_size < entry.size <= n * chunk_size:
        last = entry.size - (n - 1) * chunk_size
        return [
            (sha, i * chunk_size, chunk_size if i < n - 1 else last) for i, sha in enumerate(entry.chunks)
        ]
    spans, offset = [], 0
    for sha in entry.chunks:  # written with another chunk size: ask the local files
        length = store.chunk_length(sha)
        if length is None:
            return None
        spans.append((sha, offset, length))
        offset += length
    return spans
