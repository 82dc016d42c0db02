"""Replication through any node: placement, fan-out writes with a W quorum, verified reads
that fail over between replicas chunk by chunk, and manifest anti-entropy.

Writes are two-phase so that nothing half-received ever becomes visible: every replica first
*stages* the streamed body (chunk files fsynced under tmp/), the gateway checks that all staged
copies agree, then asks them to *commit* (promote chunks, apply the manifest entry, fsync) and
acknowledges the client after W commits.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core import placement
from ..core.manifest import ManifestEntry, ManifestSync
from ..errors import (
    BadRequest,
    CorruptData,
    NotFound,
    PayloadTooLarge,
    StoreError,
    Unavailable,
    full_disk_is_507,
)
from ..storage.store import SMALL_CHUNK, LocalStore, StoredBlob
from .announce import EntryAnnouncer
from .codec import ENTRY_HEADER, pack
from .fanout import Sink, fan_out, first_n
from .gossip import Gossip
from .housekeeping import Housekeeper
from .leases import Ack, Leases, acked_ok
from .repair import Repairer, Scrubber
from .transport import MSGPACK, PeerError, Transport

if TYPE_CHECKING:
    from ..node import Node

log = logging.getLogger("p2pstore.replication")

STAGE_TTL = 600.0
OWN_COMMIT_WAIT = 2.0  # seconds a read waits for this gateway's own commit of a write it just acked
ONE_PHASE_MAX = 1024 * 1024  # bodies up to this size travel whole, in one round trip
RPC_BULK_LIMIT = 128 * 1024  # larger one-phase bodies travel as HTTP requests, not RPC frames
LOOKUP_TIMEOUT = 2.0
REPLICAS_CACHE_MAX = 10_000  # memoised placements (cleared when full or placement changes)
BUSY_SYNC_INTERVAL = 15.0  # seconds between manifest exchanges while clients are being served
COMMIT_TIMEOUT = 30.0
WHOLE_HASH_HEADER = "X-P2PStore-Whole-Hash"  # "gateway": the sender hashes the whole file, not the replica
READ_REPAIR_DELAY = 0.5  # seconds before a read pushes the newest entry to replicas found behind


@dataclass
class Staged:
    blob: StoredBlob
    expires: float


@dataclass
class Resolved:
    """The newest entry for a key among reachable replicas, and who holds it complete."""

    entry: ManifestEntry
    holders: list[str]
    small: bytes | None = None  # a small file's bytes, read from this node with the entry


class Cluster:
    """Cluster behaviour of one node (created by Node when it starts serving)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        cfg = node.config
        self.transport = Transport(cfg.cluster_secret)
        self.gossip = Gossip(
            node.node_id,
            cfg.advertise_address,
            cfg.seeds,
            node.store.db,
            self.transport,
            cfg.gossip_interval,
            cfg.dead_after,
            on_change=self._membership_changed,
        )
        self.repairer = Repairer(self, cfg.repair_rate)
        self.scrubber = Scrubber(self, cfg.scrub_rate)
        self.housekeeper = Housekeeper(self)
        self.leases = Leases(self, cfg.read_lease)
        self.announcer = EntryAnnouncer(self, self._spawn)
        node.store.on_corrupt = self.chunk_went_bad
        self.staged: dict[str, Staged] = {}
        self.background: set[asyncio.Task] = set()
        self.sync = ManifestSync()
        self._tasks: list[asyncio.Task] = []
        self.bad_copies_reported = 0
        self.read_repairs_pushed = 0  # newest entries sent to replicas a read found behind
        self.manifest_syncs = 0  # manifest exchanges this node started and completed
        self._pushing: set[str] = set()  # versions with a read repair pending (one push each)
        self._read_turn = 0
        self._no_raw_write: set[str] = set()  # peers without /write-raw (older versions)
        self._replicas_cache: tuple[list[str] | None, dict[str, list[str]]] = (None, {})
        self._own_commits: dict[str, asyncio.Task] = {}  # key -> this gateway's own commit, running

    # ---- lifecycle ----
    def start(self) -> None:
        self.gossip.start()
        self.repairer.start()
        self.scrubber.start()
        self.housekeeper.start()
        self.leases.start()
        self._tasks = [
            asyncio.create_task(self._anti_entropy_loop(), name="manifest-sync"),
            asyncio.create_task(self._expire_staged_loop(), name="staged-expiry"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.repairer.stop()
        await self.scrubber.stop()
        await self.housekeeper.stop()
        await self.leases.stop()
        if self.background:
            await asyncio.wait(self.background, timeout=10)
        await self.gossip.stop()
        for staged in self.staged.values():
            await self.node.store.discard(staged.blob)
        await self.transport.close()

    def _membership_changed(self) -> None:
        self.repairer.wake()  # it looks whether placement changed (flaps alone cost nothing)

    def chunk_went_bad(self, sha: str) -> None:
        """A local chunk failed verification: never serve it again, fetch a good copy."""
        self._spawn(self._quarantine_then_repair(sha))

    async def _quarantine_then_repair(self, sha: str) -> None:
        await self.node.store.quarantine_chunk(sha)
        self.repairer.trigger()

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self.background.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task) -> None:
        """Forget a background task; a failure after the client's answer (a replica write
        still running after the ack) is one warning line, and repair will catch the replica up."""
        self.background.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("background %s failed: %s", task.get_coro().__qualname__, exc)

    # ---- placement ----
    def replicas_for(self, key: str) -> list[str]:
        """The key's replicas (memoised per placement: every request and scan asks)."""
        ids = self.gossip.placement_ids()
        state = self._replicas_cache
        if state[0] is not ids and state[0] != ids:  # placement changed: a new cache, swapped whole
            state = self._replicas_cache = (ids, {})
        cache = state[1]
        cached = cache.get(key)
        if cached is None:
            if len(cache) >= REPLICAS_CACHE_MAX:
                cache.clear()
            cached = cache[key] = placement.replicas(key, ids, self.node.config.replicas)
        return list(cached)

    def check_joined(self) -> None:
        """A node started with seeds serves clients only once it knows its cluster: alone, it
        would take writes onto itself with one copy, and answer reads with "not found"."""
        if not self.gossip.membership.joined():
            seeds = ", ".join(self.gossip.membership.seeds)
            raise Unavailable(
                f"this node has not joined its cluster yet (no answer from its seeds: {seeds}); "
                "retry, or use another node"
            )

    def reachable(self, node_ids: list[str], for_write: bool = False) -> list[str]:
        """The nodes believed up: live to the failure detector and, for a write, not refusing
        connections right now (a crashed peer is refused at once but declared dead only
        seconds later; a write sent to it could only end "outcome unknown"). Reads still ask
        such a peer: it costs one refused connection, and just after a partition heals it may
        hold the newest version."""
        me = self.node.node_id
        return [
            n for n in node_ids
            if n == me or (self.gossip.is_live(n) and not (for_write and self._refusing(n)))
        ]  # fmt: skip

    def _refusing(self, node_id: str) -> bool:
        addr = self.gossip.address_of(node_id)
        return addr is not None and self.transport.refusing(addr)

    def address(self, node_id: str) -> str:
        addr = self.gossip.address_of(node_id)
        if addr is None:
            raise PeerError(node_id, "unknown member")
        return addr

    # ---- writes ----
    async def write(
        self,
        key: str,
        body: AsyncIterator[bytes] | None,
        content_type: str,
        expected_sha: str | None,
        expected_size: int | None,
        w: int,
        tombstone: bool = False,
    ) -> tuple[ManifestEntry, list[str]]:
        """Replicate a new version of ``key`` (a body, or a tombstone) and wait for W commits."""
        limit = self.node.config.max_upload_bytes
        if limit and expected_size is not None and expected_size > limit:
            raise PayloadTooLarge(f"upload larger than the limit of {limit} bytes")
        self.check_joined()
        replicas = self.replicas_for(key)
        targets = self.reachable(replicas, for_write=True)
        # A cluster smaller than W needs only what it has; one that shrank by failures does not:
        # members that are down still count until they are removed (or forgotten after a day).
        w = min(w, self.gossip.membership.known_count())
        if len(targets) < w:
            raise Unavailable(
                f"only {len(targets)} of {len(replicas)} replicas reachable, {w} needed",
                {"reachable": targets, "replicas": replicas, "w": w, "outcome": "not written"},
            )
        version = self.node.new_version()
        modified = time.time()
        small: bytes | None = None
        if tombstone:
            entry = ManifestEntry.tombstone(key, version, modified)
            staged: dict[str, str | None] = {t: None for t in targets}
        elif (
            body is not None
            and expected_size is not None
            and expected_size <= min(ONE_PHASE_MAX, self.node.config.chunk_size)
        ):
            # Small file: read it whole (bounded) and replicate in one round trip per replica.
            small = await read_small(body, expected_size)
            sha = hashlib.sha256(small).hexdigest()
            if expected_sha and sha != expected_sha:
                raise BadRequest("X-Content-SHA256 does not match the body; nothing stored")
            entry = ManifestEntry(
                key=key, version=version, size=len(small), sha256=sha,
                chunks=(sha,) if small else (), content_type=content_type, deleted=False,
                modified=modified,
            )  # fmt: skip
            staged = {t: None for t in targets}
        else:
            assert body is not None
            staged, info = await self._stage_all(targets, body, expected_sha, expected_size, w)
            entry = ManifestEntry(
                key=key, version=version, size=info["size"], sha256=info["sha256"],
                chunks=tuple(info["chunks"]), content_type=content_type, deleted=False,
                modified=modified,
            )  # fmt: skip
        tasks = {
            node_id: self._spawn(self._commit_one(node_id, upload, entry, small))
            for node_id, upload in staged.items()
        }
        if (own := tasks.get(self.node.node_id)) is not None:
            self._note_own_commit(key, own)
        acks, errors = await first_n(list(tasks.values()), w)
        done = [node_id for node_id, _, _ in acks]
        refusal = next((e for e in errors if isinstance(e, StoreError) and e.status in (400, 413, 507)), None)
        if not done and refusal is not None:
            raise refusal  # every replica refused for the same reason the client should see
        if len(done) < w:
            # Some replicas may have committed: the write is not acknowledged, but it may
            # still appear (outcome unknown), unlike a 503 raised before any commit.
            raise Unavailable(
                f"only {len(done)} replicas committed, {w} needed; the write may or may not persist",
                {"committed_on": sorted(done), "outcome": "unknown", "errors": [str(e) for e in errors][:5]},
            )
        await self.leases.settle(replicas, acks, tasks)
        if self.node.node_id not in staged:
            await self.node.store.apply_entries([entry])  # the gateway's manifest knows it too
        self.announcer.announce(entry, replicas)  # and so do the members outside the replicas
        late = [n for n, t in tasks.items() if n not in done and acked_ok(t)]
        return entry, sorted(done + late)

    async def _stage_all(
        self,
        targets: list[str],
        body: AsyncIterator[bytes],
        expected_sha: str | None,
        expected_size: int | None,
        w: int,
    ) -> tuple[dict[str, str | None], dict[str, Any]]:
        """Stream the body to every target; return {node: upload id} of those that staged it.

        The whole-file sha256 is computed here, once, as the pieces pass (64 KiB at a time on
        the event loop); replicas hash only their chunks, which name them. Replicas used to
        hash every byte twice each: two of the six passes over each byte of an R=3 write.
        """
        uploads = {t: uuid.uuid4().hex for t in targets}
        sinks = [Sink(t) for t in targets]
        for sink in sinks:
            sink.start(self._stage_consumer(sink.node_id, uploads[sink.node_id]))
        whole = hashlib.sha256()

        async def hashed() -> AsyncIterator[bytes]:
            async for piece in body:
                whole.update(piece)
                yield piece

        try:
            await fan_out(hashed(), sinks)
        except BaseException:
            self._spawn(self._abort_all(uploads))
            raise
        results = await asyncio.gather(*(s.task for s in sinks), return_exceptions=True)
        ok: dict[str, dict[str, Any]] = {}
        errors: list[BaseException] = []
        for sink, result in zip(sinks, results, strict=True):
            if isinstance(result, BaseException):
                errors.append(result)
            else:
                ok[sink.node_id] = result
        digest = whole.hexdigest()
        if expected_sha and expected_sha != digest and ok:  # ok: the whole body went through
            errors.append(BadRequest(
                "X-Content-SHA256 does not match the body; nothing stored",
                {"expected": expected_sha, "actual": digest},
            ))  # fmt: skip
        bad_request = next((e for e in errors if isinstance(e, BadRequest)), None)
        # The chunk list names every byte in order: equal lists mean equal bodies (an older
        # replica also reports its own whole-file hash; it is not needed).
        infos = {(r["size"], tuple(r["chunks"])) for r in ok.values()}
        if bad_request is not None or len(ok) < w or len(infos) != 1:
            self._spawn(self._abort_all(uploads))
            if bad_request is not None:
                raise bad_request
            if len(infos) > 1:
                raise StoreError("replicas received different bytes; nothing stored", status=500)
            first = next((e for e in errors if isinstance(e, StoreError)), None)
            if first is not None and first.status in (413, 507) and not ok:
                raise first
            raise Unavailable(
                f"only {len(ok)} of {len(targets)} replicas stored the upload, {w} needed",
                {"errors": [str(e) for e in errors][:5]},
            )
        if expected_size is not None and next(iter(ok.values()))["size"] != expected_size:
            self._spawn(self._abort_all(uploads))
            raise BadRequest("body shorter than Content-Length")
        failed = {t: uploads[t] for t in targets if t not in ok}
        if failed:
            self._spawn(self._abort_all(failed))
        return {t: uploads[t] for t in ok}, {**next(iter(ok.values())), "sha256": digest}

    def _stage_consumer(self, node_id: str, upload: str):
        async def consume(body: AsyncIterator[bytes]) -> dict[str, Any]:
            if node_id == self.node.node_id:
                return await self.stage_local(upload, body, None, whole_hash=False, own=True)
            # The gateway hashes the whole file (_stage_all); older replicas ignore the header.
            headers = {"Content-Type": "application/octet-stream", WHOLE_HASH_HEADER: "gateway"}
            try:
                return await self.transport.put_stream(
                    self.address(node_id), f"/stage/{upload}", body, headers
                )
            except PeerError as exc:
                if exc.status in (413, 507):
                    raise StoreError(f"replica {node_id} refused: {exc}", status=exc.status) from exc
                raise

        return consume

    async def stage_local(
        self, upload: str, body: AsyncIterator[bytes], expected_sha: str | None, whole_hash: bool = True,
        own: bool = False,
    ) -> dict:  # fmt: skip
        """Stage an upload here; ``own``: this node is its gateway (else a peer sent it)."""
        store = self.node.store
        blob = await store.write_stream(
            body, expected_sha, self.node.config.max_upload_bytes, whole_hash=whole_hash,
            cached=self.keep_cached(own),
        )  # fmt: skip
        self.staged[upload] = Staged(blob, time.monotonic() + STAGE_TTL)
        return {"size": blob.size, "sha256": blob.sha256, "chunks": list(blob.chunks)}

    def keep_cached(self, own: bool) -> bool:
        """Whether chunk files written for a write stay in the page cache: the gateway's own
        copy does (reads of a new file mostly come through it); with ``--cache-written
        gateway`` (the default) the other replicas' copies leave it once fsynced."""
        return own or self.node.config.cache_written == "all"

    async def commit_local(self, upload: str | None, entry: ManifestEntry) -> bool:
        blob = None
        if upload is not None:
            staged = self.staged.pop(upload, None)
            if staged is None:
                raise NotFound("no such staged upload (expired or aborted)")
            blob = staged.blob
            hash_differs = blob.sha256 is not None and blob.sha256 != entry.sha256
            if blob.size != entry.size or blob.chunks != entry.chunks or hash_differs:
                await self.node.store.discard(blob)
                raise BadRequest("entry does not match the staged upload")
        self.node.clock.observe(entry.version)
        return await self.node.store.commit(blob, entry)

    async def commit_small_local(self, entry: ManifestEntry, data: bytes, hashed: bool = False) -> bool:
        """One-phase write of a small file: the bytes arrive with their entry.

        ``hashed``: this process computed ``entry.sha256`` from these very bytes (the gateway's
        own replica), so they are not hashed again; bytes from a peer always are.
        """
        chunks = (entry.sha256,) if data else ()
        if entry.deleted or entry.size != len(data) or entry.chunks != chunks:
            raise BadRequest("entry does not match the data sent with it")
        store = self.node.store
        store.check_space(len(data))
        if len(data) > SMALL_CHUNK:  # one chunk file, written durably before the entry commits
            async with store.gc_lock.shared():
                # Hashed in the I/O thread with the write: 0.7 ms per MiB off the event loop.
                cached = self.keep_cached(hashed)  # hashed here: the gateway's own copy
                fast = await store.in_io(write_checked, store, data, entry.sha256, hashed, cached)
                self.node.clock.observe(entry.version)
                return bool(await store.apply_entries([entry], sums={entry.sha256: fast}))
        if not hashed and hashlib.sha256(data).hexdigest() != entry.sha256:
            raise BadRequest("entry does not match the data sent with it")
        self.node.clock.observe(entry.version)
        blob = StoredBlob(len(data), entry.sha256, chunks, store.chunks.tmp_dir / "unused", data or None)
        return await store.commit(blob if data else None, entry)

    async def abort_local(self, upload: str) -> None:
        staged = self.staged.pop(upload, None)
        if staged is not None:
            await self.node.store.discard(staged.blob)

    async def _commit_one(
        self, node_id: str, upload: str | None, entry: ManifestEntry, small: bytes | None = None
    ) -> Ack:
        """Commit on one replica; its acknowledgement carries its read-lease report."""
        answer: Any = None
        if small is not None:
            if node_id == self.node.node_id:
                with full_disk_is_507():
                    await self.commit_small_local(entry, small, hashed=True)
            else:
                try:
                    answer = await self._write_small_remote(node_id, entry, small)
                except PeerError as exc:
                    if exc.status in (413, 507):
                        raise StoreError(f"replica {node_id} refused: {exc}", status=exc.status) from exc
                    raise
        elif node_id == self.node.node_id:
            with full_disk_is_507():
                await self.commit_local(upload, entry)
        else:
            answer = await self.transport.call(
                self.address(node_id), "/commit", {"upload": upload, "entry": entry.to_wire()},
                timeout=COMMIT_TIMEOUT,
            )  # fmt: skip
        if node_id == self.node.node_id:
            report = self.leases.report(entry.key)
        else:
            report = answer.get("leases") if isinstance(answer, dict) else None
            report = report if isinstance(report, dict) else {}
        return node_id, report, time.monotonic()

    async def _write_small_remote(self, node_id: str, entry: ManifestEntry, data: bytes) -> Any:
        """A one-phase write to a peer: an RPC frame, or for a large body a raw HTTP body with the
        entry in a header (no msgpack copy of the body on either end); msgpack for older peers."""
        address = self.address(node_id)
        if len(data) > RPC_BULK_LIMIT and address not in self._no_raw_write:
            header = {ENTRY_HEADER: base64.b64encode(pack(entry.to_wire())).decode()}
            try:
                return await self.transport.post_raw(
                    address, "/write-raw", data, header, timeout=COMMIT_TIMEOUT
                )
            except PeerError as exc:
                if exc.status not in (404, 405):
                    raise
                self._no_raw_write.add(address)
        return await self.transport.call(
            address, "/write", {"entry": entry.to_wire(), "data": data},
            timeout=COMMIT_TIMEOUT, bulk=len(data) > RPC_BULK_LIMIT,
        )  # fmt: skip

    async def _abort_all(self, uploads: dict[str, str]) -> None:
        for node_id, upload in uploads.items():
            with contextlib.suppress(Exception):
                if node_id == self.node.node_id:
                    await self.abort_local(upload)
                else:
                    await self.transport.call(self.address(node_id), "/abort", {"upload": upload})

    async def _expire_staged_loop(self) -> None:
        while True:
            await asyncio.sleep(30)
            now = time.monotonic()
            for upload in [u for u, s in self.staged.items() if s.expires < now]:
                await self.abort_local(upload)

    # ---- reads ----
    def local_view(self, key: str) -> dict[str, Any]:
        """What this node holds for ``key``: its entry and whether every chunk is present."""
        return self._view_of(*self.node.store.get_with_presence(key))

    @staticmethod
    def _view_of(entry: ManifestEntry | None, complete: bool) -> dict[str, Any]:
        return {"entry": entry.to_wire() if entry else None, "complete": complete}

    async def _remote_view(self, node_id: str, key: str) -> tuple[str, dict[str, Any]]:
        reply = await self.transport.call(
            self.address(node_id), "/entries", {"keys": [key]}, timeout=LOOKUP_TIMEOUT
        )
        return node_id, reply["views"][0]

    def read_quorum(self, n_replicas: int, r: int | None = None) -> int:
        """How many replicas a read consults before it may answer: R - W + 1 of the key's
        current replicas, so every read set meets every acknowledged write set (``r`` overrides)."""
        if r is not None:
            return max(1, min(r, n_replicas))
        w = min(self.node.config.write_quorum, n_replicas)
        return max(1, n_replicas - w + 1)

    async def resolve(self, key: str, r: int | None = None) -> Resolved:
        """Find the newest entry among this node and a read quorum of the key's replicas.

        A quorum (R - W + 1, itself included when it is a replica) meets every write that W
        replicas acknowledged. When the answers disagree (another version, a missing entry, an
        incomplete copy) or a replica does not answer, the key's other reachable replicas are
        asked too (a lagging replica then costs one more lookup, never a stale read where the
        old "ask all" would have found the newest). If no reachable replica holds a complete
        copy, the replicas this node believes are down are asked as well (briefly): just after
        a partition heals, a node's view of who is alive lags behind, and a read should not
        fail for that.
        """
        self.check_joined()
        me = self.node.node_id
        replicas = self.replicas_for(key)
        await self._own_commit_done(key)
        local, complete, small = self.node.store.get_for_read(key)
        lease_read = r is None and self.leases.may_read_locally(replicas) and complete
        if lease_read and local is not None and not local.deleted:
            self.leases.lease_reads += 1  # no write is acknowledged without us: no lookup
            return Resolved(local, [me, *(n for n in replicas if n != me)], small)
        views: dict[str, dict[str, Any]] = {me: self._view_of(local, complete)}
        others = [n for n in self.reachable(replicas) if n != me]
        need = self.read_quorum(len(replicas), r) - (me in replicas)
        if 0 < need < len(others):  # spread the lookups over the replicas
            self._read_turn = turn = (self._read_turn + 1) % len(others)
            others = others[turn:] + others[:turn]
        await self._gather_views(key, others[:need], views)
        if not self._agree(views, replicas, need):
            await self._gather_views(key, others[need:], views)
        try:
            resolved = await self._pick(key, views, local)
        except NotFound:
            # No answer names the key. That settles it only if a read quorum answered: a write
            # acknowledged by W replicas may sit exactly on those that did not.
            quorum = self.read_quorum(len(replicas), r)
            if sum(1 for n in views if n in replicas) >= quorum:
                raise
            await self._ask_the_rest(key, replicas, views)
            answered = sum(1 for n in views if n in replicas)
            if answered < quorum and all(v["entry"] is None for v in views.values()):
                raise Unavailable(
                    f"{key} is on none of the {answered} of its {len(replicas)} replicas that answered; "
                    f"{quorum} are needed to tell that it does not exist (add ?r=1 to accept one)",
                    {"answered": answered, "replicas": len(replicas), "read_quorum": quorum},
                ) from None
            resolved = await self._pick(key, views, local)
        if not resolved.holders:
            await self._ask_the_rest(key, replicas, views)
            resolved = await self._pick(key, views, local)
        if not resolved.holders:
            raise Unavailable(f"no reachable replica holds a complete copy of {key}")
        if resolved.entry is local and resolved.holders[0] == me:
            resolved.small = small
        return resolved

    async def _ask_the_rest(self, key: str, replicas: list[str], views: dict[str, dict[str, Any]]) -> None:
        """Every replica not asked yet, those believed down included: briefly, when the ones
        believed up could not settle the read (just after a partition heals, a node's view of
        who is alive lags behind)."""
        await self._gather_views(key, [n for n in replicas if n not in views], views)

    def _agree(self, views: dict[str, dict[str, Any]], replicas: list[str], need: int) -> bool:
        """True when ``need`` peers answered and every view names the same version (or none),
        the replicas' copies complete: then asking the remaining replicas cannot change the answer
        unless a write reached fewer than W of them."""
        me = self.node.node_id
        if len(views) - 1 < need:
            return False
        versions = set()
        for node_id, view in views.items():
            wire = view["entry"]
            if node_id == me and me not in replicas:
                continue  # a gateway's own manifest may lag; it only matters when newer (below)
            versions.add(wire.get("version") if isinstance(wire, dict) else None)
            if wire is not None and not view["complete"]:
                return False
        if me not in replicas and (mine := views[me]["entry"]) is not None:
            newest = max((v for v in versions if isinstance(v, str)), default="")
            if not isinstance(mine, dict) or mine.get("version", "") > newest:
                return False
        return len(versions) == 1

    def _note_own_commit(self, key: str, task: asyncio.Task) -> None:
        """Remember this gateway's own commit of ``key`` while it runs (see _own_commit_done)."""
        self._own_commits[key] = task

        def forget(done: asyncio.Task) -> None:
            if self._own_commits.get(key) is done:
                del self._own_commits[key]

        task.add_done_callback(forget)

    async def _own_commit_done(self, key: str) -> None:
        """Let this gateway's own commit of a write it just acknowledged finish before a read of
        that key looks: the acknowledgement needs only W commits, and when the others came first
        a read right after the write would otherwise fetch every chunk from another replica,
        whose copy left its page cache (``--cache-written gateway``), while this node's own copy
        is a moment from done. Bounded; a commit that fails or hangs is read around as before."""
        task = self._own_commits.get(key)
        if task is not None and not task.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(task), OWN_COMMIT_WAIT)

    async def _gather_views(self, key: str, peers: list[str], views: dict[str, dict[str, Any]]) -> None:
        if len(peers) == 1:  # the common quorum read: no gather, no extra tasks
            with contextlib.suppress(Exception):
                node_id, view = await self._remote_view(peers[0], key)
                views[node_id] = view
            return
        results = await asyncio.gather(*(self._remote_view(n, key) for n in peers), return_exceptions=True)
        for result in results:
            if isinstance(result, tuple):
                views[result[0]] = result[1]

    async def _pick(
        self, key: str, views: dict[str, dict[str, Any]], local: ManifestEntry | None
    ) -> Resolved:
        me = self.node.node_id
        best: ManifestEntry | None = None
        for node_id, view in views.items():
            wire = view["entry"]
            if wire is None:
                continue
            version = wire.get("version") if isinstance(wire, dict) else None
            if best is not None and isinstance(version, str) and version <= best.version:
                continue  # not newer: no need to decode and validate it
            # our own entry is already decoded; a peer's is validated before it is used
            candidate = local if node_id == me and local is not None else ManifestEntry.from_wire(wire)
            if best is None or candidate.version > best.version:
                best = candidate
        if best is None:
            raise NotFound(f"key not found: {key}")
        mine = views[me]["entry"]
        if mine is None or mine["version"] < best.version:
            # Read repair of this node's manifest; the repairer then fetches the data if this
            # node is a replica (the entry alone would leave it incomplete until a full pass).
            await self.apply_remote_entries([best])
        stale = [
            n for n, v in views.items()
            if n != me and (v["entry"] is None or v["entry"]["version"] < best.version)
        ]  # fmt: skip
        if stale and best.version not in self._pushing:
            self._pushing.add(best.version)
            self._spawn(self._push_entry(stale, best))
        if best.deleted:
            raise NotFound(f"key not found: {key}")
        holders = [
            n for n, v in views.items()
            if v["entry"] is not None and v["entry"]["version"] == best.version and v["complete"]
        ]  # fmt: skip
        if me in holders:  # ourselves first: no network hop
            holders.remove(me)
            holders.insert(0, me)
        return Resolved(best, holders)

    async def _push_entry(self, nodes: list[str], entry: ManifestEntry) -> None:
        """Read repair of the replicas a read found behind: send them the newest entry (they
        apply it if it is still newer, then fetch its data), instead of leaving them stale until
        anti-entropy, which runs only every 15 s while clients are served. A replica that missed
        a write it should have had would otherwise answer older reads from gateways whose quorum
        it is in. Sent after a short delay: a read racing a write usually finds the last replica
        a few milliseconds short of its own commit, which then lands with the data; pushed
        earlier, the bare entry would make that replica fetch the data a second time."""
        try:
            await asyncio.sleep(READ_REPAIR_DELAY)
            wire = {"entries": [entry.to_wire()]}
            for node_id in nodes:
                try:
                    await self.transport.call(self.address(node_id), "/read-repair", wire, timeout=5)
                    self.read_repairs_pushed += 1
                except PeerError as exc:  # down, or an older node without the method: anti-entropy will do
                    log.debug("read repair of %s on %s failed: %s", entry.key[:80], node_id, exc)
        finally:
            self._pushing.discard(entry.version)

    async def fetch_chunk(self, sha: str, holders: list[str], bad: set[str], count_bad: bool = True) -> bytes:
        """One verified chunk from the first holder that has a good copy."""
        reasons: list[str] = []
        for node_id in holders:
            if node_id in bad:
                continue
            try:
                if node_id == self.node.node_id:
                    return await self.node.store.read_chunk(sha)
                data = await self.transport.get_bytes(self.address(node_id), f"/chunk/{sha}")
                if hashlib.sha256(data).hexdigest() != sha:
                    raise CorruptData(f"chunk {sha[:12]} from {node_id} failed verification")
                return data
            except (PeerError, StoreError, OSError) as exc:
                bad.add(node_id)
                if count_bad:
                    self.bad_copies_reported += 1
                reasons.append(f"{node_id}: {getattr(exc, 'message', exc)}")
                log.warning("replica %s could not serve chunk %s: %s", node_id, sha[:12], exc)
        raise Unavailable(
            f"no replica could serve a verified copy of chunk {sha[:12]} ({'; '.join(reasons)})"
        )

    async def read_range(self, resolved: Resolved, start: int, end: int) -> AsyncIterator[bytes]:
        """Verified bytes [start, end), switching replica per chunk on failure; one chunk ahead."""
        entry = resolved.entry
        bad: set[str] = set()
        if resolved.small is not None and entry.chunks == (entry.sha256,):
            try:  # read with the entry: no second query
                data = self.node.store.check_small_chunk(entry.sha256, resolved.small)
            except CorruptData:
                bad.add(self.node.node_id)  # the other holders are asked below
                self.bad_copies_reported += 1
            else:
                yield data[start:end]
                return
        spans = chunk_spans(entry, self.node.config.chunk_size, self.node.store)
        if spans is None:  # chunk lengths unknown: read them in order, learning offsets as we go
            offset = 0
            for sha in entry.chunks:
                if offset >= end:
                    return
                data = await self.fetch_chunk(sha, resolved.holders, bad)
                if offset + len(data) > start:
                    yield data[max(0, start - offset) : min(len(data), end - offset)]
                offset += len(data)
            return
        wanted = [(sha, off) for sha, off, length in spans if off + length > start and off < end]
        if not wanted:
            return
        nxt = asyncio.ensure_future(self.fetch_chunk(wanted[0][0], resolved.holders, bad))
        try:
            for i, (_sha, offset) in enumerate(wanted):
                data = await nxt
                if i + 1 < len(wanted):
                    nxt = asyncio.ensure_future(self.fetch_chunk(wanted[i + 1][0], resolved.holders, bad))
                yield data[max(0, start - offset) : min(len(data), end - offset)]
        finally:
            if not nxt.done():
                nxt.cancel()

    # ---- manifest anti-entropy ----
    async def _anti_entropy_loop(self) -> None:
        """Exchange manifest digests with a random live peer now and then; right after start
        (a restart after downtime), with every peer as soon as one is known, to catch up fast."""
        interval = max(1.0, self.node.config.gossip_interval * 4)
        while not self.gossip.live_peers():
            await asyncio.sleep(0.1)
        with contextlib.suppress(Exception):
            await self.sync_all_manifests()
        last = time.monotonic()
        while True:
            await asyncio.sleep(interval * (0.5 + random.random()))
            peers = self.gossip.live_peers()
            if not peers:
                continue
            if self.node.serving_clients() and time.monotonic() - last < BUSY_SYNC_INTERVAL:
                continue  # under load, digests differ by the writes in flight: exchange rarely
            last = time.monotonic()
            peer = random.choice(peers)
            try:
                await self.sync_manifest_with(peer.address)
            except (PeerError, ValueError) as exc:
                log.debug("manifest sync with %s failed: %s", peer.id, exc)

    async def sync_manifest_with(self, address: str) -> int:
        """Run one digest exchange with a peer; return how many entries we applied."""
        store = self.node.store
        applied = 0
        msg: dict | None = self.sync.open(store)
        while msg is not None and msg.get("type") != "manifest-done":
            answer = await self.transport.call(address, "/manifest-sync", msg, timeout=30)
            step = self.sync.handle(store, answer)
            if step.apply:
                applied += len(await self.apply_remote_entries(step.apply))
            msg = step.reply
        self.manifest_syncs += 1
        return applied

    async def handle_manifest_sync(self, msg: Any) -> dict:
        step = self.sync.handle(self.node.store, msg)
        if step.apply:
            await self.apply_remote_entries(step.apply)
        return step.reply or {"type": "manifest-done"}

    async def apply_announced(self, entries: list[ManifestEntry]) -> int:
        """Entries a gateway announced to this node (outside their replica set as it saw the
        placement): applied like any learned from a peer; returns how many were news here."""
        # Keys it replicates all the same (placement seen differently here) get their data.
        won = await self.apply_remote_entries(entries, mine_only=True)
        self.announcer.received += len(won)
        return len(won)

    async def apply_remote_entries(self, entries: list[ManifestEntry], mine_only: bool = False) -> list:
        """Apply entries learned from a peer; fetch the data of those this node must hold
        (``mine_only``: look only at keys it replicates in its own view of placement)."""
        for e in entries:
            self.node.clock.observe(e.version)
        won = await self.node.store.apply_entries(entries)
        me = self.node.node_id
        keys = [new.key for _, new in won if not new.deleted]
        if mine_only:
            keys = [k for k in keys if me in self.replicas_for(k)]
        if keys:
            self.repairer.trigger_keys(keys)
        return won

    # ---- cluster-wide actions ----
    async def recover(self, target: str) -> dict[str, Any]:
        """Run the re-sync on ``target`` (node id or address) now; returns its report."""
        member = next((m for m in self.gossip.membership.members() if target in (m.id, m.address)), None)
        if member is None:
            raise NotFound(f"no member named {target}")
        if member.id == self.node.node_id:
            await self.sync_all_manifests()
            return await self.repairer.run_pass()
        if not self.gossip.is_live(member.id):
            raise Unavailable(f"member {member.id} is {member.state}; start it and it re-syncs itself")
        try:
            return await self.transport.call(member.address, "/recover", {}, timeout=3600)
        except PeerError as exc:
            raise Unavailable(f"recovery on {member.id} failed: {exc}") from exc

    async def purge_on(self, node_id: str, tombstones: list[dict[str, Any]]) -> int:
        if node_id == self.node.node_id:
            return await self.purge_local(tombstones)
        reply = await self.transport.call(
            self.address(node_id), "/purge", {"tombstones": tombstones}, timeout=60
        )
        return int(reply["purged"])

    async def purge_local(self, tombstones: list[dict[str, Any]]) -> int:
        entries = [ManifestEntry.from_wire(t) for t in tombstones]
        if not all(e.deleted for e in entries):
            raise ValueError("only tombstones can be purged")
        return await self.node.store.purge_tombstones(entries)

    async def sync_all_manifests(self) -> int:
        """One manifest exchange with every live peer (recovery wants the newest view first)."""
        results = await asyncio.gather(
            *(self.sync_manifest_with(m.address) for m in self.gossip.live_peers()),
            return_exceptions=True,
        )
        return sum(r for r in results if isinstance(r, int))

    async def checkpoint_peers(self) -> list[dict[str, Any]]:
        async def one(member_id: str, address: str) -> dict[str, Any]:
            try:
                return await self.transport.call(address, "/checkpoint", {}, timeout=60)
            except PeerError as exc:
                return {"node_id": member_id, "ok": False, "checkpoint": None, "error": str(exc)}

        peers = self.gossip.live_peers()
        return list(await asyncio.gather(*(one(m.id, m.address) for m in peers)))

    async def replica_report(self, keys: list[str]) -> dict[str, list[dict[str, Any]]]:
        """For each key: its replica nodes and whether each holds a complete current copy."""
        by_node: dict[str, list[str]] = {}
        for key in keys:
            for n in self.replicas_for(key):
                by_node.setdefault(n, []).append(key)

        async def views_of(node_id: str, ks: list[str]) -> tuple[str, dict[str, dict]]:
            if node_id == self.node.node_id:
                return node_id, {k: self.local_view(k) for k in ks}
            if not self.gossip.is_live(node_id):
                return node_id, {}
            try:
                reply = await self.transport.call(self.address(node_id), "/entries", {"keys": ks})
                return node_id, dict(zip(ks, reply["views"], strict=True))
            except (PeerError, KeyError, ValueError):
                return node_id, {}

        results = dict(await asyncio.gather(*(views_of(n, ks) for n, ks in by_node.items())))
        report: dict[str, list[dict[str, Any]]] = {}
        for key in keys:
            local = self.node.store.get(key)
            version = local.version if local else None
            rows = []
            for n in self.replicas_for(key):
                view = results.get(n, {}).get(key)
                ok = bool(view and view["complete"] and view["entry"] and view["entry"]["version"] == version)
                rows.append({"node": n, "verified": ok})
            report[key] = rows
        return report


def write_checked(store: LocalStore, data: bytes, sha: str, hashed: bool, cached: bool = True) -> bytes:
    """Write one chunk file durably after checking ``data`` hashes to ``sha`` (unless ``hashed``:
    computed from these bytes by this process); returns its read sum."""
    if not hashed and hashlib.sha256(data).hexdigest() != sha:
        raise BadRequest("entry does not match the data sent with it")
    return store.write_verified_file(data, sha, cached)


async def read_small(body: AsyncIterator[bytes], expected_size: int) -> bytes:
    """Collect a small body (its Content-Length is known and bounded)."""
    pieces: list[bytes] = []
    got = 0
    async for piece in body:
        got += len(piece)
        if got > expected_size:
            raise BadRequest("body longer than Content-Length")
        pieces.append(piece)
    if got != expected_size:
        raise BadRequest("body shorter than Content-Length", {"expected": expected_size, "got": got})
    return b"".join(pieces)  # one copy; a body that came in one piece is not copied at all


def chunk_spans(entry: ManifestEntry, chunk_size: int, store: Any) -> list[tuple[str, int, int]] | None:
    """(sha, offset, length) for each chunk: from the usual chunk size, else from local files;
    None when neither tells (a file written with another chunk size, held elsewhere)."""
    n = len(entry.chunks)
    if n == 0:
        return []
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


__all__ = ["MSGPACK", "Cluster", "Resolved"]
