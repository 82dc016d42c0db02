"""The checksums S3 clients send with uploads (x-amz-checksum-*, Content-MD5), computed as the
body streams. crc32, sha1, sha256 and md5 run in C; crc32c and crc64nvme are table-driven pure
Python (a few MB/s), used only when a client asks for them."""

from __future__ import annotations

import base64
import hashlib
import zlib
from typing import Protocol

from .errors import S3Error


class Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...
    def digest(self) -> bytes: ...


class Crc32:
    def __init__(self) -> None:
        self.value = 0

    def update(self, data: bytes) -> None:
        self.value = zlib.crc32(data, self.value)

    def digest(self) -> bytes:
        return self.value.to_bytes(4, "big")


def _table(poly: int) -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


class _ReflectedCrc:
    """A reflected CRC with all-ones start and final xor (crc32c, crc64nvme)."""

    POLY = 0
    BITS = 32
    _tables: dict[int, list[int]] = {}

    def __init__(self) -> None:
        self.mask = (1 << self.BITS) - 1
        self.value = self.mask
        self.table = self._tables.get(self.POLY) or self._tables.setdefault(self.POLY, _table(self.POLY))

    def update(self, data: bytes) -> None:
        c, table = self.value, self.table
        for b in data:
            c = table[(c ^ b) & 0xFF] ^ (c >> 8)
        self.value = c

    def digest(self) -> bytes:
        return (self.value ^ self.mask).to_bytes(self.BITS // 8, "big")


class Crc32c(_ReflectedCrc):
    POLY = 0x82F63B78
    BITS = 32


class Crc64Nvme(_ReflectedCrc):
    POLY = 0x9A6C9329AC4BC9B5
    BITS = 64


ALGORITHMS = {
    "crc32": Crc32,
    "crc32c": Crc32c,
    "crc64nvme": Crc64Nvme,
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
}
HEADER_PREFIX = "x-amz-checksum-"


def new(algorithm: str) -> Hasher:
    """A fresh hasher for an x-amz-checksum-<algorithm>; InvalidRequest for an unknown one."""
    factory = ALGORITHMS.get(algorithm.lower())
    if factory is None:
        raise S3Error("InvalidRequest", f"unsupported checksum algorithm {algorithm[:40]!r}")
    return factory()


def b64(hasher: Hasher) -> str:
    return base64.b64encode(hasher.digest()).decode()


def md5_of_base64(value: str) -> bytes:
    """A Content-MD5 header's 16 bytes; InvalidDigest when it is not base64 of 16 bytes."""
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except ValueError:
        raw = b""
    if len(raw) != 16:
        raise S3Error("InvalidDigest", "The Content-MD5 you specified is not valid.")
    return raw
