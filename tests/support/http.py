"""Async HTTP helpers for integration tests: streamed bodies with known content."""

from __future__ import annotations

import hashlib
import random
from collections.abc import AsyncIterator

BLOCK = 1 << 20


def peer_headers(secret: str) -> dict[str, str]:
    """What a peer sends with every internal request: the cluster secret and protocol version."""
    from p2pstore.cluster.codec import PROTOCOL_HEADER, PROTOCOL_VERSION

    return {"Authorization": f"Bearer {secret}", PROTOCOL_HEADER: str(PROTOCOL_VERSION)}


def pattern_block(seed: int, size: int = BLOCK) -> bytes:
    return random.Random(seed).randbytes(size)


async def generated_body(size: int, seed: int = 0) -> AsyncIterator[bytes]:
    """``size`` pseudo-random bytes in 1 MiB pieces, never held whole in memory."""
    block = pattern_block(seed)
    sent = 0
    while sent < size:
        n = min(BLOCK, size - sent)
        yield block[:n]
        sent += n


def generated_sha256(size: int, seed: int = 0) -> str:
    block = pattern_block(seed)
    digest = hashlib.sha256()
    sent = 0
    while sent < size:
        n = min(BLOCK, size - sent)
        digest.update(block[:n])
        sent += n
    return digest.hexdigest()
