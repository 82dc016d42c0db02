"""Request bodies as the S3 front end sees them: decoded from aws-chunked when the payload mode
says so, and checked as they stream against every checksum the request carries (chunk
signatures, x-amz-checksum-* headers or trailers, Content-MD5, the signed sha256). A mismatch
raises before the stream ends, so the write it feeds never commits."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

from aiohttp import web

from ..api.public import body_stream
from . import checksums, chunked, sigv4
from .errors import S3Error

MAX_SINGLE_PUT = 5 * 1024**3  # S3's limit for one PutObject


@dataclass
class Check:
    """One checksum of the payload: the hasher, and what it must equal once the body ended."""

    hasher: checksums.Hasher
    expected: Callable[[], bytes | None]
    code: str
    message: str


@dataclass
class Upload:
    stream: AsyncIterator[bytes]
    length: int | None  # of the payload, when the request tells it
    sha256: str | None  # the signed sha256 of the payload, left for the coordinator to check
    checksum: tuple[str, Callable[[], str]] | None  # x-amz-checksum-* name, its value once checked
    md5: str | None = None  # Content-MD5 (hex), checked by ``stream`` before it ends

    def md5_meta(self) -> tuple[dict[str, str], bool]:
        """(meta, md5) for the write: a Content-MD5 the stream checks is the body's MD5 already
        (kept as "md5", the ETag), so the coordinator need not hash the body with MD5 again."""
        if self.md5 is not None:
            return {"md5": self.md5}, False
        return {}, True


def _int_header(headers: dict[str, str] | object, name: str) -> int | None:
    raw = headers.get(name)  # type: ignore[attr-defined]
    if raw is None:
        return None
    if not raw.strip().isdigit():
        raise S3Error("InvalidArgument", f"{name} must be a non-negative integer")
    return int(raw)


def upload(
    request: web.Request,
    verified: sigv4.Verified,
    sha_to_coordinator: bool = True,
    lowered: Mapping[str, str] | None = None,
) -> Upload:
    """The payload of ``request`` as a checked stream.

    With ``sha_to_coordinator`` a signed hex sha256 is not checked here but returned, for the
    write path to compare with the whole-file hash it computes anyway (one hash pass, not two).
    ``lowered``: the request's headers with lower-case names (``S3Call.sig.headers``), so the
    x-amz-checksum-* scan does not lower-case every name again.
    """
    headers = request.headers
    mode = verified.payload
    decoder: chunked.AwsChunkedDecoder | None = None
    if mode in sigv4.STREAMING_MODES:
        length = _int_header(headers, "x-amz-decoded-content-length")
        if length is None:
            raise S3Error("MissingContentLength", "aws-chunked uploads need x-amz-decoded-content-length")
        signer = None
        if mode != sigv4.STREAMING_UNSIGNED_TRAILER:
            signer = chunked.ChunkSigner(verified.key, verified.amz_date, verified.scope, verified.seed)
        trailers = mode in (sigv4.STREAMING_SIGNED_TRAILER, sigv4.STREAMING_UNSIGNED_TRAILER)
        decoder = chunked.AwsChunkedDecoder(signer, trailers, length)
        stream: AsyncIterator[bytes] = chunked.decode(body_stream(request), decoder)
    else:
        length = request.content_length
        if length is None and "chunked" not in headers.get("Transfer-Encoding", "").lower():
            raise S3Error("MissingContentLength", "You must provide the Content-Length HTTP header.")
        stream = body_stream(request)
    if length is not None and length > MAX_SINGLE_PUT:
        raise S3Error("EntityTooLarge", "Your proposed upload exceeds the maximum allowed size (5 GiB).")
    checks: list[Check] = []
    sha = mode if len(mode) == 64 else None
    if sha is not None and not sha_to_coordinator:
        signed = bytes.fromhex(sha)
        checks.append(Check(hashlib.sha256(), lambda: signed, "XAmzContentSHA256Mismatch",
                            "The provided 'x-amz-content-sha256' header does not match what was "
                            "computed."))  # fmt: skip
        sha = None
    md5_hex = None
    if "Content-MD5" in headers:
        md5 = checksums.md5_of_base64(headers["Content-MD5"])
        md5_hex = md5.hex()
        checks.append(Check(hashlib.md5(), lambda: md5, "BadDigest",
                            "The Content-MD5 you specified did not match what we received."))  # fmt: skip
    checksum = _checksum_check(lowered if lowered is not None else _lower(headers), decoder)
    if checksum is not None:
        checks.append(checksum[0])
    named = (checksum[1], checksum[2]) if checksum is not None else None
    return Upload(checked(stream, checks) if checks else stream, length, sha, named, md5_hex)  # type: ignore[arg-type]


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    """Header names lower-cased, repeated values joined with ',' (as SigV4 sees them)."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        name = name.lower()
        out[name] = f"{out[name]},{value}" if name in out else value
    return out


def _checksum_check(
    headers: Mapping[str, str], decoder: chunked.AwsChunkedDecoder | None
) -> tuple[Check, str, Callable[[], str]] | None:
    """The x-amz-checksum-* the request carries, in a header or (aws-chunked) in its trailer.
    ``headers``: names lower-cased."""
    trailer = headers.get("x-amz-trailer", "").strip().lower()
    if trailer:
        if decoder is None or not decoder.expect_trailers:
            raise S3Error("InvalidRequest", "x-amz-trailer needs a STREAMING-*-TRAILER payload")
        if not trailer.startswith(checksums.HEADER_PREFIX):
            raise S3Error("InvalidRequest", f"unsupported trailer {trailer[:60]}")
        hasher = checksums.new(trailer.removeprefix(checksums.HEADER_PREFIX))

        def from_trailer() -> bytes | None:
            value = decoder.trailers.get(trailer)
            if value is None:
                raise S3Error("InvalidRequest", f"the body's trailer lacks {trailer}")
            return _b64(value, trailer)

        check = Check(
            hasher,
            from_trailer,
            "BadDigest",
            f"The {trailer} you specified did not match the calculated checksum.",
        )
        return check, trailer, lambda: decoder.trailers.get(trailer, "")
    found = [
        (name, value)
        for name, value in headers.items()
        if name.startswith(checksums.HEADER_PREFIX) and name != "x-amz-checksum-type"
    ]
    if not found:
        return None
    if len(found) > 1:
        raise S3Error(
            "InvalidRequest",
            "Expecting a single x-amz-checksum- header. Multiple checksum types are not allowed.",
        )
    name, value = found[0]
    hasher = checksums.new(name.removeprefix(checksums.HEADER_PREFIX))
    expected = _b64(value, name)
    check = Check(
        hasher,
        lambda: expected,
        "BadDigest",
        f"The {name} you specified did not match the calculated checksum.",
    )
    return check, name, lambda: value


def _b64(value: str, name: str) -> bytes:
    try:
        return base64.b64decode(value.strip(), validate=True)
    except ValueError:
        raise S3Error("InvalidRequest", f"Value for {name} header is invalid.") from None


async def checked(stream: AsyncIterator[bytes], checks: list[Check]) -> AsyncIterator[bytes]:
    """``stream`` passed through, every check's hasher fed; raises at the end on a mismatch."""
    async for piece in stream:
        for check in checks:
            check.hasher.update(piece)
        yield piece
    for check in checks:
        if check.hasher.digest() != check.expected():
            raise S3Error(check.code, check.message)


async def read_all(request: web.Request, verified: sigv4.Verified, limit: int) -> bytes:
    """A small body (XML) whole, checked; EntityTooLarge past ``limit``."""
    body = upload(request, verified, sha_to_coordinator=False)
    if body.length is not None and body.length > limit:
        raise S3Error("EntityTooLarge", f"the request body is limited to {limit} bytes")
    parts, size = [], 0
    async for piece in body.stream:
        size += len(piece)
        if size > limit:
            raise S3Error("EntityTooLarge", f"the request body is limited to {limit} bytes")
        parts.append(piece)
    return b"".join(parts)
