"""Multipart uploads, sans I/O: where an upload and its parts live in the native namespace, S3's
limits on parts, the checks of a CompleteMultipartUpload against the parts stored, and the
multipart ETag. The handlers (multipart.py) do the reading and writing.

An upload is the record ``.p2pstore/s3/uploads/<bucket>/<upload id>/upload`` (JSON: the object
key, owner, content type, metadata; the key is also in the entry's meta, so listings need no
reads) and its parts are ``.../<upload id>/part-00001`` …, each written through the coordinator
like any object, with its MD5.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass

from .errors import S3Error
from .xml import child_text, local, parse

UPLOADS = ".p2pstore/s3/uploads/"
RECORD = "upload"
PART_PREFIX = "part-"
MIN_PART = 5 * 1024**2  # every part but the last
MAX_PART = 5 * 1024**3
MAX_PARTS = 10_000
KEY_META = "s3-key"  # the record entry's meta: the object key the upload is for
DONE_META = "s3-completed"  # … and, once completed, this (listings leave it out)


def upload_prefix(bucket: str, upload_id: str = "") -> str:
    """The folder of one upload (or, without an id, of a bucket's uploads)."""
    return f"{UPLOADS}{bucket}/{upload_id}/" if upload_id else f"{UPLOADS}{bucket}/"


def record_key(bucket: str, upload_id: str) -> str:
    return upload_prefix(bucket, upload_id) + RECORD


def part_key(bucket: str, upload_id: str, number: int) -> str:
    return f"{upload_prefix(bucket, upload_id)}{PART_PREFIX}{number:05d}"


def part_number_of(key: str) -> int | None:
    """The part number a part's native key names, None for anything else."""
    name = key.rsplit("/", 1)[-1]
    digits = name.removeprefix(PART_PREFIX)
    return int(digits) if name.startswith(PART_PREFIX) and digits.isdigit() else None


def valid_upload_id(upload_id: str | None) -> bool:
    """Upload ids are 32 lowercase hex digits (uuid4): anything else names no upload."""
    return bool(upload_id) and len(upload_id) == 32 and all(c in "0123456789abcdef" for c in upload_id)


def part_number(raw: str | None) -> int:
    if raw is None or not raw.isdigit() or not 1 <= int(raw) <= MAX_PARTS:
        raise S3Error(
            "InvalidArgument", f"Part number must be an integer between 1 and {MAX_PARTS}, inclusive"
        )
    return int(raw)


def bare(etag: str) -> str:
    """An ETag without quotes (clients send them either way)."""
    return etag.strip().strip('"')


def multipart_etag(md5s_hex: list[str]) -> str:
    """S3's ETag of a multipart object: the MD5 of the parts' binary MD5s, a dash, the count."""
    digest = hashlib.md5(b"".join(bytes.fromhex(m) for m in md5s_hex), usedforsecurity=False)
    return f"{digest.hexdigest()}-{len(md5s_hex)}"


@dataclass(frozen=True)
class StoredPart:
    number: int
    etag: str  # bare: the part's MD5 in hex
    size: int


def parse_complete(body: bytes) -> list[tuple[int, str]]:
    """<CompleteMultipartUpload>'s parts as (number, bare ETag), in the order given."""
    root = parse(body)
    if local(root.tag) != "CompleteMultipartUpload":
        raise S3Error("MalformedXML", "The XML you provided did not validate: the root must be "
                      "<CompleteMultipartUpload>.")  # fmt: skip
    parts: list[tuple[int, str]] = []
    for child in root:
        if local(child.tag) != "Part":
            continue
        number, etag = child_text(child, "PartNumber"), child_text(child, "ETag")
        if number is None or etag is None or not number.strip().isdigit():
            raise S3Error("MalformedXML", "The XML you provided did not validate: every <Part> needs a "
                          "<PartNumber> and an <ETag>.")  # fmt: skip
        parts.append((int(number.strip()), bare(etag)))
    if not parts:
        raise S3Error("MalformedXML", "The XML you provided did not validate: no <Part> given.")
    if len(parts) > MAX_PARTS:
        raise S3Error("MalformedXML", f"The XML you provided did not validate: more than {MAX_PARTS} parts.")
    return parts


def check_order(requested: list[tuple[int, str]]) -> None:
    """InvalidPartOrder unless part numbers ascend strictly."""
    numbers = [n for n, _ in requested]
    if any(b <= a for a, b in itertools.pairwise(numbers)):
        raise S3Error("InvalidPartOrder", "The list of parts was not in ascending order. The parts list must "
                      "be specified in order by part number.")  # fmt: skip


def check_parts(
    requested: list[tuple[int, str]], stored: dict[int, StoredPart], min_part: int = MIN_PART
) -> list[StoredPart]:
    """The stored parts a Complete names, in order, after S3's checks: every part exists with the
    ETag given (InvalidPart), every part but the last is at least ``min_part`` (EntityTooSmall)."""
    check_order(requested)
    chosen: list[StoredPart] = []
    for number, etag in requested:
        part = stored.get(number)
        if part is None or part.etag != etag:
            raise S3Error("InvalidPart", "One or more of the specified parts could not be found. The part "
                          "may not have been uploaded, or the specified entity tag may not match the "
                          "part's entity tag.", PartNumber=str(number), ETag=etag)  # fmt: skip
        chosen.append(part)
    for part in chosen[:-1]:
        if part.size < min_part:
            raise S3Error("EntityTooSmall", "Your proposed upload is smaller than the minimum allowed object "
                          "size.", PartNumber=str(part.number), ProposedSize=str(part.size),
                          MinSizeAllowed=str(min_part))  # fmt: skip
    return chosen


def parse_copy_range(raw: str | None, size: int) -> tuple[int, int]:
    """x-amz-copy-source-range ``bytes=first-last`` (inclusive) as [start, end); whole without it."""
    if raw is None:
        return 0, size
    spec = raw.strip().removeprefix("bytes=")
    first, sep, last = spec.partition("-")
    if not raw.strip().startswith("bytes=") or not sep or not first.isdigit() or not last.isdigit():
        raise S3Error("InvalidArgument", "The x-amz-copy-source-range value must be of the form "
                      "bytes=first-last where first and last are the zero-based offsets of the first and "
                      "last bytes to copy")  # fmt: skip
    start, end = int(first), int(last) + 1
    if start >= end or end > size:
        raise S3Error("InvalidRange", "The requested range is not satisfiable", ActualObjectSize=str(size))
    return start, end

