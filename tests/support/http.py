"""Async HTTP helpers for integration tests: streamed bodies with known content."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import aiohttp

if TYPE_CHECKING:
    from tests.support.processes import NodeProcess

BLOCK = 1 << 20


def peer_headers(
    secret: str, url: str, method: str = "POST", body: bytes = b"", *, unsigned: str = "", entry: str = ""
) -> dict[str, str]:
    """What a peer sends with one internal request to ``url``: its signature (over the method,
    host, path, a fresh nonce and timestamp and ``body``'s digest, or ``unsigned``: UNSIGNED or
    ENTRY) and the protocol version. Each call signs afresh: a signed request is good once."""
    from urllib.parse import urlsplit

    from p2pstore.cluster.codec import PROTOCOL_HEADER, PROTOCOL_VERSION
    from p2pstore.cluster.signing import body_digest, sign

    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    signed = sign(secret, method, parts.netloc, path, unsigned or body_digest(body), entry)
    return {**signed, PROTOCOL_HEADER: str(PROTOCOL_VERSION)}


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


async def put_all(nodes: list[NodeProcess], files: dict[str, bytes]) -> None:
    """PUT every file, 8 at a time, spread over ``nodes`` in turn; each must answer 201."""
    sem = asyncio.Semaphore(8)
    async with aiohttp.ClientSession() as s:

        async def put(i: int, key: str, data: bytes) -> None:
            async with sem, s.put(f"{nodes[i % len(nodes)].url}/files/{key}", data=data) as r:
                assert r.status == 201, await r.text()

        await asyncio.gather(*(put(i, k, d) for i, (k, d) in enumerate(files.items())))
