"""Node-to-node calls: msgpack messages over one upgraded TCP stream per peer (see rpc.py), bulk bytes
(staged uploads, chunks) over aiohttp keep-alive HTTP, all authenticated by the secret.

The cluster secret travels as ``Authorization: Bearer <secret>`` on every internal request and
is compared in constant time by the receiving node. Run clusters on a private network or behind
TLS: the secret is a shared password, not encryption.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from .codec import MAX_MESSAGE_BYTES, MSGPACK, pack, unpack
from .rpc import RpcClient, RpcError, RpcUnsupported

HTTP_ONLY_RECHECK = 60.0  # seconds before a peer that lacked the RPC stream is offered it again


INTERNAL_PREFIX = "/_internal"


class PeerError(Exception):
    """A peer could not be reached or answered with an error."""

    def __init__(self, address: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{address}: {message}")
        self.address = address
        self.status = status


class Transport:
    """One pooled client session for all peers, with the secret attached."""

    def __init__(self, secret: str, timeout: float = 5.0) -> None:
        self.secret = secret
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._rpc: RpcClient | None = None
        # peers without the RPC endpoint (older versions) -> when that was found (asked again
        # after HTTP_ONLY_RECHECK: in a rolling upgrade the node at an address gets upgraded)
        self._http_only: dict[str, float] = {}

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=256, limit_per_host=64, keepalive_timeout=30),
                headers={"Authorization": f"Bearer {self.secret}"},
                auto_decompress=False,
            )
        return self._session

    @property
    def rpc(self) -> RpcClient:
        if self._rpc is None:
            self._rpc = RpcClient({"Authorization": f"Bearer {self.secret}"})
        return self._rpc

    def refusing(self, address: str) -> bool:
        """The peer at ``address`` refused our last connection attempt moments ago."""
        return self._rpc is not None and self._rpc.refusing(address)

    async def close(self) -> None:
        if self._rpc is not None:
            await self._rpc.close()
        if self._session is not None:
            await self._session.close()

    def url(self, address: str, path: str) -> str:
        return f"http://{address}{INTERNAL_PREFIX}{path}"

    async def call(
        self, address: str, path: str, message: Any, timeout: float | None = None, bulk: bool = False
    ) -> Any:
        """Send a message to the peer's ``/_internal{path}`` handler and return its reply.

        ``bulk`` messages (a file body of hundreds of KiB) go as one HTTP request: on the stream
        the body would be copied into and out of a msgpack message on both ends."""
        if not bulk and not self._http_only_now(address):
            try:
                return await self.rpc.call(address, path.lstrip("/"), message, timeout or self.timeout)
            except RpcUnsupported:
                self._http_only[address] = time.monotonic()
            except RpcError as exc:
                raise PeerError(address, str(exc), exc.status) from exc
        return await self.post(address, path, message, timeout)

    def _http_only_now(self, address: str) -> bool:
        found = self._http_only.get(address)
        if found is None:
            return False
        if time.monotonic() - found < HTTP_ONLY_RECHECK:
            return True
        del self._http_only[address]
        return False

    async def post(self, address: str, path: str, message: Any, timeout: float | None = None) -> Any:
        """POST a msgpack message as one HTTP request and return the decoded msgpack reply."""
        return await self._post(address, path, pack(message), {"Content-Type": MSGPACK}, timeout)

    async def post_raw(
        self, address: str, path: str, data: bytes, headers: dict[str, str], timeout: float | None = None
    ) -> Any:
        """POST raw bytes (metadata in ``headers``) and return the decoded msgpack reply."""
        headers = {"Content-Type": "application/octet-stream", **headers}
        return await self._post(address, path, data, headers, timeout)

    async def _post(
        self, address: str, path: str, data: bytes, headers: dict[str, str],
        timeout: float | None,
    ) -> Any:  # fmt: skip
        try:
            async with self.session.post(
                self.url(address, path), data=data, headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout or self.timeout),
            ) as resp:  # fmt: skip
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


__all__ = ["INTERNAL_PREFIX", "MAX_MESSAGE_BYTES", "MSGPACK", "PeerError", "Transport", "pack", "unpack"]
