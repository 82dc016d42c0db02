"""Commit by reference: a new object made of chunks the cluster already holds (S3's Complete of
a multipart upload, CopyObject, UploadPartCopy), without the bytes passing through the gateway.

Chunks are content-addressed, so an object composed of other objects' chunks is only a new
entry naming them. What makes that safe is the commit, not the entry: the coordinator sends each
of the new key's replicas the chunk list and, for each chunk, the nodes that hold it; a replica
*prepares* by fetching every chunk it lacks from those holders (node to node, each checked
against its sha256, written durably), and only then is asked to *commit* the entry, which it
does after checking again, under the GC lock, that every chunk is here. So W acknowledgements
mean W replicas hold every byte, exactly as for a streamed write, and normal repair (which
fetches from the key's own replicas) can always heal the rest, even once the parts are gone.
When the new key's replicas already hold the chunks (every 3-node cluster), no byte moves.

The whole-object sha256 cannot be derived from the parts' hashes: one replica (the coordinator
when it is one) computes it by reading its local, verified chunks in order.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.hlc import HybridLogicalClock
from ..core.manifest import ManifestEntry
from ..errors import BadRequest, CorruptData, PayloadTooLarge, Refused, Unavailable, full_disk_refused
from ..storage.store import LocalStore
from .fanout import first_n
from .leases import Ack, acked_ok
from .reads import ChunkFetcher, Resolved, chunk_spans
from .replica import not_ahead
from .transport import PeerError
from .versioning import with_marks

if TYPE_CHECKING:
    from .writes import WriteCoordinator, WriteResult

log = logging.getLogger("p2pstore.compose")

PREPARE_TIMEOUT = 600.0  # a replica may fetch a whole object's chunks (or hash them) first
COMMIT_TIMEOUT = 30.0
FETCH_WORKERS = 4  # chunks a replica fetches at once while preparing (memory: 4 chunks)


@dataclass(frozen=True)
class ChunkRef:
    """One chunk of the object to compose: its name, its length, the nodes that hold it."""

    sha: str
    length: int
    holders: tuple[str, ...]


def refs_of(
    resolved: Resolved, chunk_size: int, store: LocalStore, start: int = 0, end: int | None = None
) -> list[ChunkRef] | None:
    """The chunks of ``resolved`` covering bytes [start, end), or None when that range does not
    begin and end on chunk boundaries (or the chunk lengths are unknown here): then the bytes
    must be copied."""
    entry = resolved.entry
    end = entry.size if end is None else end
    spans = chunk_spans(entry, chunk_size, store)
    if spans is None or start >= end:
        return None
    picked = [(sha, length) for sha, off, length in spans if off >= start and off + length <= end]
    if sum(length for _, length in picked) != end - start:
        return None
    holders = tuple(resolved.holders)
    return [ChunkRef(sha, length, holders) for sha, length in picked]


def stored_lengths(lengths: Sequence[int], chunk_size: int) -> tuple[int, ...]:
    """The lengths an entry must store: none when the chunks are laid out as a streamed write
    would lay them out (every chunk full but the last), else all of them."""
    if all(n == chunk_size for n in lengths[:-1]) and 0 < lengths[-1] <= chunk_size:
        return ()
    return tuple(lengths)


class ComposeReplica:
    """This node as a replica of a composed object: gather its chunks, then commit its entry."""

    def __init__(
        self, me: str, store: LocalStore, fetcher: ChunkFetcher, chunk_size: int, clock: HybridLogicalClock
    ) -> None:
        self.me = me
        self.clock = clock
        self.store = store
        self.fetcher = fetcher
        self.chunk_size = chunk_size
        self.bytes_fetched = 0  # chunk bytes fetched from other nodes to compose objects

    async def prepare(
        self, chunks: Sequence[str], lengths: Sequence[int], holders: Mapping[str, Sequence[str]],
        want_hash: bool, want_md5: bool = False,
    ) -> dict[str, Any]:  # fmt: skip
        """Make every named chunk present here (fetched from its holders, verified, durable);
        with ``want_hash`` also return the whole object's sha256 (and with ``want_md5`` its
        MD5, S3's ETag), read from the local chunks."""
        wanted: dict[str, int] = {}
        for sha, length in zip(chunks, lengths, strict=True):
            if sha not in wanted and not self.store.has_chunk(sha):
                wanted[sha] = length
        todo = iter(wanted.items())

        async def worker() -> int:  # a few chunks in flight: one holder's latency is not the pace
            got = 0
            for sha, length in todo:
                sources = [n for n in holders.get(sha, ()) if n != self.me]
                data = await self.fetcher.fetch(sha, sources, set(), count_bad=False)
                if len(data) != length:
                    raise BadRequest(f"chunk {sha[:12]} is {len(data)} bytes, not {length}")
                with full_disk_refused():
                    await self.store.write_chunk(data, sha)
                got += length
                self.bytes_fetched += length
            return got

        workers = [asyncio.ensure_future(worker()) for _ in range(min(FETCH_WORKERS, len(wanted)))]
        try:
            fetched = sum(await asyncio.gather(*workers))
        except BaseException:
            for w in workers:
                w.cancel()
            raise
        answer: dict[str, Any] = {"fetched": fetched}
        if want_hash:
            answer.update(await self.whole_hash(chunks, lengths, want_md5))
        return answer

    async def whole_hash(
        self, chunks: Sequence[str], lengths: Sequence[int], want_md5: bool
    ) -> dict[str, str]:
        """sha256 (and MD5) of the chunks in order, each read verified; hashed in I/O threads
        (hashlib releases the GIL), the next chunk read while one is hashed."""
        whole = hashlib.sha256()
        md5 = hashlib.md5(usedforsecurity=False) if want_md5 else None

        nxt = asyncio.ensure_future(self.store.read_chunk(chunks[0]))
        try:
            for i, length in enumerate(lengths):
                data = await nxt
                if i + 1 < len(chunks):
                    nxt = asyncio.ensure_future(self.store.read_chunk(chunks[i + 1]))
                if len(data) != length:
                    raise CorruptData(f"chunk {chunks[i][:12]} is {len(data)} bytes, not {length}")
                if md5 is None:
                    await self.store.in_io(whole.update, data)
                else:  # two I/O threads, two cores: the MD5 costs no extra time
                    await asyncio.gather(
                        self.store.in_io(whole.update, data), self.store.in_io(md5.update, data)
                    )
        finally:
            if not nxt.done():
                nxt.cancel()
        return {"sha256": whole.hexdigest(), **({"md5": md5.hexdigest()} if md5 is not None else {})}

    async def commit(self, entry: ManifestEntry) -> bool:
        """Apply a composed entry once every chunk it names is here (checked under the GC lock,
        so none can go before the entry references it). A small chunk held only inside another
        file's row is stored by name with the entry: that row may be deleted later."""
        if entry.deleted or not entry.chunks:
            raise BadRequest("a composed entry names chunks")
        not_ahead(entry)
        spans = chunk_spans(entry, self.chunk_size, self.store)
        if spans is None:
            raise BadRequest("a composed entry needs known chunk lengths")
        async with self.store.gc_lock.shared():
            small: dict[str, bytes] = {}
            missing: list[str] = []
            for sha, _, _ in spans:
                if sha in small or self.store.chunks.has(sha) or self.store.db.has_loose_small_chunk(sha):
                    continue
                data = await self.store.in_db(self.store.db.small_chunk, sha)
                if data is None:
                    missing.append(sha)
                else:
                    small[sha] = data
            if missing:
                raise Unavailable(
                    f"{len(missing)} chunks of {entry.key[:80]} are not here; nothing committed"
                )
            self.clock.observe(entry.version)  # this node's later versions of the key come after
            with full_disk_refused():
                won = await self.store.apply_entries([entry], small)
        return bool(won)


class Composer:
    """The coordinator's side: prepare on every reachable replica, commit on those prepared."""

    def __init__(self, writes: WriteCoordinator, local: ComposeReplica) -> None:
        self.writes = writes
        self.local = local
        self.composed = 0  # objects this node composed (as their coordinator)

    def refs(self, resolved: Resolved) -> list[ChunkRef] | None:
        """Every chunk of ``resolved`` with its holders (None: lengths unknown here)."""
        return refs_of(resolved, self.writes.config.chunk_size, self.writes.store)

    async def compose(
        self, key: str, refs: Sequence[ChunkRef], content_type: str,
        meta: Mapping[str, str] | None = None, w: int | None = None, md5: bool = False,
    ) -> WriteResult:  # fmt: skip
        """Make ``key`` the concatenation of ``refs``; acknowledged once W replicas hold every
        chunk durably and committed the entry. ``md5``: keep the object's MD5 as meta "md5"
        (computed by the replica that computes its sha256)."""
        from .writes import WriteResult, checked_meta

        wc = self.writes
        if not refs:
            raise BadRequest("nothing to compose")
        limit = wc.config.max_upload_bytes
        if limit and sum(r.length for r in refs) > limit:
            raise PayloadTooLarge(f"object larger than the limit of {limit} bytes")
        replicas, targets, w = wc.write_targets(key, w)
        pairs = with_marks(wc.store, key, checked_meta(meta), False)  # versioned folders
        chunks = [r.sha for r in refs]
        lengths = [r.length for r in refs]
        holders: dict[str, list[str]] = {}
        for r in refs:
            known = holders.setdefault(r.sha, [])
            known.extend(n for n in r.holders if n not in known)
        msg = {"chunks": chunks, "lengths": lengths, "holders": holders, "md5": md5}
        hasher = wc.me if wc.me in targets else targets[0]
        prep = {n: wc.background.spawn(self._prepare(n, msg, n == hasher)) for n in targets}
        await self._enough_prepared(prep, w, 2 * wc.config.stall_timeout)
        ok = {n: t.result() for n, t in prep.items() if succeeded(t)}
        errors = [t.exception() for t in prep.values() if t.done() and not t.cancelled() and not succeeded(t)]
        late = {n: t for n, t in prep.items() if not t.done()}
        if len(ok) < w:
            refusal = next((e for e in errors if isinstance(e, Refused | BadRequest)), None)
            if refusal is not None and not ok:
                raise refusal
            raise Unavailable(
                f"only {len(ok)} of {len(targets)} replicas could gather the chunks, {w} needed",
                {"errors": [str(e) for e in errors][:5], "outcome": "not written"},
            )
        hashed = ok.get(hasher)
        if hashed is None:  # the hasher failed: another prepared replica reads its copy
            hashed = await self._prepare(next(iter(ok)), msg, True)
        if md5:
            pairs = tuple(sorted({**dict(pairs), "md5": hashed["md5"]}.items()))
        entry = ManifestEntry(
            key=key, version=wc.new_version(), size=sum(lengths), sha256=hashed["sha256"],
            chunks=tuple(chunks), content_type=content_type, deleted=False, modified=time.time(), meta=pairs,
            lengths=stored_lengths(lengths, wc.config.chunk_size),
        ).validate()  # fmt: skip
        fetched = sum(int(r.get("fetched", 0)) for r in ok.values())
        tasks = {n: wc.background.spawn(self._commit(n, entry)) for n in ok}
        for node_id, task in late.items():  # still gathering: it commits when it is done
            wc.background.spawn(self._commit_when_prepared(node_id, task, entry))
        if (own := tasks.get(wc.me)) is not None:
            wc.reads.note_own_commit(key, own)
        acks, errors = await first_n(list(tasks.values()), w)
        done = [node_id for node_id, _, _ in acks]
        if len(done) < w:
            raise Unavailable(
                f"only {len(done)} replicas committed, {w} needed; the write may or may not persist",
                {"committed_on": sorted(done), "outcome": "unknown", "errors": [str(e) for e in errors][:5]},
            )
        await wc.leases.settle(replicas, acks, tasks)
        if wc.me not in ok:
            await wc.store.apply_entries([entry])
        wc.announcer.announce(entry, replicas)
        log.debug(
            "%s composed %s from %d chunks (%d bytes fetched node to node)",
            wc.me,
            key[:80],
            len(chunks),
            fetched,
        )
        self.composed += 1
        finished = [n for n, t in tasks.items() if n not in done and acked_ok(t)]
        return WriteResult(entry, sorted(done + finished))

    @staticmethod
    async def _enough_prepared(prep: Mapping[str, asyncio.Task], w: int, grace: float) -> None:
        """Until every replica prepared, or W did and the rest had ``grace`` seconds more: a
        frozen replica is not waited for (the entry reaches it later, and repair fetches the
        chunks from the W that hold them)."""
        pending = set(prep.values())
        while pending:
            ok = sum(1 for t in prep.values() if succeeded(t))
            if ok >= w:
                await asyncio.wait(pending, timeout=grace)
                return
            if ok + len(pending) < w:
                return
            _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)

    async def _commit_when_prepared(self, node_id: str, task: asyncio.Task, entry: ManifestEntry) -> None:
        """A replica that finished gathering after the write was decided commits then."""
        try:
            await task
            await self._commit(node_id, entry)
        except Exception as exc:  # anti-entropy brings it the entry, repair the chunks
            log.debug("late compose commit of %s on %s failed: %s", entry.key[:80], node_id, exc)

    async def _prepare(self, node_id: str, msg: dict[str, Any], want_hash: bool) -> dict[str, Any]:
        if node_id == self.writes.me:
            return await self.local.prepare(
                msg["chunks"], msg["lengths"], msg["holders"], want_hash, msg["md5"]
            )
        answer = await self.writes.peers.call(
            node_id, "/compose-prepare", {**msg, "hash": want_hash}, timeout=PREPARE_TIMEOUT
        )
        wanted = ("sha256", "md5") if want_hash and msg["md5"] else ("sha256",) if want_hash else ()
        if not isinstance(answer, dict) or not all(isinstance(answer.get(k), str) for k in wanted):
            raise Unavailable(f"{node_id} answered compose-prepare with nonsense")
        return answer

    async def _commit(self, node_id: str, entry: ManifestEntry) -> Ack:
        wc = self.writes
        if node_id == wc.me:
            await self.local.commit(entry)
            return node_id, wc.leases.report(entry.key), time.monotonic()
        try:
            answer = await wc.peers.call(
                node_id, "/compose-commit", {"entry": entry.to_wire()}, timeout=COMMIT_TIMEOUT
            )
        except PeerError as exc:
            raise Unavailable(f"{node_id} did not commit: {exc}") from exc
        report = answer.get("leases") if isinstance(answer, dict) else None
        return node_id, report if isinstance(report, dict) else {}, time.monotonic()


def succeeded(task: asyncio.Future) -> bool:
    return task.done() and not task.cancelled() and task.exception() is None
