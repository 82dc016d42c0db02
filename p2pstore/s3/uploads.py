"""Multipart uploads in the store: the upload record and its parts are entries under
``.p2pstore/s3/uploads/`` (parts.py names them), written, read and deleted through this node's
coordinator like any file, so they are replicated, survive what files survive, and any node can
take the next part of an upload another node started."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field

from ..core.manifest import ManifestEntry
from ..errors import NotFound
from ..node import Node
from .errors import S3Error
from .parts import (
    DONE_META,
    KEY_META,
    RECORD,
    UPLOADS,
    part_number_of,
    record_key,
    upload_prefix,
    valid_upload_id,
)

MAX_RECORD = 64 * 1024
LIST_BATCH = 1000
DELETE_CONCURRENCY = 16


@dataclass
class UploadRecord:
    """What CreateMultipartUpload was told, kept until Complete or Abort."""

    key: str  # the object key in the bucket
    owner: str  # access key id of the initiator
    initiated: float
    content_type: str
    meta: dict[str, str] = field(default_factory=dict)
    completed: str = ""  # the final object's ETag once completed: a retried Complete gets it again


def no_such_upload(upload_id: str) -> S3Error:
    return S3Error("NoSuchUpload", "The specified upload does not exist. The upload ID may be invalid, or "
                   "the upload may have been aborted or completed.", UploadId=upload_id[:64])  # fmt: skip


async def _body(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def save(node: Node, bucket: str, upload_id: str, record: UploadRecord) -> None:
    """Write the upload's record (at creation, and once more when it is completed)."""
    data = json.dumps(asdict(record), sort_keys=True).encode()
    meta = {KEY_META: record.key, **({DONE_META: "1"} if record.completed else {})}
    await node.cluster.writes.put(
        record_key(bucket, upload_id), _body(data), "application/json", None, len(data), meta=meta
    )


async def get(
    node: Node, bucket: str, upload_id: str | None, key: str | None = None, completed: bool = False
) -> UploadRecord:
    """The upload's record (a quorum read); NoSuchUpload when there is none (for ``key``), or
    when it was completed already (unless ``completed``: a retried Complete)."""
    if upload_id is None or not valid_upload_id(upload_id):
        raise no_such_upload(upload_id or "")
    reads = node.cluster.reads
    try:
        resolved = await reads.resolve(record_key(bucket, upload_id))
    except NotFound:
        raise no_such_upload(upload_id) from None
    if resolved.entry.size > MAX_RECORD:
        raise no_such_upload(upload_id)
    data = b"".join([p async for p in reads.read_range(resolved, 0, resolved.entry.size)])
    try:
        record = UploadRecord(**json.loads(data))
    except (ValueError, TypeError):
        raise no_such_upload(upload_id) from None
    if (key is not None and record.key != key) or (record.completed and not completed):
        raise no_such_upload(upload_id)
    return record


def local_entries(node: Node, prefix: str) -> list[ManifestEntry]:
    """Live entries under ``prefix`` in this node's manifest (every node keeps all of it)."""
    entries: list[ManifestEntry] = []
    after = ""
    while True:
        batch = node.store.db.list(prefix, after, LIST_BATCH)
        entries += batch
        if len(batch) < LIST_BATCH:
            return entries
        after = batch[-1].key


def local_parts(node: Node, bucket: str, upload_id: str) -> list[tuple[int, ManifestEntry]]:
    """(part number, entry) of the upload's parts this node knows, by number."""
    found = [(part_number_of(e.key), e) for e in local_entries(node, upload_prefix(bucket, upload_id))]
    return [(n, e) for n, e in found if n is not None]


def local_uploads(node: Node, bucket: str) -> list[tuple[str, str, float]]:
    """(object key, upload id, initiated) of the bucket's open uploads this node knows."""
    uploads = []
    for entry in local_entries(node, upload_prefix(bucket)):
        *_, upload_id, name = entry.key.split("/")
        meta = dict(entry.meta)
        key = meta.get(KEY_META)
        if name == RECORD and key is not None and DONE_META not in meta:
            uploads.append((key, upload_id, entry.modified))
    return sorted(uploads)


async def remove(node: Node, keys: list[str]) -> None:
    """Delete these entries (tombstones); ones already gone are fine."""
    writes = node.cluster.writes
    gate = asyncio.Semaphore(DELETE_CONCURRENCY)

    async def one(key: str) -> None:
        async with gate:
            with contextlib.suppress(NotFound):
                await writes.delete(key)

    await asyncio.gather(*(one(k) for k in keys))


async def remove_upload(node: Node, bucket: str, upload_id: str, keep_record: bool = False) -> None:
    """The record first (the upload is gone at once), then every part this node knows of; parts
    it does not know yet are left to the sweeper. ``keep_record``: only the parts."""
    record = record_key(bucket, upload_id)
    if not keep_record:
        await remove(node, [record])
    await remove(
        node, [e.key for e in local_entries(node, upload_prefix(bucket, upload_id)) if e.key != record]
    )


def stale_uploads(node: Node, max_age: float, now: float | None = None) -> list[tuple[str, str]]:
    """(bucket, upload id) of uploads whose newest entry (record or part) is older than
    ``max_age``: abandoned uploads, the records of completed ones (kept for retried Completes),
    and parts left behind by a Complete or Abort."""
    now = time.time() if now is None else now
    newest: dict[tuple[str, str], float] = {}
    for entry in local_entries(node, UPLOADS):
        bucket, upload_id, *_ = entry.key.removeprefix(UPLOADS).split("/")
        at = (bucket, upload_id)
        newest[at] = max(newest.get(at, 0.0), entry.modified)
    return sorted(at for at, modified in newest.items() if modified < now - max_age)
