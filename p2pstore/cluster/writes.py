"""The coordinator's write path: any node takes a write for any key, streams it to the key's
replicas in parallel, and acknowledges once W of them committed it durably.

Large bodies go in two phases (replica.py): every replica stages the streamed body, the
coordinator checks that all staged copies agree (same size, same chunk list, and the client's
checksum against the whole-file hash it computed once as the body passed), then asks them to
commit. Small bodies travel whole with their entry, one round trip per replica. The last
replica's commit finishes in the background after the acknowledgement.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..config import NodeConfig
from ..core import quorum
from ..core.manifest import ManifestEntry, check_meta, meta_pairs
from ..errors import (
    BadRequest,
    PayloadTooLarge,
    Refused,
    StoreError,
    Unavailable,
    full_disk_refused,
)
from ..storage.store import LocalStore
from .announce import EntryAnnouncer
from .background import Background
from .codec import ENTRY_HEADER, pack
from .fanout import Sink, fan_out, first_n, settle
from .leases import Ack, Leases, acked_ok
from .peers import Peers
from .reads import ReadCoordinator
from .replica import Replica
from .transport import PeerError
from .versioning import with_marks

Pieces = tuple[bytes, ...]  # a small body as it arrived: never joined on the way to disk
ONE_PHASE_MAX = 1024 * 1024  # bodies up to this size travel whole, in one round trip
RPC_BULK_LIMIT = 128 * 1024  # larger one-phase bodies travel as raw HTTP bodies, not RPC frames
COMMIT_TIMEOUT = 30.0


@dataclass
class WriteResult:
    entry: ManifestEntry
    replicas: list[str]  # those that committed it (the last ones may still be at work)


class WriteCoordinator:
    """Writes and deletes through this node."""

    def __init__(
        self, config: NodeConfig, store: LocalStore, new_version: Callable[[], str], peers: Peers,
        replica: Replica, reads: ReadCoordinator, leases: Leases, announcer: EntryAnnouncer,
        background: Background,
    ) -> None:  # fmt: skip
        self.config = config
        self.store = store
        self.new_version = new_version
        self.peers = peers
        self.me = peers.me
        self.replica = replica
        self.reads = reads
        self.leases = leases
        self.announcer = announcer
        self.background = background

    async def put(
        self,
        key: str,
        body: AsyncIterator[bytes],
        content_type: str,
        expected_sha: str | None = None,
        expected_size: int | None = None,
        w: int | None = None,
        meta: Mapping[str, str] | None = None,
        md5: bool = False,
    ) -> WriteResult:
        """Store a streamed body under ``key`` on its replicas; visible once W have it durably.
        ``meta`` is kept with the entry; ``md5``: also hash the body with MD5 as it streams and
        keep it as ``meta["md5"]`` (S3's ETag of a single-part object)."""
        return await self.write(key, body, content_type, expected_sha, expected_size, w, meta=meta, md5=md5)

    async def delete(self, key: str, w: int | None = None) -> WriteResult:
        await self.reads.resolve(key)  # NotFound when there is nothing to delete
        return await self.write(key, None, "", None, None, w, tombstone=True)

    def write_targets(self, key: str, w: int | None) -> tuple[list[str], list[str], int]:
        """(replicas, the reachable ones, W) for a new write of ``key``; Unavailable when fewer
        than W are reachable, before anything is sent."""
        self.peers.check_joined()
        replicas = self.peers.replicas_for(key)
        targets = self.peers.reachable(replicas, for_write=True)
        w = quorum.write_quorum(w or self.config.write_quorum, self.peers.known_count())
        if len(targets) < w:
            raise Unavailable(
                f"only {len(targets)} of {len(replicas)} replicas reachable, {w} needed",
                {"reachable": targets, "replicas": replicas, "w": w, "outcome": "not written"},
            )
        return replicas, targets, w

    async def write(
        self,
        key: str,
        body: AsyncIterator[bytes] | None,
        content_type: str,
        expected_sha: str | None,
        expected_size: int | None,
        w: int | None,
        tombstone: bool = False,
        meta: Mapping[str, str] | None = None,
        md5: bool = False,
    ) -> WriteResult:
        """Replicate a new version of ``key`` (a body, or a tombstone) and wait for W commits."""
        limit = self.config.max_upload_bytes
        if limit and expected_size is not None and expected_size > limit:
            raise PayloadTooLarge(f"upload larger than the limit of {limit} bytes")
        replicas, targets, w = self.write_targets(key, w)
        pairs = with_marks(self.store, key, checked_meta(meta), tombstone)  # versioned folders
        body_md5 = hashlib.md5(usedforsecurity=False) if md5 and body is not None else None
        version = self.new_version()
        modified = time.time()
        small: Pieces | None = None
        staged: dict[str, str | None]
        if tombstone:
            entry = ManifestEntry.tombstone(key, version, modified, pairs)
            staged = dict.fromkeys(targets)
        elif body is not None and expected_size is not None and expected_size <= self._one_phase_max():
            small = await read_small(body, expected_size)  # whole (bounded): one round trip each
            sha = hash_pieces(small, body_md5)  # on the loop: a thread hop cost more (measured)
            if expected_sha and sha != expected_sha:
                raise BadRequest("X-Content-SHA256 does not match the body; nothing stored")
            entry = ManifestEntry(
                key=key, version=version, size=expected_size, sha256=sha,
                chunks=(sha,) if expected_size else (), content_type=content_type, deleted=False,
                modified=modified, meta=with_md5(pairs, body_md5),
            )  # fmt: skip
            staged = dict.fromkeys(targets)
        else:
            assert body is not None
            staged, info = await self._stage_all(targets, body, expected_sha, expected_size, w, body_md5)
            entry = ManifestEntry(
                key=key, version=version, size=info["size"], sha256=info["sha256"],
                chunks=tuple(info["chunks"]), content_type=content_type, deleted=False,
                modified=modified, meta=with_md5(pairs, body_md5),
            )  # fmt: skip
        tasks = {
            node_id: self.background.spawn(self._commit_one(node_id, upload, entry, small))
            for node_id, upload in staged.items()
        }
        if (own := tasks.get(self.me)) is not None:
            self.reads.note_own_commit(key, own)
        acks, errors = await first_n(list(tasks.values()), w)
        done = [node_id for node_id, _, _ in acks]
        refusal = next((e for e in errors if isinstance(e, Refused)), None)
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
        if self.me not in staged:
            await self.store.apply_entries([entry])  # the coordinator's manifest knows it too
        self.announcer.announce(entry, replicas)  # and so do the members outside the replicas
        late = [n for n, t in tasks.items() if n not in done and acked_ok(t)]
        return WriteResult(entry, sorted(done + late))

    def _one_phase_max(self) -> int:
        return min(ONE_PHASE_MAX, self.config.chunk_size)

    # ---- two-phase: stage everywhere, then commit ----
    async def _stage_all(
        self,
        targets: list[str],
        body: AsyncIterator[bytes],
        expected_sha: str | None,
        expected_size: int | None,
        w: int,
        body_md5: Any = None,
    ) -> tuple[dict[str, str | None], dict[str, Any]]:
        """Stream the body to every target; return {node: upload id} of those that staged it.

        The whole-file sha256 is computed here, once, as the pieces pass (64 KiB at a time on
        the event loop); replicas hash only their chunks, which name them.
        """
        uploads = {t: uuid.uuid4().hex for t in targets}
        sinks = [Sink(t) for t in targets]
        for sink in sinks:
            sink.start(self._stage_consumer(sink.node_id, uploads[sink.node_id]))
        whole = hashlib.sha256()

        async def hashed() -> AsyncIterator[bytes]:
            async for piece in body:
                whole.update(piece)
                if body_md5 is not None:
                    body_md5.update(piece)
                yield piece

        stall = self.config.stall_timeout
        try:
            await fan_out(hashed(), sinks, stall)
        except BaseException:
            self.background.spawn(self._abort_all(uploads))
            raise
        results = await settle(sinks, w, stall)
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
        # The chunk list names every byte in order: equal lists mean equal bodies.
        infos = {(r["size"], tuple(r["chunks"])) for r in ok.values()}
        if bad_request is not None or len(ok) < w or len(infos) != 1:
            self.background.spawn(self._abort_all(uploads))
            if bad_request is not None:
                raise bad_request
            if len(infos) > 1:
                raise StoreError("replicas received different bytes; nothing stored")
            refusal = next((e for e in errors if isinstance(e, Refused)), None)
            if refusal is not None and not ok:
                raise refusal
            raise Unavailable(
                f"only {len(ok)} of {len(targets)} replicas stored the upload, {w} needed",
                {"errors": [str(e) for e in errors][:5]},
            )
        if expected_size is not None and next(iter(ok.values()))["size"] != expected_size:
            self.background.spawn(self._abort_all(uploads))
            raise BadRequest("body shorter than Content-Length")
        failed = {t: uploads[t] for t in targets if t not in ok}
        if failed:
            self.background.spawn(self._abort_all(failed))
        return {t: uploads[t] for t in ok}, {**next(iter(ok.values())), "sha256": digest}

    def _stage_consumer(self, node_id: str, upload: str) -> Callable[[AsyncIterator[bytes]], Any]:
        async def consume(body: AsyncIterator[bytes]) -> dict[str, Any]:
            if node_id == self.me:
                return await self.replica.stage(upload, body, own=True)
            headers = {"Content-Type": "application/octet-stream"}
            try:
                return await self.peers.transport.put_stream(
                    self.peers.address(node_id), f"/stage/{upload}", body, headers
                )
            except PeerError as exc:
                refusal = exc.refusal(node_id)
                if refusal is None:
                    raise
                raise refusal from exc

        return consume

    async def _commit_one(
        self, node_id: str, upload: str | None, entry: ManifestEntry, small: Pieces | None = None
    ) -> Ack:
        """Commit on one replica; its acknowledgement carries its read-lease report."""
        answer: Any = None
        if node_id == self.me:
            with full_disk_refused():
                if small is not None:
                    await self.replica.commit_small(entry, small, hashed=True)
                else:
                    await self.replica.commit(upload, entry)
            report = self.leases.report(entry.key)
        else:
            try:
                if small is not None:
                    answer = await self._write_small_remote(node_id, entry, small)
                else:
                    msg = {"upload": upload, "entry": entry.to_wire()}
                    answer = await self.peers.call(node_id, "/commit", msg, timeout=COMMIT_TIMEOUT)
            except PeerError as exc:
                refusal = exc.refusal(node_id) if small is not None else None
                if refusal is None:
                    raise
                raise refusal from exc
            report = answer.get("leases") if isinstance(answer, dict) else None
            report = report if isinstance(report, dict) else {}
        return node_id, report, time.monotonic()

    async def _write_small_remote(self, node_id: str, entry: ManifestEntry, data: Pieces) -> Any:
        """A one-phase write to a peer: an RPC frame, or for a larger body a raw HTTP body with
        the entry in a header, sent from the pieces the body arrived in (no msgpack copy of the
        body on either end, no joined copy on this one)."""
        if entry.size > RPC_BULK_LIMIT:
            header = {ENTRY_HEADER: base64.b64encode(pack(entry.to_wire())).decode()}
            return await self.peers.transport.post_raw(
                self.peers.address(node_id), "/write-raw", data, header, timeout=COMMIT_TIMEOUT
            )
        msg = {"entry": entry.to_wire(), "data": b"".join(data)}
        return await self.peers.call(node_id, "/write", msg, timeout=COMMIT_TIMEOUT)

    async def _abort_all(self, uploads: dict[str, str]) -> None:
        for node_id, upload in uploads.items():
            with contextlib.suppress(Exception):
                if node_id == self.me:
                    await self.replica.abort(upload)
                else:
                    await self.peers.call(node_id, "/abort", {"upload": upload})


def checked_meta(meta: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    """Object metadata as an entry holds it; BadRequest saying why when it cannot be stored."""
    try:
        pairs = meta_pairs(meta)
        check_meta((*pairs, ("~md5", "0" * 32)))  # room for the body's MD5, added later
    except ValueError as exc:
        raise BadRequest(f"metadata refused: {exc}") from None
    return pairs


def with_md5(pairs: tuple[tuple[str, str], ...], md5: Any) -> tuple[tuple[str, str], ...]:
    """``pairs`` plus the body's MD5 (hex) as "md5", when it was computed."""
    return pairs if md5 is None else tuple(sorted({**dict(pairs), "md5": md5.hexdigest()}.items()))


def hash_pieces(pieces: Pieces, md5: Any = None) -> str:
    """The sha256 of a body kept in pieces, feeding ``md5`` (if any) the same pieces."""
    digest = hashlib.sha256()
    for piece in pieces:
        digest.update(piece)
        if md5 is not None:
            md5.update(piece)
    return digest.hexdigest()


async def read_small(body: AsyncIterator[bytes], expected_size: int) -> Pieces:
    """Collect a small body (its Content-Length is known and bounded) in the pieces it arrived
    in: it is hashed, written and sent to the replicas piece by piece, so joining it would only
    add a copy (and, for 1 MiB, fresh memory to fault in) per write."""
    pieces: list[bytes] = []
    got = 0
    async for piece in body:
        got += len(piece)
        if got > expected_size:
            raise BadRequest("body longer than Content-Length")
        pieces.append(piece)
    if got != expected_size:
        raise BadRequest("body shorter than Content-Length", {"expected": expected_size, "got": got})
    return tuple(pieces)
