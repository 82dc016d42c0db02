"""Node-to-node calls: msgpack messages over one upgraded TCP stream per peer (see rpc.py), bulk bytes
(staged uploads, chunks) over aiohttp keep-alive HTTP, all authenticated by the secret.

The cluster secret travels as ``Authorization: Bearer <secret>`` on every internal request and
is compared in constant time by the receiving node. Run clusters on a private network or behind
TLS: the secret is a shared password, not encryption. Every internal request also names the
protocol version it speaks (``PROTOCOL_HEADER``); a node refuses another version with 426.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from ..errors import InsufficientStorage, PayloadTooLarge, Refused
from .codec import MAX_MESSAGE_BYTES, MSGPACK, PROTOCOL_HEADER, PROTOCOL_VERSION, WRONG_PROTOCOL, pack, unpack
from .rpc import RpcClient, RpcError

log = logging.getLogger("p2pstore.transport")
INTERNAL_PREFIX = "/_internal"
# How a peer's refusal that the client must hear arrives (a status code on the wire)
REFUSALS: dict[int, type[Refused]] = {413: PayloadTooLarge, 507: InsufficientStorage}
_warned_refusal: set[str] = set()
UNAUTHORIZED = 401


class PeerError(Exception):
    """A peer could not be reached or answered with an error (``status``: its code, if any)."""

    def __init__(self, address: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{address}: {message}")
        self.address = address
        self.status = status
        if status in (UNAUTHORIZED, WRONG_PROTOCOL) and address not in _warned_refusal:
            _warned_refusal.add(address)  # one line per peer; /health says it all the while
            why = "wrong cluster secret" if status == UNAUTHORIZED else "another protocol version"
            log.error("peer %s refused us (%s): %s", address, why, message)

    def refusal(self, node_id: str) -> Refused | None:
        """The peer refused for a reason the client must hear (too large, disk full), as the
        domain error to pass on; None for any other failure."""
        kind = REFUSALS.get(self.status or 0)
        return kind(f"replica {node_id} refused: {self}") if kind is not None else None


class Transport:
    """One pooled client session for all peers, with the secret attached."""

    def __init__(self, secret: str, timeout: float = 5.0) -> None:
        self.secret = secret
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._rpc: RpcClient | None = None
        self.headers = {"Authorization": f"Bearer {secret}", PROTOCOL_HEADER: str(PROTOCOL_VERSION)}

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=256, limit_per_host=64, keepalive_timeout=30),
                headers=self.headers,
                auto_decompress=False,
            )
        return self._session

    @property
    def rpc(self) -> RpcClient:
        if self._rpc is None:
            self._rpc = RpcClient(self.headers)
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

    async def call(self, address: str, path: str, message: Any, timeout: float | None = None) -> Any:
        """Send a message to the peer's ``/_internal{path}`` handler on the RPC stream and
        return its reply."""
        try:
            return await self.rpc.call(address, path.lstrip("/"), message, timeout or self.timeout)
        except RpcError as exc:
            raise PeerError(address, str(exc), exc.status) from exc

    async def post_raw(
        self, address: str, path: str, data: bytes, headers: dict[str, str], timeout: float | None = None
    ) -> Any:
        """POST raw bytes (metadata in ``headers``) and return the decoded msgpack reply: a body
        of hundreds of KiB is not copied into and out of a msgpack message on both ends."""
        headers = {"Content-Type": "application/octet-stream", **headers}
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

    async def get_bytes(self, address: str, path: str, idle: float = 60.0) -> bytes:
        """GET bytes; a peer that sends nothing for ``idle`` seconds (frozen, partitioned) fails
        the call, however long a steady transfer takes."""
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=min(idle, 5.0), sock_read=idle)
        try:
            async with self.session.get(self.url(address, path), timeout=timeout) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise PeerError(address, f"HTTP {resp.status}: {body[:200]!r}", resp.status)
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
