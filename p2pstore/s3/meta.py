"""What S3 keeps with an object and shows of it: the ETag (the body's MD5, which the write path
records as meta "md5"), the stored headers (Content-Disposition, -Encoding, -Language,
Cache-Control, Expires), user metadata (x-amz-meta-*) and the upload's x-amz-checksum-*."""

from __future__ import annotations

from collections.abc import Mapping

from ..api.http import http_date
from ..core.manifest import ManifestEntry
from ..core.versions import MARK_PREFIX, version_id
from .errors import S3Error
from .parts import PARTS_META

STORED_HEADERS = ("cache-control", "content-disposition", "content-encoding", "content-language", "expires")
USER_PREFIX = "x-amz-meta-"
CHECKSUM_PREFIX = "x-amz-checksum-"
MAX_USER_META = 2048  # S3's limit on x-amz-meta-* names and values together


def etag(entry: ManifestEntry) -> str:
    """The object's ETag, quoted: the MD5 of the body, or (for an entry written without one,
    e.g. through the native API) the first 128 bits of its sha256, as long and as stable."""
    md5 = next((v for k, v in entry.meta if k == "md5"), None)
    return f'"{md5 or entry.sha256[:32]}"'


def from_request(headers: Mapping[str, str]) -> dict[str, str]:
    """The metadata a PutObject (or CopyObject with REPLACE) asks to keep. ``headers``: names
    lower-cased, repeated values joined (``S3Call.sig.headers``, built once per request)."""
    meta: dict[str, str] = {}
    user = 0
    for name, value in headers.items():
        if name in STORED_HEADERS:
            meta[name] = value
        elif name.startswith(USER_PREFIX):
            meta[name] = value
            user += len(name) - len(USER_PREFIX) + len(value.encode())
    if user > MAX_USER_META:
        raise S3Error("MetadataTooLarge", f"Your metadata headers exceed the maximum allowed metadata size "
                      f"({MAX_USER_META} bytes)")  # fmt: skip
    return meta


def kept(entry: ManifestEntry) -> dict[str, str]:
    """The metadata a CopyObject with COPY carries over (the MD5 is the write path's own; a
    copy is one part, so a multipart source's part sizes stay behind)."""
    return {k: v for k, v in entry.meta if k not in ("md5", PARTS_META) and not k.startswith(MARK_PREFIX)}


def object_headers(entry: ManifestEntry, checksum_mode: bool = False) -> dict[str, str]:
    """What a GetObject/HeadObject answers of an entry, in one pass over its metadata."""
    md5 = None
    marked = False
    kept: list[tuple[str, str]] = []
    for name, value in entry.meta:
        if name == "md5":
            md5 = value
        elif (
            name in STORED_HEADERS
            or name.startswith(USER_PREFIX)
            or (name.startswith(CHECKSUM_PREFIX) and checksum_mode)
        ):
            kept.append((name, value))
        elif name.startswith(MARK_PREFIX):
            marked = True
    headers = {
        "ETag": f'"{md5 or entry.sha256[:32]}"',  # as etag() says
        "Last-Modified": http_date(entry.modified),
        "Content-Type": entry.content_type or "binary/octet-stream",
        "Accept-Ranges": "bytes",
    }
    headers.update(kept)
    if marked:
        headers.update(version_headers(entry))
    return headers


def version_headers(entry: ManifestEntry) -> dict[str, str]:
    """``x-amz-version-id`` (and ``x-amz-delete-marker``) of an entry of a versioned bucket
    (one that carries the store's version marks; docs/versions.md)."""
    if not any(name.startswith(MARK_PREFIX) for name, _ in entry.meta):
        return {}
    headers = {"x-amz-version-id": version_id(entry)}
    if entry.deleted:
        headers["x-amz-delete-marker"] = "true"
    return headers
