"""Node-to-node calls multiplexed over one WebSocket per peer.

Why: on this machine one small HTTP request/response through aiohttp costs ~360 µs of CPU
(client + server), one frame each way on an open WebSocket ~80 µs. A replicated small PUT makes
two internal calls and a GET two more, so the internal hops dominated small-file throughput.

Frames are msgpack arrays: a call ``[id, method, body]``, its answer ``[id, status, body]``
where status is HTTP-like (200 = ``body`` is the result, otherwise ``body`` is the error
message). Calls run concurrently on both ends and answers may arrive in any order. The upgrade
request carries the cluster secret like every other internal request.

A channel that stays silent while a call times out is closed, so a connection that died without
a reset (a partition, a peer's host gone) is replaced by a fresh one on the next call.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from typing import Any

import aiohttp

from .codec import MAX_MESSAGE_BYTES, pack, unpack

MAX_FRAME_BYTES = MAX_MESSAGE_BYTES + 1024 * 1024  # a message plus its envelope
CONNECT_TIMEOUT = 3.0  # a connection attempt (a live peer answers in milliseconds)
REFUSAL_MEMORY = 5.0  # seconds a failed connection attempt keeps a peer out of new writes


class RpcError(Exception):
    """A call failed: the peer could not be reached (status None) or answered an error."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RpcUnsupported(RpcError):
    """The peer has no RPC endpoint (an older version): use plain HTTP requests instead."""


class Connection:
    """One open WebSocket and the calls waiting for an answer on it."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.last_received = time.monotonic()
        self.retired = False
        self._reader = asyncio.ensure_future(self._read())
        self._closing: asyncio.Future[Any] | None = None

    @property
    def open(self) -> bool:
        return not self.ws.closed and not self.retired

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type != aiohttp.WSMsgType.BINARY:
                    break
                self.last_received = time.monotonic()
                call_id, status, body = unpack(msg.data)
                fut = self.pending.get(call_id)
                if fut is None or fut.done():
                    continue  # its caller gave up (timeout)
                if status == 200:
                    fut.set_result(body)
                else:
                    fut.set_exception(RpcError(str(body), int(status)))
        except Exception:  # a garbled frame or a broken socket ends this connection
            pass
        finally:
            for fut in self.pending.values():
                if not fut.done():
                    fut.set_exception(RpcError("connection to peer closed"))
            self.pending.clear()
            self.close_soon()

    def retire(self) -> None:
        """Take no new calls; close once the calls already waiting are answered or time out
        (failing them all at once would turn one slow answer into many failed writes)."""
        self.retired = True
        if not self.pending:
            self.close_soon()

    def done_with(self, call_id: int) -> None:
        self.pending.pop(call_id, None)
        if self.retired and not self.pending:
            self.close_soon()

    def close_soon(self) -> None:
        if self._closing is None:
            self._closing = asyncio.ensure_future(self.ws.close())

    async def close(self) -> None:
        self.retired = True
        with contextlib.suppress(Exception):
            await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader


class Channel:
    """The client end of one peer: its current connection, opened on first use and replaced
    when it breaks or stays silent while a call times out."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url
        self.conn: Connection | None = None
        self.ids = itertools.count(1)
        self.refused_at: float | None = None  # the last failed connection attempt, until one succeeds
        self._connecting = asyncio.Lock()

    @property
    def open(self) -> bool:
        return self.conn is not None and self.conn.open

    async def connect(self, timeout: float) -> Connection:
        async with self._connecting:  # concurrent first calls share one connection attempt
            if self.conn is not None and self.conn.open:
                return self.conn
            try:
                ws = await asyncio.wait_for(
                    self.session.ws_connect(self.url, max_msg_size=MAX_FRAME_BYTES, autoping=True),
                    timeout,
                )
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status in (404, 405):
                    raise RpcUnsupported(f"no RPC endpoint (HTTP {exc.status})") from exc
                raise RpcError(f"RPC handshake refused: HTTP {exc.status}", exc.status) from exc
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                self.refused_at = time.monotonic()
                raise RpcError(f"{type(exc).__name__}: {exc}") from exc
            self.refused_at = None
            self.conn = Connection(ws)
            return self.conn

    async def call(self, method: str, body: Any, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        conn = self.conn
        if conn is None or not conn.open:
            try:  # the whole call keeps its deadline, also while another caller is connecting
                conn = await asyncio.wait_for(self.connect(min(timeout, CONNECT_TIMEOUT)), timeout)
            except TimeoutError as exc:
                raise RpcError(f"no connection for {method} within {timeout:g}s") from exc
        call_id = next(self.ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        conn.pending[call_id] = fut
        sent_at = time.monotonic()
        try:
            await conn.ws.send_bytes(pack([call_id, method, body]))
            return await asyncio.wait_for(fut, max(0.001, deadline - time.monotonic()))
        except TimeoutError as exc:
            if conn.last_received < sent_at and self.conn is conn:
                self.conn = None  # silent since we asked: the link may be dead, use a new one
                conn.retire()
            raise RpcError(f"no answer to {method} within {timeout:g}s") from exc
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
            if self.conn is conn:
                self.conn = None
                conn.retire()
            raise RpcError(f"{type(exc).__name__}: {exc}") from exc
        finally:
            conn.done_with(call_id)

    async def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            await conn.close()


class RpcClient:
    """One channel per peer address, created on first use."""

    def __init__(self, session: aiohttp.ClientSession, url_of: Any) -> None:
        self.session = session
        self.url_of = url_of
        self.channels: dict[str, Channel] = {}

    async def call(self, address: str, method: str, body: Any, timeout: float) -> Any:
        channel = self.channels.get(address)
        if channel is None:
            channel = self.channels[address] = Channel(self.session, self.url_of(address))
        return await channel.call(method, body, timeout)

    def refusing(self, address: str, within: float = REFUSAL_MEMORY) -> bool:
        """True when the last attempt to connect to ``address`` failed less than ``within`` s ago
        (a crashed peer refuses connections long before the failure detector declares it)."""
        channel = self.channels.get(address)
        return bool(channel and channel.refused_at and time.monotonic() - channel.refused_at < within)

    async def close(self) -> None:
        channels, self.channels = list(self.channels.values()), {}
        for channel in channels:
            await channel.close()


__all__ = ["MAX_FRAME_BYTES", "RpcClient", "RpcError", "RpcUnsupported"]
