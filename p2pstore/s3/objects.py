"""Object operations: PutObject, GetObject/HeadObject (Range, conditional headers), DeleteObject,
DeleteObjects, CopyObject. Bodies stream between the client and the coordinator."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import re
from collections.abc import AsyncIterator
from urllib.parse import unquote

from aiohttp import web

from ..api.http import parse_range, send_range
from ..cluster.compose import ChunkRef, refs_of
from ..cluster.reads import Resolved
from ..core.keys import InvalidKey, validate_key
from ..core.manifest import ManifestEntry
from ..errors import BadRequest, NotFound, RangeNotSatisfiable, StoreError, Unavailable
from ..node import Node
from . import meta as s3meta
from . import xml as s3xml
from .context import S3Call
from .errors import S3Error
from .meta import etag, object_headers
from .names import FOLDER_MARKER, bucket_name_problem, is_marker_name, stored_key
from .parts import PARTS_META, decode_sizes, part_span
from .payload import read_all, upload

DEFAULT_CONTENT_TYPE = "binary/octet-stream"
MAX_PART_NUMBER = 10_000
MAX_DELETE_BODY = 2 * 1024 * 1024
DELETE_CONCURRENCY = 16
RESPONSE_OVERRIDES = {
    "response-content-type": "Content-Type",
    "response-content-language": "Content-Language",
    "response-expires": "Expires",
    "response-cache-control": "Cache-Control",
    "response-content-disposition": "Content-Disposition",
    "response-content-encoding": "Content-Encoding",
}


# A key of plain segments (ASCII letters, digits, '_', '~', '-' and '.', no segment starting with
# '.'), as most keys are: what validate_key and the folder-marker rules accept, checked in one scan.
_PLAIN_NAME = re.compile(r"[\w~-][\w.~-]*(?:/[\w~-][\w.~-]*)*", re.ASCII)
PRECONDITION_FAILED = "At least one of the pre-conditions you specified did not hold"
_CONDITIONAL = ("if-match", "if-none-match", "if-modified-since", "if-unmodified-since")


def native_key(call: S3Call, bucket: str, key: str) -> str:
    """``bucket/key`` if the native namespace can hold it, else the S3 error saying why."""
    return native_name(bucket, key, call.node.config.max_key_bytes)


def native_name(bucket: str, key: str, max_bytes: int) -> str:
    """:func:`native_key` for a key length limit."""
    name = f"{bucket}/{key}"
    if len(name) <= max_bytes and _PLAIN_NAME.fullmatch(name):
        return name  # ASCII: as many bytes as characters
    if is_marker_name(key):
        raise S3Error("InvalidArgument", f"This store cannot hold the key {key[:200]!r}: its last segment "
                      f"{FOLDER_MARKER!r} is how folder markers ('dir/') are stored")  # fmt: skip
    try:
        return validate_key(f"{bucket}/{stored_key(key)}", max_bytes)
    except InvalidKey as exc:
        if "longer than" in exc.message:
            raise S3Error("KeyTooLongError", "Your key is too long") from None
        raise S3Error(
            "InvalidArgument", f"This store cannot hold the key {key[:200]!r}: {exc.message}"
        ) from None


async def resolve(call: S3Call, key: str) -> Resolved:
    """The key's newest entry; NoSuchKey when no reachable replica holds it, even when fewer than
    a read quorum answer. S3 clients probe keys that do not exist (rclone HEADs the path it is
    given) and retry a 503 for minutes, so with two of three replicas down a missing key is
    answered as missing (the native API's ``?r=1``): at worst a key written only to the two
    unreachable replicas reads as missing until one is back; no wrong byte is ever served."""
    try:
        return await call.node.cluster.reads.resolve(key)
    except (NotFound, Unavailable) as exc:
        return await resolve_after(call, key, exc)


async def resolve_after(call: S3Call, key: str, failed: NotFound | Unavailable) -> Resolved:
    """:func:`resolve` once the quorum read of ``key`` raised ``failed``: one read of r=1 after
    Unavailable, NoSuchKey (with a delete marker's headers) after NotFound."""
    try:
        if isinstance(failed, NotFound):
            raise failed
        return await call.node.cluster.reads.resolve(key, r=1)
    except NotFound:
        err = S3Error("NoSuchKey", "The specified key does not exist.", Key=call.object_key)
        current = call.node.store.get(key)  # a delete marker says so (versioned buckets)
        if current is not None and current.deleted:
            err.headers = s3meta.version_headers(current)
        raise err from None


def _date(value: str | None) -> float | None:
    parsed = email.utils.parsedate_tz(value) if value else None
    return float(email.utils.mktime_tz(parsed)) if parsed else None


def _tags(header: str) -> list[str]:
    return [t.strip().removeprefix("W/") for t in header.split(",") if t.strip()]


def precondition(headers: dict[str, str] | object, entry: ManifestEntry, prefix: str = "") -> int | None:
    """RFC 9110's order for If-Match, If-Unmodified-Since, If-None-Match, If-Modified-Since:
    412 or 304 when one fails (304 only for reads), None when the request may go on."""
    get = headers.get  # type: ignore[attr-defined]
    if_match = get(prefix + "If-Match")
    if_none = get(prefix + "If-None-Match")
    unmodified_since = get(prefix + "If-Unmodified-Since")
    modified_since = get(prefix + "If-Modified-Since")
    if if_match is None and if_none is None and unmodified_since is None and modified_since is None:
        return None  # the usual request: no ETag or date to work out
    tag = etag(entry)
    modified = int(entry.modified)
    if if_match is not None:
        if "*" not in _tags(if_match) and tag not in _tags(if_match):
            return 412
    elif (since := _date(unmodified_since)) is not None and modified > since:
        return 412
    if if_none is not None:
        if "*" in _tags(if_none) or tag in _tags(if_none):
            return 304
    elif (since := _date(modified_since)) is not None and modified <= since:
        return 304
    return None


async def get_object(call: S3Call, resolved: Resolved | None = None) -> web.StreamResponse:
    """GetObject/HeadObject of the current version, or of ``resolved`` (s3/versioning.py)."""
    if not call.may_now("read"):
        await call.bucket_for("read")  # reads the bucket's record, or says why not
    request = call.request
    lowered = call.sig.headers  # plain dict look-ups, names lower-cased once per request
    reads = call.node.cluster.reads
    if resolved is None:
        key = native_key(call, call.bucket, call.object_key)
        try:  # resolve() inline: one coroutine less on every GET
            resolved = await reads.resolve(key)
        except (NotFound, Unavailable) as exc:
            resolved = await resolve_after(call, key, exc)
    entry = resolved.entry
    mode = lowered.get("x-amz-checksum-mode")
    headers = object_headers(entry, mode is not None and mode.upper() == "ENABLED")
    if not lowered.keys().isdisjoint(_CONDITIONAL):  # the usual request sends none
        outcome = precondition(request.headers, entry)
        if outcome == 412:
            raise S3Error("PreconditionFailed", PRECONDITION_FAILED)
        if outcome == 304:
            return web.Response(
                status=304, headers={"ETag": headers["ETag"], "Last-Modified": headers["Last-Modified"]}
            )
    query = call.sig.query
    if query:
        for param, header in RESPONSE_OVERRIDES.items():
            value = call.param(param)
            if value is not None:
                headers[header] = value
    try:
        part = call.param("partNumber") if query else None
        rng = part_range(part, entry, request.headers) if part is not None else None
        if part is not None and (runs := part_runs(entry)) is not None:
            headers["x-amz-mp-parts-count"] = str(sum(count for _, count in runs))
        if part is None:
            rng = parse_range(lowered.get("range"), entry.size)
    except RangeNotSatisfiable:
        raise S3Error(
            "InvalidRange", "The requested range is not satisfiable", ActualObjectSize=str(entry.size)
        ) from None
    if rng:
        for name in [h for h in headers if h.startswith(s3meta.CHECKSUM_PREFIX)]:
            del headers[name]  # the stored checksum is of the whole object, not of this range
    headers.update(call.extra)  # send_range may stream the answer: its head carries them
    # errors before the first byte become an XML error
    return await send_range(request, functools.partial(reads.read_range, resolved), entry.size, rng, headers)


def part_runs(entry: ManifestEntry) -> list[tuple[int, int]] | None:
    """The part sizes Complete recorded for a multipart object (None: not one, or not recorded)."""
    raw = next((v for k, v in entry.meta if k == PARTS_META), None)
    return decode_sizes(raw) if raw is not None and "-" in etag(entry) else None


def part_range(raw: str, entry: ManifestEntry, headers: object) -> tuple[int, int] | None:
    """GetObject/HeadObject ``partNumber``: the byte range of that part. An object written in one
    piece is its own part 1; a multipart object's parts are the sizes its Complete recorded
    (meta ``s3-parts``). One completed without them (more distinct part sizes than the record
    holds) answers 501: clients read by ranges instead."""
    if "Range" in headers:  # type: ignore[operator]
        raise S3Error("InvalidRequest", "Cannot specify both Range header and partNumber query parameter")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PART_NUMBER:
        raise S3Error("InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive",
                      ArgumentName="partNumber", ArgumentValue=raw[:20])  # fmt: skip
    runs = part_runs(entry)
    if runs is not None:
        span = part_span(runs, int(raw))
        if span is None:
            raise S3Error("InvalidPartNumber", "The requested partnumber is not satisfiable")
        return span if span[1] > span[0] and span[1] <= entry.size else None
    if "-" in etag(entry):
        raise S3Error("NotImplemented", "partNumber on this object is not implemented (its parts' "
                      "boundaries were not recorded); read it by Range")  # fmt: skip
    if int(raw) != 1:
        raise S3Error("InvalidPartNumber", "The requested partnumber is not satisfiable")
    return (0, entry.size) if entry.size else None


async def _current(call: S3Call, key: str) -> ManifestEntry | None:
    try:
        return (await call.node.cluster.reads.resolve(key)).entry
    except NotFound:
        return None


async def put_object(call: S3Call) -> web.Response:
    await call.bucket_for("write")
    request = call.request
    key = native_key(call, call.bucket, call.object_key)
    lowered = call.sig.headers  # plain dict look-ups, names lower-cased once per request
    if "if-none-match" in lowered or "if-match" in lowered:
        current = await _current(call, key)
        if_none = request.headers.get("If-None-Match")
        if if_none is not None and if_none.strip() != "*":
            raise S3Error("NotImplemented", "If-None-Match on PUT only takes '*'")
        if current is not None and if_none is not None:
            raise S3Error(
                "PreconditionFailed", "At least one of the pre-conditions you specified did not hold"
            )
        if_match = request.headers.get("If-Match")
        if if_match is not None and (current is None or etag(current) not in _tags(if_match)):
            if current is None:
                raise S3Error("NoSuchKey", "The specified key does not exist.", Key=call.object_key)
            raise S3Error(
                "PreconditionFailed", "At least one of the pre-conditions you specified did not hold"
            )
    body = upload(request, call.verified, lowered=lowered)
    content_type = request.headers.get("Content-Type") or DEFAULT_CONTENT_TYPE
    meta = s3meta.from_request(lowered)
    if body.checksum is not None and body.checksum[0] in lowered:  # known up front: kept
        meta[body.checksum[0]] = body.checksum[1]()
    md5_meta, md5 = body.md5_meta()
    meta.update(md5_meta)
    writes = call.node.cluster.writes
    try:
        result = await writes.put(
            key, body.stream, content_type, body.sha256, body.length, meta=meta or None, md5=md5
        )
    except BadRequest as exc:
        if body.sha256 is not None and exc.message.startswith("X-Content-SHA256"):
            raise S3Error("XAmzContentSHA256Mismatch", "The provided 'x-amz-content-sha256' header does "
                          "not match what was computed.") from None  # fmt: skip
        raise
    headers = {"ETag": etag(result.entry), **s3meta.version_headers(result.entry)}
    if body.checksum is not None:
        headers[body.checksum[0]] = body.checksum[1]()
    return web.Response(status=200, headers=headers)


async def delete_object(call: S3Call) -> web.Response:
    await call.bucket_for("write")
    key = native_key(call, call.bucket, call.object_key)
    with contextlib.suppress(NotFound):  # S3 answers a delete of a missing key like any other
        result = await call.node.cluster.writes.delete(key)
        return web.Response(status=204, headers=s3meta.version_headers(result.entry))
    return web.Response(status=204)


async def delete_objects(call: S3Call, body: bytes | None = None) -> web.Response:
    """DeleteObjects: up to 1,000 keys; per-key errors in the answer; quiet mode lists errors only.
    ``body``: already read (s3/versioning.py takes the requests that name versions)."""
    await call.bucket_for("write")
    if body is None:
        body = await read_all(call.request, call.verified, MAX_DELETE_BODY)
    quiet, keys = s3xml.parse_delete(body)
    writes = call.node.cluster.writes
    gate = asyncio.Semaphore(DELETE_CONCURRENCY)

    async def delete_one(key: str) -> tuple[str, str, str] | None:
        try:
            native = native_key(call, call.bucket, key)
        except S3Error as exc:
            return key, exc.code, exc.message
        async with gate:
            try:
                await writes.delete(native)
            except NotFound:
                pass
            except StoreError as exc:
                return key, "InternalError", exc.message
        return None

    outcomes = await asyncio.gather(*(delete_one(k) for k in keys))
    errors = [o for o in outcomes if o is not None]
    failed = {e[0] for e in errors}
    deleted = [] if quiet else [k for k in keys if k not in failed]
    return web.Response(body=s3xml.delete_result(deleted, errors), content_type="application/xml")


def copy_version(call: S3Call) -> str | None:
    """The ``?versionId=`` of x-amz-copy-source (CopyObject may copy any version)."""
    query = call.request.headers["x-amz-copy-source"].partition("?")[2]
    if query and not query.startswith("versionId="):
        raise S3Error("InvalidArgument", "The copy source may only carry a versionId")
    return unquote(query.removeprefix("versionId=")) or None if query else None


def copy_source(call: S3Call, any_version: bool = False) -> tuple[str, str]:
    """x-amz-copy-source: ``[/]bucket/key`` URL-encoded, optionally ``?versionId=null``
    (``any_version``: any version id, see :func:`copy_version`)."""
    raw = call.request.headers["x-amz-copy-source"]
    raw, _, query = raw.partition("?")
    if query and not any_version and query not in ("versionId=null",):
        raise S3Error("NotImplemented", "Copying a version other than the current one is not implemented")
    source = unquote(raw).removeprefix("/")
    bucket, _, key = source.partition("/")
    if not key or bucket_name_problem(bucket) is not None:
        raise S3Error(
            "InvalidArgument", "Copy Source must mention the source bucket and key: sourcebucket/sourcekey"
        )
    return bucket, key


COMPOSE_MIN = 1024 * 1024  # smaller copies stream (one round trip each): cheaper than two phases


def by_reference(node: Node, resolved: Resolved, start: int, end: int) -> list[ChunkRef] | None:
    """The source's chunks covering [start, end) when a copy can be a commit by reference
    (the range is whole or chunk-aligned, the object not tiny); None: stream the bytes."""
    if end - start < COMPOSE_MIN and (start, end) != (0, resolved.entry.size):
        return None
    if resolved.entry.size < COMPOSE_MIN and (start, end) == (0, resolved.entry.size):
        return None
    return refs_of(resolved, node.config.chunk_size, node.store, start, end)


def plain_md5(entry: ManifestEntry) -> str | None:
    """The body's MD5 when the entry keeps one (not a multipart ETag "…-N")."""
    md5 = next((v for k, v in entry.meta if k == "md5"), None)
    return md5 if md5 is not None and len(md5) == 32 and "-" not in md5 else None


async def copy_object(call: S3Call) -> web.Response:
    """CopyObject: a commit by reference to the source's chunks (no byte re-sent through this
    node), or for small sources the bytes streamed (checked against the source's sha256)."""
    src_bucket_name, src_key = copy_source(call, any_version=True)
    await call.bucket_for("write")
    src_bucket = await call.registry.get_bucket(src_bucket_name)
    if src_bucket is None:
        raise S3Error("NoSuchBucket", "The specified bucket does not exist", BucketName=src_bucket_name)
    if not call.key.may(src_bucket, "read"):
        raise S3Error("AccessDenied", f"Access Denied: this key may not read bucket {src_bucket_name}")
    dest = native_key(call, call.bucket, call.object_key)
    source = native_key(call, src_bucket_name, src_key)
    reads = call.node.cluster.reads
    vid = copy_version(call)
    try:
        if vid is None or vid == "null":
            resolved = await reads.resolve(source)
        else:
            resolved = await call.node.cluster.versions.resolve(source, vid)
    except NotFound:
        raise S3Error("NoSuchKey", "The specified key does not exist.", Key=src_key) from None
    except BadRequest:
        raise S3Error("InvalidRequest", "The source of a copy request may not be a delete marker") from None
    entry = resolved.entry
    if precondition(call.request.headers, entry, "x-amz-copy-source-") is not None:
        raise S3Error("PreconditionFailed", "At least one of the pre-conditions you specified did not hold")
    directive = call.request.headers.get("x-amz-metadata-directive", "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise S3Error("InvalidArgument", "Unknown metadata directive.")
    if dest == source and directive == "COPY" and vid is None:  # a version onto its key: a restore
        raise S3Error("InvalidRequest", "This copy request is illegal because it is trying to copy an object "
                      "to itself without changing the object's metadata.")  # fmt: skip
    content_type = entry.content_type
    meta = s3meta.kept(entry)
    if directive == "REPLACE":
        content_type = call.request.headers.get("Content-Type") or DEFAULT_CONTENT_TYPE
        meta = s3meta.from_request(call.sig.headers)

    refs = by_reference(call.node, resolved, 0, entry.size)
    if refs is not None:
        md5 = plain_md5(entry)
        meta = {**meta, "md5": md5} if md5 else meta
        result = await call.node.cluster.composer.compose(dest, refs, content_type, meta, md5=not md5)
    else:

        async def body() -> AsyncIterator[bytes]:
            async for piece in reads.read_range(resolved, 0, entry.size):
                yield piece

        writes = call.node.cluster.writes
        result = await writes.put(
            dest, body(), content_type, entry.sha256 or None, entry.size, meta=meta, md5=True
        )
    headers = s3meta.version_headers(result.entry)
    if vid is not None:
        headers["x-amz-copy-source-version-id"] = vid
    return web.Response(
        body=s3xml.copy_result(etag(result.entry), result.entry.modified), content_type="application/xml",
        headers=headers,
    )
