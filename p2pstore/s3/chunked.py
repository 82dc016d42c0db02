"""aws-chunked request bodies, sans I/O: a decoder fed bytes as they arrive that returns the
payload bytes and checks every chunk signature (STREAMING-AWS4-HMAC-SHA256-PAYLOAD) and the
trailing headers (the *-TRAILER modes); plus the async transform that runs it over a stream.

Body shape: ``<hex size>[;chunk-signature=<sig>]\\r\\n<bytes>\\r\\n`` per chunk, a last chunk of
size 0, then (trailer modes) ``name:value\\r\\n`` lines and an empty line. A chunk's data is passed
on as it arrives, before its signature can be checked at the chunk's end: a bad signature,
truncation or bad trailer raises before the stream ends, so the write it feeds never commits.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from . import sigv4
from .errors import S3Error

MAX_LINE = 4096  # a chunk header or trailer line
MAX_TRAILERS = 16
MAX_CHUNK = 1 << 30


@dataclass
class ChunkSigner:
    """The expected signature of each chunk, chained from the request's own signature."""

    key: bytes
    amz_date: str
    scope: sigv4.Scope
    previous: str

    def chunk(self, sha256_hex: str) -> str:
        sig = sigv4.sign(
            self.key, sigv4.chunk_string_to_sign(self.amz_date, self.scope, self.previous, sha256_hex)
        )
        self.previous = sig
        return sig

    def trailer(self, trailer: bytes) -> str:
        return sigv4.sign(
            self.key, sigv4.trailer_string_to_sign(self.amz_date, self.scope, self.previous, trailer)
        )


def malformed(message: str) -> S3Error:
    return S3Error("InvalidRequest", f"malformed aws-chunked body: {message}")


class AwsChunkedDecoder:
    """Feed it the raw body; it returns payload bytes and raises S3Error on the first fault."""

    def __init__(
        self, signer: ChunkSigner | None = None, trailers: bool = False, decoded_length: int | None = None
    ) -> None:
        self.signer = signer
        self.expect_trailers = trailers
        self.decoded_length = decoded_length
        self.buf = b""
        self.state = "header"  # header | data | data-end | last | trailer | done
        self.remaining = 0
        self.chunk_sig = ""
        self.chunk_hash = hashlib.sha256() if signer else None
        self.decoded = 0
        self.trailers: dict[str, str] = {}
        self.trailer_raw = b""
        self.trailer_signature: str | None = None

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        buf = self.buf + data if self.buf else bytes(data)
        pos = 0
        while pos < len(buf):
            if self.state == "data":
                take = min(self.remaining, len(buf) - pos)
                piece = buf[pos : pos + take]
                if self.chunk_hash is not None:
                    self.chunk_hash.update(piece)
                out.append(piece)
                self.decoded += take
                self.remaining -= take
                pos += take
                if self.remaining == 0:
                    self.state = "data-end"
                continue
            if self.state == "done":
                raise malformed("bytes after the end of the body")
            end = buf.find(b"\r\n", pos)
            if end < 0:
                if len(buf) - pos > MAX_LINE:
                    raise malformed("line too long")
                break
            line = buf[pos:end]
            pos = end + 2
            if self.state == "header":
                self._header(line)
            elif self.state == "data-end":
                if line:
                    raise malformed("chunk data longer than its declared size")
                self._chunk_done()
                self.state = "header"
            elif self.state == "trailer":
                self._trailer_line(line)
            elif self.state == "last":
                if line:
                    raise malformed("bytes after the final chunk")
                self.state = "done"
        self.buf = buf[pos:]
        if self.decoded_length is not None and self.decoded > self.decoded_length:
            raise S3Error("InvalidRequest", "the body is longer than x-amz-decoded-content-length")
        return out

    def _header(self, line: bytes) -> None:
        size_hex, _, ext = line.partition(b";")
        try:
            size = int(size_hex, 16)
        except ValueError:
            raise malformed("a chunk size is not hexadecimal") from None
        if size < 0 or size > MAX_CHUNK or len(size_hex) > 16:
            raise malformed("a chunk size is out of range")
        if self.signer is not None:
            name, _, sig = ext.partition(b"=")
            if name.strip() != b"chunk-signature" or not sig:
                raise S3Error("SignatureDoesNotMatch", "a chunk has no chunk-signature")
            self.chunk_sig = sig.strip().decode("ascii", "replace")
        self.remaining = size
        if size == 0:
            self._chunk_done()  # the final chunk's signature covers the empty string
            self.state = "trailer" if self.expect_trailers else "last"
        else:
            self.state = "data"

    def _chunk_done(self) -> None:
        if self.signer is None or self.chunk_hash is None:
            return
        expected = self.signer.chunk(self.chunk_hash.hexdigest())
        self.chunk_hash = hashlib.sha256()
        if not sigv4.same(expected, self.chunk_sig):
            raise S3Error("SignatureDoesNotMatch", "a chunk signature does not match")

    def _trailer_line(self, line: bytes) -> None:
        if not line:
            self._trailers_done()
            return
        if len(self.trailers) >= MAX_TRAILERS:
            raise malformed("too many trailing headers")
        name, colon, value = line.partition(b":")
        if not colon:
            raise malformed("a trailing header has no ':'")
        key = name.strip().lower().decode("ascii", "replace")
        text = value.strip().decode("ascii", "replace")
        if key == "x-amz-trailer-signature":
            self.trailer_signature = text
        else:
            self.trailers[key] = text
            self.trailer_raw += f"{key}:{text}\n".encode()

    def _trailers_done(self) -> None:
        if self.signer is not None:
            if self.trailer_signature is None:
                raise S3Error("SignatureDoesNotMatch", "the trailer has no x-amz-trailer-signature")
            if not sigv4.same(self.signer.trailer(self.trailer_raw), self.trailer_signature):
                raise S3Error("SignatureDoesNotMatch", "the trailer signature does not match")
        self.state = "done"

    def finish(self) -> None:
        """The body ended: raise unless it ended where an aws-chunked body may end."""
        rest = self.buf
        self.buf = b""
        if self.state == "last" and rest == b"":
            self.state = "done"  # tolerated: no empty line after the final chunk
        elif self.state == "trailer" and (self.trailers or self.trailer_signature) and rest in (b"", b"\r\n"):
            self._trailers_done()  # tolerated: a body whose last trailer line ends it
        if self.state != "done" or rest.strip():
            raise S3Error("IncompleteBody", "You did not provide the number of bytes specified by the "
                          "Content-Length HTTP header / aws-chunked framing.")  # fmt: skip
        if self.decoded_length is not None and self.decoded != self.decoded_length:
            raise S3Error("IncompleteBody", "the body is shorter than x-amz-decoded-content-length")


async def decode(body: AsyncIterator[bytes], decoder: AwsChunkedDecoder) -> AsyncIterator[bytes]:
    """The payload of an aws-chunked stream; raises (before ending) on any fault."""
    async for piece in body:
        for out in decoder.feed(piece):
            yield out
    decoder.finish()
