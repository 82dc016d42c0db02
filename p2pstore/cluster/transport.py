"""Node-to-node calls: msgpack messages over one upgraded TCP stream per peer (see rpc.py), bulk bytes
(staged uploads, chunks) over aiohttp keep-alive HTTP, all authenticated.

With TLS (``tls``: a client context holding this node's certificate, verifying peers against the
cluster CA) every connection is mutual TLS to the peer's internal port and nothing more is
needed. Without it (``--insecure-plain``) every request and every stream upgrade is signed
with the cluster secret (signing.py); the secret itself never travels. Every internal request
also names the protocol version it speaks (``PROTOCOL_HEADER``); a node refuses another
version with 426.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload

from ..errors import InsufficientStorage, PayloadTooLarge, Refused
from .codec import (
    ENTRY_HEADER,
    MAX_MESSAGE_BYTES,
    MSGPACK,
    PROTOCOL_HEADER,
    PROTOCOL_VERSION,
    WRONG_PROTOCOL,
    pack,
    unpack,
)
from .rpc import TLS_REFUSED, RpcClient, RpcError
from .signing import EMPTY, ENTRY, UNSIGNED, body_digest, sign

log = logging.getLogger("p2pstore.transport")
INTERNAL_PREFIX = "/_internal"
# How a peer's refusal that the client must hear arrives (a status code on the wire)
REFUSALS: dict[int, type[Refused]] = {413: PayloadTooLarge, 507: InsufficientStorage}
_warned_refusal: set[str] = set()
UNAUTHORIZED = 401


class PiecesPayload(Payload):
    """A request body sent from the pieces it is held in, one ``write`` each (the first goes
    out with the headers in one ``writev``): a 1 MiB body received in pieces is not joined
    into a copy of itself just to be sent on."""

    _autoclose = True  # bytes in memory: nothing to close

    def __init__(self, pieces: Sequence[bytes], **kwargs: Any) -> None:
        super().__init__(pieces, content_type="application/octet-stream", **kwargs)
        self._size = sum(len(p) for p in pieces)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return b"".join(self._value).decode(encoding, errors)

    async def write(self, writer: AbstractStreamWriter) -> None:
        for piece in self._value:
            await writer.write(piece)

    async def write_with_length(self, writer: AbstractStreamWriter, content_length: int | None) -> None:
        if content_length is None or content_length >= self._size:
            await self.write(writer)
        else:  # aiohttp asks for at most content_length bytes
            await writer.write(b"".join(self._value)[:content_length])


class PeerError(Exception):
    """A peer could not be reached or answered with an error (``status``: its code, if any)."""

    def __init__(self, address: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{address}: {message}")
        self.address = address
        self.status = status
        if status in (UNAUTHORIZED, WRONG_PROTOCOL, TLS_REFUSED) and address not in _warned_refusal:
            _warned_refusal.add(address)  # one line per peer; /health says it all the while
            why = {UNAUTHORIZED: "wrong cluster secret", TLS_REFUSED: "TLS",
                   WRONG_PROTOCOL: "another protocol version"}[status]  # fmt: skip
            log.error("peer %s refused us (%s): %s", address, why, message)

    def refusal(self, node_id: str) -> Refused | None:
        """The peer refused for a reason the client must hear (too large, disk full), as the
        domain error to pass on; None for any other failure."""
        kind = REFUSALS.get(self.status or 0)
        return kind(f"replica {node_id} refused: {self}") if kind is not None else None


class Transport:
    """One pooled client session for all peers: mutual TLS (``tls``), or requests signed with
    the cluster secret."""

    def __init__(self, secret: str, timeout: float = 5.0, tls: ssl.SSLContext | None = None) -> None:
        self.secret = secret
        self.timeout = timeout
        self.tls = tls
        self.scheme = "https" if tls is not None else "http"
        self._session: aiohttp.ClientSession | None = None
        self._streams: aiohttp.ClientSession | None = None
        self._rpc: RpcClient | None = None
        self.headers = {PROTOCOL_HEADER: str(PROTOCOL_VERSION)}

    def auth(
        self, method: str, address: str, path: str, body: str = EMPTY, entry: str = ""
    ) -> dict[str, str]:
        """The headers that authenticate one request to ``address`` (none over mutual TLS)."""
        if self.tls is not None:
            return {}
        return sign(self.secret, method, address, path, body, entry)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=256, limit_per_host=64, keepalive_timeout=30, ssl=self.tls or True
                ),
                headers=self.headers,
                auto_decompress=False,
            )
        return self._session

    @property
    def stream_session(self) -> aiohttp.ClientSession:
        """The session that streams upload bodies to replicas, apart from the pooled one.

        A streamed body takes as long as the client that sends it, and a pool of 64 connections
        per peer shared with every other request was exhausted by 70 clients trickling uploads
        through one gateway: every other write through it waited for a connection until its
        client gave up. So upload streams have a connector of their own with no count limit:
        how many there are is bounded where they come from (``max_uploads_per_client`` and the
        slow-body cut, api/guard.py), and the bounded pool keeps serving everything else."""
        if self._streams is None or self._streams.closed:
            self._streams = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30, ssl=self.tls or True),
                headers=self.headers,
                auto_decompress=False,
            )
        return self._streams

    @property
    def rpc(self) -> RpcClient:
        if self._rpc is None:
            self._rpc = RpcClient(self.stream_headers, self.tls)
        return self._rpc

    def stream_headers(self, address: str, path: str) -> dict[str, str]:
        """A fresh upgrade request's headers (a new nonce and timestamp per connection)."""
        return {**self.headers, **self.auth("GET", address, path)}

    def refusing(self, address: str) -> bool:
        """The peer at ``address`` refused our last connection attempt moments ago."""
        return self._rpc is not None and self._rpc.refusing(address)

    async def close(self) -> None:
        if self._rpc is not None:
            await self._rpc.close()
        for session in (self._session, self._streams):
            if session is not None:
                await session.close()

    def url(self, address: str, path: str) -> str:
        return f"{self.scheme}://{address}{INTERNAL_PREFIX}{path}"

    async def call(self, address: str, path: str, message: Any, timeout: float | None = None) -> Any:
        """Send a message to the peer's ``/_internal{path}`` handler on the RPC stream and
        return its reply."""
        try:
            return await self.rpc.call(address, path.lstrip("/"), message, timeout or self.timeout)
        except RpcError as exc:
            raise PeerError(address, str(exc), exc.status) from exc

    async def post_raw(
        self, address: str, path: str, data: Sequence[bytes], headers: dict[str, str],
        timeout: float | None = None,
    ) -> Any:  # fmt: skip
        """POST raw bytes, given as the pieces they are held in (metadata in ``headers``), and
        return the decoded msgpack reply: a body of hundreds of KiB is not copied into and out
        of a msgpack message on both ends, nor joined on this one."""
        entry = headers.get(ENTRY_HEADER)
        # a raw write's bytes are checked against its entry
        digest = ENTRY if entry else body_digest(b"".join(data))
        signed = self.auth("POST", address, INTERNAL_PREFIX + path, digest, entry or "")
        headers = {"Content-Type": "application/octet-stream", **headers, **signed}
        try:
            async with self.session.post(
                self.url(address, path), data=PiecesPayload(data), headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout or self.timeout),
            ) as resp:  # fmt: skip
                body = await resp.read()
                if resp.status != 200:
                    raise PeerError(address, f"HTTP {resp.status}: {body[:200]!r}", resp.status)
                return unpack(body) if body else None
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise PeerError(address, f"{type(exc).__name__}: {exc}") from exc

    async def get_pieces(
        self, address: str, path: str, idle: float = 60.0, piece: int | None = 1 << 20
    ) -> list[bytes]:
        """GET a body as pieces of at most ``piece`` bytes (None: one piece): a multi-MiB chunk
        is not gathered in the reader's buffer and then copied into one object (twice its size
        held at once), and a caller sending the pieces on frees each as it goes. A peer that
        sends nothing for ``idle`` seconds (frozen, partitioned) fails the call, however long a
        steady transfer takes."""
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=min(idle, 5.0), sock_read=idle)
        try:
            signed = self.auth("GET", address, INTERNAL_PREFIX + path)
            async with self.session.get(self.url(address, path), timeout=timeout, headers=signed) as resp:
                if resp.status != 200:
                    body = await resp.read()
                    raise PeerError(address, f"HTTP {resp.status}: {body[:200]!r}", resp.status)
                left = resp.content_length
                if left is None:
                    return [await resp.read()]
                pieces = []
                while left > 0:
                    block = await resp.content.readexactly(min(piece or left, left))
                    pieces.append(block)
                    left -= len(block)
                return pieces
        except (TimeoutError, aiohttp.ClientError, OSError, asyncio.IncompleteReadError) as exc:
            raise PeerError(address, f"{type(exc).__name__}: {exc}") from exc

    async def put_stream(
        self, address: str, path: str, body: AsyncIterator[bytes], headers: dict[str, str]
    ) -> Any:
        """Stream a body to a peer (no total timeout: big files take time; idle reads time out)."""
        try:
            async with self.stream_session.put(
                self.url(address, path),
                data=body,
                headers={**headers, **self.auth("PUT", address, INTERNAL_PREFIX + path, UNSIGNED)},
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=120),
            ) as resp:
                raw = await resp.read()
                if resp.status != 200:
                    raise PeerError(address, f"HTTP {resp.status}: {raw[:200]!r}", resp.status)
                return unpack(raw)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise PeerError(address, f"{type(exc).__name__}: {exc}") from exc


__all__ = ["INTERNAL_PREFIX", "MAX_MESSAGE_BYTES", "MSGPACK", "PeerError", "Transport", "pack", "unpack"]
