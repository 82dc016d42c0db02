"""S3 object versions (docs/versions.md): PutBucketVersioning/GetBucketVersioning,
ListObjectVersions, GET/HEAD/DELETE with ``versionId``. Versions themselves are kept by the
replicas (core/versions.py); a bucket's setting and the operations on versions are in
cluster/versioning.py, shared with the native API."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from aiohttp import web

from ..cluster import versioning as folders
from ..core.manifest import ManifestEntry
from ..core.versions import VERSIONS_PREFIX, base_of, version_id
from ..errors import BadRequest, NotFound, StoreError
from . import lifecycle, objects
from . import xml as s3xml
from .context import S3Call
from .errors import S3Error
from .meta import etag
from .payload import read_all

MAX_KEYS = 1000
MAX_BODY = 64 * 1024
LIST_CAP = 200_000  # versions one listing reads at most (a bucket's versions are read whole)
VERSIONS_PARAMS = {"versions", "prefix", "delimiter", "key-marker", "version-id-marker", "max-keys",
                   "encoding-type"}  # fmt: skip
OBJECT_VERSION_PARAMS = {"versionId", *objects.RESPONSE_OVERRIDES}


Handler = Callable[[S3Call], Awaitable[web.StreamResponse]]


def route(call: S3Call, method: str, params: set[str]) -> Handler | None:
    """The versioning operation this request is, if any (bucket or object)."""
    if not call.object_key:
        if params == {"versioning"}:
            return {"GET": get_versioning, "PUT": put_versioning}.get(method)
        if params == {"lifecycle"}:
            return lifecycle.HANDLERS.get(method)
        if params == {"delete"} and method == "POST":
            return delete_objects
        if method == "GET" and "versions" in params and params <= VERSIONS_PARAMS:
            return list_versions
        return None
    if "versionId" in params and params <= OBJECT_VERSION_PARAMS:
        if method in ("GET", "HEAD"):
            return get_version
        if method == "DELETE" and params == {"versionId"}:
            return delete_version
    return None


async def get_versioning(call: S3Call) -> web.Response:
    await call.bucket_for("read")
    status = folders.settings(call.node.store, call.bucket).get("status")
    return _xml(s3xml.document("VersioningConfiguration", s3xml.el("Status", status) if status else ""))


async def put_versioning(call: S3Call) -> web.Response:
    await call.bucket_for("write")
    root = s3xml.parse(await read_all(call.request, call.verified, MAX_BODY))
    status = s3xml.child_text(root, "Status")
    if s3xml.local(root.tag) != "VersioningConfiguration" or status not in folders.STATUSES:
        raise S3Error("MalformedXML", "VersioningConfiguration needs a Status of Enabled or Suspended")
    if s3xml.child_text(root, "MfaDelete") not in (None, "Disabled"):
        raise S3Error("NotImplemented", "MFA delete is not implemented")
    await call.node.cluster.versions.set_settings(call.bucket, status=status)
    return web.Response(status=200)


async def get_version(call: S3Call) -> web.StreamResponse:
    await call.bucket_for("read")
    key = objects.native_key(call, call.bucket, call.object_key)
    vid = call.param("versionId") or ""
    try:
        resolved = await call.node.cluster.versions.resolve(key, vid)
    except NotFound:
        raise S3Error("NoSuchVersion", "The specified version does not exist.", Key=call.object_key,
                      VersionId=vid) from None  # fmt: skip
    except BadRequest:  # a delete marker: S3 answers 405 with the marker's headers
        err = S3Error("MethodNotAllowed", "The specified method is not allowed against this resource.")
        err.headers = {"x-amz-delete-marker": "true", "x-amz-version-id": vid}
        raise err from None
    return await objects.get_object(call, resolved)


async def delete_version(call: S3Call) -> web.Response:
    await call.bucket_for("write")
    key = objects.native_key(call, call.bucket, call.object_key)
    vid = call.param("versionId") or ""
    headers = {"x-amz-version-id": vid}
    try:
        removed = await call.node.cluster.versions.remove(key, vid)
    except NotFound:
        return web.Response(status=204, headers=headers)  # as S3: deleting a missing version succeeds
    if removed.deleted:
        headers["x-amz-delete-marker"] = "true"
    return web.Response(status=204, headers=headers)


async def delete_objects(call: S3Call) -> web.Response:
    """DeleteObjects naming versions (``<VersionId>``): each one removed for good, as
    DeleteObject with ``versionId``; without any, the plain DeleteObjects (objects.py)."""
    await call.bucket_for("write")
    body = await read_all(call.request, call.verified, objects.MAX_DELETE_BODY)
    if b"VersionId" not in body:
        return await objects.delete_objects(call, body)
    root = s3xml.parse(body)
    quiet = (s3xml.child_text(root, "Quiet") or "").strip().lower() == "true"
    items = [(s3xml.child_text(c, "Key"), s3xml.child_text(c, "VersionId"))
             for c in root if s3xml.local(c.tag) == "Object"]  # fmt: skip
    if s3xml.local(root.tag) != "Delete" or not 0 < len(items) <= 1000 or any(k is None for k, _ in items):
        raise S3Error(
            "MalformedXML", "The XML you provided did not validate: 1 to 1000 <Object> with a <Key>."
        )
    ops = call.node.cluster.versions
    parts: list[str] = []
    for key, vid in items:
        assert key is not None
        try:
            native = objects.native_key(call, call.bucket, key)
            fields = s3xml.el("Key", key)
            if vid:
                fields += s3xml.el("VersionId", vid)
                with contextlib.suppress(NotFound):
                    if (await ops.remove(native, vid)).deleted:
                        fields += s3xml.el("DeleteMarker", "true") + s3xml.el("DeleteMarkerVersionId", vid)
            else:
                with contextlib.suppress(NotFound):
                    made = (await call.node.cluster.writes.delete(native)).entry
                    if folders.is_marker(made):
                        fields += s3xml.el("DeleteMarker", "true")
                        fields += s3xml.el("DeleteMarkerVersionId", version_id(made))
        except S3Error as exc:
            parts.append(_error(key, exc.code, exc.message))
            continue
        except StoreError as exc:
            parts.append(_error(key, "InternalError", exc.message))
            continue
        if not quiet:
            parts.append(f"<Deleted>{fields}</Deleted>")
    return _xml(s3xml.document("DeleteResult", "".join(parts)))


def _error(key: str, code: str, message: str) -> str:
    return f"<Error>{s3xml.el('Key', key)}{s3xml.el('Code', code)}{s3xml.el('Message', message)}</Error>"


def _max_keys(call: S3Call) -> int:
    raw = call.param("max-keys")
    if raw is None or raw == "":
        return MAX_KEYS
    if not raw.isdigit():
        raise S3Error("InvalidArgument", "Provided max-keys not an integer or within integer range")
    return min(int(raw), MAX_KEYS)


def bucket_versions(call: S3Call, prefix: str) -> list[tuple[str, list[ManifestEntry]]]:
    """Every key under ``prefix`` with its versions (newest first), in key order, from this
    node's manifest: the current entries, then the kept ones, merged by key."""
    db = call.node.store.db
    base = call.bucket + "/"
    grouped: dict[str, list[ManifestEntry]] = {}
    for start in (base + prefix, VERSIONS_PREFIX + base + prefix):
        after = ""
        while True:
            page = db.list(start, after, 5000, include_deleted=True)
            for e in page:
                name = base_of(e.key) or e.key
                if e.deleted and not folders.is_marker(e):
                    continue
                grouped.setdefault(name[len(base) :], []).append(e)
            if len(page) < 5000 or sum(map(len, grouped.values())) > LIST_CAP:
                break
            after = page[-1].key
    return [(k, sorted(grouped[k], key=lambda e: e.version, reverse=True)) for k in sorted(grouped)]


async def list_versions(call: S3Call) -> web.Response:
    """ListObjectVersions: keys in order, each key's versions newest first, delete markers
    among them; ``key-marker``/``version-id-marker`` pagination, ``prefix``, ``delimiter``."""
    await call.bucket_for("read")
    prefix = call.param("prefix") or ""
    delimiter = call.param("delimiter") or ""
    key_marker = call.param("key-marker") or ""
    vid_marker = call.param("version-id-marker") or ""
    encoding = call.param("encoding-type")
    if encoding not in (None, "url"):
        raise S3Error("InvalidArgument", "Invalid Encoding Method specified in Request")
    if vid_marker and not key_marker:
        raise S3Error("InvalidArgument", "A version-id marker cannot be specified without a key marker.")
    max_keys = _max_keys(call)

    def enc(text: str) -> str:
        return quote(text, safe="/") if encoding == "url" else text

    owner = s3xml.owner(call.key.key_id, call.key.name)
    parts: list[str] = []
    prefixes: list[str] = []
    count = 0
    truncated = False
    next_key = next_vid = ""
    for key, versions in bucket_versions(call, prefix):
        if key < key_marker:
            continue
        if delimiter and (i := key.find(delimiter, len(prefix))) >= 0:
            common = key[: i + len(delimiter)]
            if (prefixes and prefixes[-1] == common) or key_marker.startswith(common):
                continue
            if count == max_keys:
                truncated = True
                break
            prefixes.append(common)
            count += 1
            next_key, next_vid = common, ""
            continue
        todo = list(enumerate(versions))
        if key == key_marker:
            if not vid_marker:
                continue
            ids = [version_id(v) for v in versions]
            todo = todo[ids.index(vid_marker) + 1 :] if vid_marker in ids else []
        for i, v in todo:
            if count == max_keys:
                truncated = True
                break
            count += 1
            next_key, next_vid = key, version_id(v)
            common_fields = (
                f"{s3xml.el('Key', enc(key))}{s3xml.el('VersionId', version_id(v))}"
                f"{s3xml.el('IsLatest', 'true' if i == 0 else 'false')}"
                f"{s3xml.el('LastModified', s3xml.iso8601(v.modified))}"
            )
            if v.deleted:
                parts.append(f"<DeleteMarker>{common_fields}{owner}</DeleteMarker>")
            else:
                parts.append(
                    f"<Version>{common_fields}{s3xml.el('ETag', etag(v))}{s3xml.el('Size', v.size)}"
                    f"{s3xml.el('StorageClass', 'STANDARD')}{owner}</Version>"
                )
        if truncated:
            break
    head = [s3xml.el("Name", call.bucket), s3xml.el("Prefix", enc(prefix)),
            s3xml.el("KeyMarker", enc(key_marker)), s3xml.el("VersionIdMarker", vid_marker),
            s3xml.el("MaxKeys", max_keys)]  # fmt: skip
    if delimiter:
        head.append(s3xml.el("Delimiter", enc(delimiter)))
    if encoding:
        head.append(s3xml.el("EncodingType", encoding))
    head.append(s3xml.el("IsTruncated", "true" if truncated else "false"))
    if truncated:
        head.append(s3xml.el("NextKeyMarker", enc(next_key)))
        if next_vid:
            head.append(s3xml.el("NextVersionIdMarker", next_vid))
    tail = "".join(f"<CommonPrefixes>{s3xml.el('Prefix', enc(p))}</CommonPrefixes>" for p in prefixes)
    return _xml(s3xml.document("ListVersionsResult", "".join(head) + "".join(parts) + tail))


def _xml(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="application/xml")
