"""Node-to-node calls: msgpack over aiohttp keep-alive sessions, authenticated by the secret.

The cluster secret travels as ``Authorization: Bearer <secret>`` on every internal request and
is compared in constant time by the receiving node. Run clusters on a private network or behind
TLS: the secret is a shared password, not encryption.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgpack

INTERNAL_PREFIX = "/_internal"
MSGPACK = "application/msgpack"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class PeerError(Exception):
    """A peer could not be reached or answered with an error."""

    def __init__(self, address: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{address}: {message}")
        self.address = address
        self.status = status


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


class Transport:
    """One pooled client session for all peers, with the secret attached."""

    def __init__(self, secret: str, timeout: float = 5.0) -> None:
        self.secret = secret
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=256, limit_per_host=64, keepalive_timeout=30),
                headers={"Authorization": f"Bearer {self.secret}"},
                auto_decompress=False,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def url(self, address: str, path: str) -> str:
        return f"http://{address}{INTERNAL_PREFIX}{path}"

    async def call(self, address: str, path: str, message: Any, timeout: float | None = None) -> Any:
        """POST a msgpack message and return the decoded msgpack reply."""
        try:
            async with self.session.post(
                self.url(address, path),
                data=pack(message),
                headers={"Content-Type": MSGPACK},
                timeout=aiohttp.ClientTimeout(total=timeout or self.timeout),
            ) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise PeerError(address, f"HTTP {resp.status}: {body[:200]!r}", resp.status)
                return unpack(body) if body else None
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise PeerError(address, f"{type(exc).__name__}: {exc}") from exc

    async def get_bytes(self, address: str, path: str, timeout: float | None = None) -> bytes:
        try:
            async with self.session.get(
                self.url(address, path), timeout=aiohttp.ClientTimeout(total=timeout or 60)
            ) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise PeerError(address, f"HTTP {resp.status}", resp.status)
                return body
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise PeerError(address, f"{type(exc).__name__}: {exc}") from exc

    async def put_stream(
        self, address: str, path: str, body: AsyncIterator[bytes], headers: dict[str, str]
    ) -> Any:
        """Stream a body to a peer (no total timeout: big files take time; idle reads time out)."""
        try:
            async with self.session.put(
                self.url(address, path),
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=120),
            ) as resp:
                raw = await resp.read()
                if resp.status != 200:
                    raise PeerError(address, f"HTTP {resp.status}: {raw[:200]!r}", resp.status)
                return unpack(raw)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise PeerError(address, f"{type(exc).__name__}: {exc}") from exc
