"""Multipart uploads: CreateMultipartUpload, UploadPart, UploadPartCopy, CompleteMultipartUpload,
AbortMultipartUpload, ListParts, ListMultipartUploads.

Each part is written through the coordinator like any object (streamed to its replicas, MD5
kept), so any node takes any part. Complete composes the object from the parts' chunks by
reference (cluster/compose.py: each final replica fetches what it lacks node to node, then
commits), so no byte passes through the gateway; see docs/s3.md. A chunk-aligned or whole
UploadPartCopy does the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator

from aiohttp import web

from ..cluster.compose import refs_of
from ..cluster.reads import Resolved
from ..core.manifest import ManifestEntry, check_meta, meta_pairs
from ..errors import NotFound
from . import meta as s3meta
from . import uploads
from . import xml as s3xml
from .context import S3Call
from .errors import S3Error, s3_error
from .meta import etag
from .objects import DEFAULT_CONTENT_TYPE, by_reference, copy_source, native_key, plain_md5, precondition
from .parts import (
    MAX_PART,
    MAX_PARTS,
    PARTS_META,
    StoredPart,
    bare,
    check_parts,
    encode_sizes,
    multipart_etag,
    parse_complete,
    parse_copy_range,
    part_key,
    part_number,
)
from .payload import read_all, upload
from .vhost import bucket_from_host

log = logging.getLogger("p2pstore.s3")
XML = "application/xml"
MAX_COMPLETE_BODY = 4 * 1024 * 1024  # 10,000 parts with their ETags and checksums
RESOLVE_CONCURRENCY = 16
KEEPALIVE_AFTER = 5.0  # a Complete still composing after this answers 200 at once and …
KEEPALIVE_EVERY = 5.0  # … sends a space this often until its result (S3 does the same)


def _xml(body: bytes) -> web.Response:
    return web.Response(body=body, content_type=XML)


async def create_upload(call: S3Call) -> web.Response:
    await call.bucket_for("write")
    native_key(call, call.bucket, call.object_key)  # the key must be storable before parts arrive
    upload_id = uuid.uuid4().hex
    record = uploads.UploadRecord(
        key=call.object_key, owner=call.key.key_id, initiated=time.time(),
        content_type=call.request.headers.get("Content-Type") or DEFAULT_CONTENT_TYPE,
        meta=s3meta.from_request(call.sig.headers),
    )  # fmt: skip
    await uploads.save(call.node, call.bucket, upload_id, record)
    return _xml(s3xml.initiate_result(call.bucket, call.object_key, upload_id))


async def upload_part(call: S3Call) -> web.Response:
    await call.bucket_for("write")
    number = part_number(call.param("partNumber"))
    upload_id = call.param("uploadId") or ""
    await uploads.get(call.node, call.bucket, upload_id, call.object_key)
    body = upload(call.request, call.verified, lowered=call.sig.headers)
    meta, md5 = body.md5_meta()
    result = await call.node.cluster.writes.put(
        part_key(call.bucket, upload_id, number), body.stream, "application/octet-stream", body.sha256,
        body.length, meta=meta, md5=md5,
    )  # fmt: skip
    headers = {"ETag": etag(result.entry)}
    if body.checksum is not None:
        headers[body.checksum[0]] = body.checksum[1]()
    return web.Response(status=200, headers=headers)


async def upload_part_copy(call: S3Call) -> web.Response:
    """UploadPartCopy: the source's bytes (a range of them) stream through this node, verified."""
    src_bucket_name, src_key = copy_source(call)
    await call.bucket_for("write")
    number = part_number(call.param("partNumber"))
    upload_id = call.param("uploadId") or ""
    await uploads.get(call.node, call.bucket, upload_id, call.object_key)
    src_bucket = await call.registry.get_bucket(src_bucket_name)
    if src_bucket is None:
        raise S3Error("NoSuchBucket", "The specified bucket does not exist", BucketName=src_bucket_name)
    if not call.key.may(src_bucket, "read"):
        raise S3Error("AccessDenied", f"Access Denied: this key may not read bucket {src_bucket_name}")
    reads = call.node.cluster.reads
    try:
        resolved = await reads.resolve(native_key(call, src_bucket_name, src_key))
    except NotFound:
        raise S3Error("NoSuchKey", "The specified key does not exist.", Key=src_key) from None
    if precondition(call.request.headers, resolved.entry, "x-amz-copy-source-") is not None:
        raise S3Error("PreconditionFailed", "At least one of the pre-conditions you specified did not hold")
    start, end = parse_copy_range(call.request.headers.get("x-amz-copy-source-range"), resolved.entry.size)
    if end - start > MAX_PART:
        raise S3Error("InvalidRequest", "The specified copy source is larger than the maximum allowable size "
                      "for a copy source: 5368709120")  # fmt: skip
    dest = part_key(call.bucket, upload_id, number)
    node = call.node
    refs = by_reference(node, resolved, start, end)
    if refs is not None:  # chunk-aligned: a commit by reference, the part's MD5 read by a replica
        md5 = plain_md5(resolved.entry) if (start, end) == (0, resolved.entry.size) else None
        meta = {"md5": md5} if md5 else None
        result = await node.cluster.composer.compose(
            dest, refs, "application/octet-stream", meta, md5=not md5
        )
        return _xml(s3xml.copy_part_result(etag(result.entry), result.entry.modified))
    sha = resolved.entry.sha256 if (start, end) == (0, resolved.entry.size) else None
    result = await call.node.cluster.writes.put(
        dest, reads.read_range(resolved, start, end),
        "application/octet-stream", sha or None, end - start, md5=True,
    )  # fmt: skip
    return _xml(s3xml.copy_part_result(etag(result.entry), result.entry.modified))


async def _resolve_parts(call: S3Call, upload_id: str, numbers: list[int]) -> dict[int, Resolved]:
    """Each named part as the cluster knows it (quorum reads); missing ones left out."""
    gate = asyncio.Semaphore(RESOLVE_CONCURRENCY)
    reads = call.node.cluster.reads
    found: dict[int, Resolved] = {}

    async def one(number: int) -> None:
        async with gate:
            with contextlib.suppress(NotFound):
                found[number] = await reads.resolve(part_key(call.bucket, upload_id, number))

    await asyncio.gather(*(one(n) for n in numbers))
    return found


def _stored(number: int, resolved: Resolved) -> StoredPart:
    return StoredPart(number, bare(etag(resolved.entry)), resolved.entry.size)


async def complete_upload(call: S3Call) -> web.StreamResponse:
    await call.bucket_for("write")
    upload_id = call.param("uploadId") or ""
    record = await uploads.get(call.node, call.bucket, upload_id, call.object_key, completed=True)
    requested = parse_complete(await read_all(call.request, call.verified, MAX_COMPLETE_BODY))
    virtual = bucket_from_host(call.request.host, call.node.config.s3_domain) is not None
    path = record.key if virtual else f"{call.bucket}/{record.key}"  # no bucket twice in the URL
    location = f"{call.request.scheme}://{call.request.host}/{path}"
    if record.completed:  # a retry whose first answer was lost: the same answer
        return _xml(s3xml.complete_result(location, call.bucket, record.key, record.completed))
    resolved = await _resolve_parts(call, upload_id, [n for n, _ in requested])
    chosen = check_parts(requested, {n: _stored(n, r) for n, r in resolved.items()})
    parts = [resolved[p.number] for p in chosen]
    task = call.node.cluster.background.spawn(_compose(call, upload_id, record, parts, location))
    done, _ = await asyncio.wait({task}, timeout=KEEPALIVE_AFTER)
    if done:
        body, headers = task.result()
        return web.Response(body=body, content_type=XML, headers=headers)
    # Long compose: answer 200 now and keep the connection alive; the outcome (result or error)
    # goes in the body, as S3 does (clients check a 200 of Complete for an <Error>).
    resp = web.StreamResponse(status=200, headers={"Content-Type": XML, **call.extra})
    await resp.prepare(call.request)
    await resp.write(s3xml.HEAD.encode())
    while not task.done():
        done, _ = await asyncio.wait({task}, timeout=KEEPALIVE_EVERY)
        if not done:
            await resp.write(b" ")
    try:
        body = task.result()[0]  # the x-amz-version-id header is gone: ListObjectVersions has it
    except Exception as exc:
        err = s3_error(exc)
        if err.code == "InternalError":
            log.error("completing upload %s failed", upload_id, exc_info=exc)
        body = s3xml.error(err.code, err.message, call.request.path, "", err.extra)
    await resp.write(body.removeprefix(s3xml.HEAD.encode()))
    await resp.write_eof()
    return resp


async def _compose(
    call: S3Call, upload_id: str, record: uploads.UploadRecord, parts: list[Resolved], location: str
) -> tuple[bytes, dict[str, str]]:
    """Compose the final object from the parts' chunks (by reference; streamed, each chunk
    verified, when a part's chunk lengths are unknown here), mark the upload completed and
    remove its parts; the answer document and its headers."""
    node = call.node
    reads = node.cluster.reads
    total = sum(r.entry.size for r in parts)
    tag = multipart_etag([bare(etag(r.entry)) for r in parts])
    key = native_key(call, call.bucket, record.key)
    meta = {**record.meta, "md5": tag}
    sizes = encode_sizes([r.entry.size for r in parts])
    if sizes is not None and fits({**meta, PARTS_META: sizes}):
        meta[PARTS_META] = sizes  # GetObject/HeadObject ?partNumber= read the parts' boundaries here
    refs = [refs_of(part, node.config.chunk_size, node.store) for part in parts]
    if total > 0 and all(r is not None for r in refs):
        chained = [ref for part_refs in refs for ref in part_refs or ()]
        result = await node.cluster.composer.compose(key, chained, record.content_type, meta)
        return await _completed(call, upload_id, record, location, result.entry)

    async def body() -> AsyncIterator[bytes]:
        for part in parts:
            async for piece in reads.read_range(part, 0, part.entry.size):
                yield piece

    result = await node.cluster.writes.put(key, body(), record.content_type, None, total, meta=meta)
    return await _completed(call, upload_id, record, location, result.entry)


def fits(meta: dict[str, str]) -> bool:
    """Whether an entry can hold ``meta`` (plus the version marks a write adds): the part sizes
    are left out rather than refuse a Complete whose user metadata is near the limit."""
    try:
        check_meta(meta_pairs({**meta, "p2p:keep": "1", "p2p:vid": "0" * 40}))
    except ValueError:
        return False
    return True


async def _completed(
    call: S3Call, upload_id: str, record: uploads.UploadRecord, location: str, entry: ManifestEntry
) -> tuple[bytes, dict[str, str]]:
    """Mark the upload completed (a retried Complete gets the same answer), drop its parts."""
    record.completed = etag(entry)
    await uploads.save(call.node, call.bucket, upload_id, record)  # the sweeper removes it later
    await uploads.remove_upload(call.node, call.bucket, upload_id, keep_record=True)
    body = s3xml.complete_result(location, call.bucket, record.key, etag(entry))
    return body, s3meta.version_headers(entry)  # x-amz-version-id in a versioned bucket


async def abort_upload(call: S3Call) -> web.Response:
    await call.bucket_for("write")
    upload_id = call.param("uploadId") or ""
    await uploads.get(call.node, call.bucket, upload_id, call.object_key)
    await uploads.remove_upload(call.node, call.bucket, upload_id)
    return web.Response(status=204)


def _int_param(call: S3Call, name: str, default: int, limit: int) -> int:
    raw = call.param(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit():
        raise S3Error("InvalidArgument", f"{name} must be a non-negative integer")
    return min(int(raw), limit)


async def list_parts(call: S3Call) -> web.Response:
    await call.bucket_for("read")
    upload_id = call.param("uploadId") or ""
    record = await uploads.get(call.node, call.bucket, upload_id, call.object_key)
    max_parts = _int_param(call, "max-parts", 1000, 1000)
    marker = _int_param(call, "part-number-marker", 0, MAX_PARTS)
    found = [(n, e) for n, e in uploads.local_parts(call.node, call.bucket, upload_id) if n > marker]
    page, truncated = found[:max_parts], len(found) > max_parts
    fields: list[tuple[str, object]] = [
        ("Bucket", call.bucket), ("Key", record.key), ("UploadId", upload_id),
        ("PartNumberMarker", marker), ("NextPartNumberMarker", page[-1][0] if page else marker),
        ("MaxParts", max_parts), ("IsTruncated", "true" if truncated else "false"),
    ]  # fmt: skip
    items = [s3xml.PartItem(n, e.modified, etag(e), e.size) for n, e in page]
    return _xml(s3xml.list_parts(fields, s3xml.owner(record.owner, record.owner), items))


async def list_uploads(call: S3Call) -> web.Response:
    """ListMultipartUploads: by key, then upload id; prefix, delimiter, markers, max-uploads."""
    await call.bucket_for("read")
    prefix = call.param("prefix") or ""
    delimiter = call.param("delimiter") or ""
    key_marker = call.param("key-marker") or ""
    id_marker = call.param("upload-id-marker") or ""
    max_uploads = _int_param(call, "max-uploads", 1000, 1000)
    items: list[s3xml.UploadItem] = []
    prefixes: list[str] = []
    truncated = False
    for key, upload_id, initiated in uploads.local_uploads(call.node, call.bucket):
        if not key.startswith(prefix):
            continue
        if key_marker and (key, upload_id) <= (key_marker, id_marker or "\U0010ffff"):
            continue  # up to the marker: without an upload id marker, every upload of its key
        if delimiter and (i := key.find(delimiter, len(prefix))) >= 0:
            common = key[: i + len(delimiter)]
            if common not in prefixes:
                if len(items) + len(prefixes) == max_uploads:
                    truncated = True
                    break
                prefixes.append(common)
            continue
        if len(items) + len(prefixes) == max_uploads:
            truncated = True
            break
        items.append(s3xml.UploadItem(key, upload_id, initiated))
    fields: list[tuple[str, object]] = [
        ("Bucket", call.bucket), ("KeyMarker", key_marker), ("UploadIdMarker", id_marker),
    ]  # fmt: skip
    if truncated and items:
        fields += [("NextKeyMarker", items[-1].key), ("NextUploadIdMarker", items[-1].upload_id)]
    fields += [("MaxUploads", max_uploads), ("IsTruncated", "true" if truncated else "false")]
    if prefix:
        fields.append(("Prefix", prefix))
    if delimiter:
        fields.append(("Delimiter", delimiter))
    owner = s3xml.owner(call.key.key_id, call.key.name)
    return _xml(s3xml.list_uploads(fields, owner, items, prefixes))
