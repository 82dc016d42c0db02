"""Node-to-node calls multiplexed over one TCP stream per peer.

Why: on this machine one small HTTP request/response through aiohttp costs ~360 µs of CPU
(client + server), one frame each way on an open WebSocket ~100 µs, and on a bare stream of
msgpack messages ~50 µs. Every read asks one other replica for its version and a small write
sends two replica writes, so these hops are a large share of small-file throughput.

The stream starts as an HTTP request on the peer's internal port (``GET /_internal/stream``
with ``Connection: Upgrade``, ``Upgrade: p2pstore-rpc/1``, authenticated like every internal
request: over mutual TLS, or signed with a fresh nonce and timestamp per connection); after
the ``101`` answer both ends send msgpack objects back to back, no other framing. A call is
``[id, method, body]``, its answer ``[id, status, body]`` where status is HTTP-like (200 =
``body`` is the result, otherwise ``body`` is the error message). Calls run concurrently on
both ends and answers may arrive in any order. The upgrade request carries the protocol
version (``X-P2PStore-Protocol``); a peer speaking another version refuses it (426).

A connection that stays silent while a call times out is closed, so a connection that died without
a reset (a partition, a peer's host gone) is replaced by a fresh one on the next call.
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
import time
from collections.abc import Callable
from typing import Any

import msgpack
from yarl import URL

from .codec import (
    MAX_ANSWER_BYTES,
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    WRONG_PROTOCOL,
    ItemBudget,
    bounded_unpacker,
    pack,
)

ENVELOPE_BYTES = 64 * 1024  # a frame's id, method or status and error text around its body
MAX_FRAME_BYTES = MAX_MESSAGE_BYTES + ENVELOPE_BYTES  # a call a peer sends us
MAX_ANSWER_FRAME_BYTES = MAX_ANSWER_BYTES + ENVELOPE_BYTES  # an answer to our call
CONNECT_TIMEOUT = 3.0  # a connection attempt (a live peer answers in milliseconds)
REFUSAL_MEMORY = 5.0  # seconds a failed connection attempt keeps a peer out of new writes
STREAM_PROTOCOL = "p2pstore-rpc/1"
STREAM_PATH = "/_internal/stream"
MAX_HEAD = 16 * 1024  # the upgrade answer's status line and headers
CORK_BYTES = 64 * 1024  # corked frames are sent at once when this much waits
TLS_REFUSED = 495  # (nginx's "SSL Certificate Error") the TLS handshake with the peer failed
# headers(address, path) -> a fresh upgrade request's headers (auth, protocol version)
StreamHeaders = Callable[[str, str], dict[str, str]]


class RpcError(Exception):
    """A call failed: the peer could not be reached (status None) or answered an error."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class FrameReader:
    """Bytes of a stream in, whole messages out: each a list of three (a call or an answer).

    Raises ValueError on anything else, and as soon as a frame outgrows ``max_bytes`` or the
    item limits (codec.py): the connection is then closed, no resynchronising inside a stream
    of untrusted bytes, and no more than ``max_bytes`` of it was ever held."""

    def __init__(self, max_bytes: int = MAX_FRAME_BYTES) -> None:
        self._budget = ItemBudget()
        self._unpacker = bounded_unpacker(max_bytes, self._budget)

    def feed(self, data: bytes) -> list[list[Any]]:
        frames = []
        try:
            self._unpacker.feed(data)
            while True:
                try:
                    frames.append(self._unpacker.unpack())
                except msgpack.OutOfData:
                    break
                self._budget.reset()  # the decoder keeps a partial frame's state between feeds
        except Exception as exc:
            raise ValueError(f"undecodable frame: {type(exc).__name__}: {str(exc)[:100]}") from exc
        for frame in frames:
            if not isinstance(frame, list) or len(frame) != 3 or not isinstance(frame[0], int):
                raise ValueError("a frame is [id, method or status, body]")
        return frames


class Writer:
    """Frames out to one transport, corked: the frames written during one turn of the event loop
    leave in one ``writev`` at its end (or as soon as ``CORK_BYTES`` wait). On this machine a
    small loopback send costs ~90 µs of CPU, mostly waking the receiver, and under load several
    frames to the same peer are written per turn. Flow control: ``drain()`` waits while the
    kernel buffer is full."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._resumed: asyncio.Future[None] | None = None
        self._corked: list[bytes] = []
        self._corked_bytes = 0

    def pause_writing(self) -> None:
        if self._resumed is None:
            self._resumed = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        resumed, self._resumed = self._resumed, None
        if resumed is not None and not resumed.done():
            resumed.set_result(None)

    def connection_lost(self) -> None:
        self.resume_writing()

    def write(self, frame: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("connection to peer closed")
        if not self._corked:
            asyncio.get_running_loop().call_soon(self.flush)
        self._corked.append(frame)
        self._corked_bytes += len(frame)
        if self._corked_bytes >= CORK_BYTES:
            self.flush()  # big frames go now, and the transport's flow control sees them

    def flush(self) -> None:
        """Hand the corked frames to the transport (a no-op when none wait)."""
        frames, self._corked, self._corked_bytes = self._corked, [], 0
        transport = self.transport
        if not frames or transport is None or transport.is_closing():
            return
        if len(frames) == 1:
            transport.write(frames[0])
        else:
            transport.writelines(frames)

    def buffered(self) -> int:
        """Bytes written and not yet taken by the kernel."""
        transport_bytes = self.transport.get_write_buffer_size() if self.transport is not None else 0
        return self._corked_bytes + transport_bytes

    def close(self) -> None:
        """Send what is corked, then close (the transport flushes its own buffer first)."""
        self.flush()
        if self.transport is not None:
            self.transport.close()

    @property
    def paused(self) -> bool:
        return self._resumed is not None

    async def drain(self) -> None:
        if self._resumed is not None:
            await asyncio.shield(self._resumed)


class Connection(asyncio.Protocol):
    """One open stream to a peer and the calls waiting for an answer on it."""

    def __init__(self) -> None:
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.last_received = time.monotonic()
        self.retired = False
        self.upgraded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.writer = Writer()
        self._head = b""
        self._frames = FrameReader(MAX_ANSWER_FRAME_BYTES)
        self._lost = False

    # ---- asyncio.Protocol ----
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.writer.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.last_received = time.monotonic()
        if not self.upgraded.done():
            data = self._upgrade_answer(data)
            if not data:
                return
        try:
            frames = self._frames.feed(data)
        except ValueError:  # garbage from the peer: this connection is over
            self.close_soon()
            return
        pending = self.pending
        for call_id, status, body in frames:
            fut = pending.get(call_id)
            if fut is None or fut.done():
                continue  # its caller gave up (timeout)
            if status == 200:
                fut.set_result(body)
            else:
                fut.set_exception(RpcError(str(body), int(status) if isinstance(status, int) else None))

    def _upgrade_answer(self, data: bytes) -> bytes:
        """Collect the answer to the upgrade request; return the bytes after it."""
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > MAX_HEAD:
                self._upgrade_failed(RpcError("RPC upgrade answer too long"))
                self.close_soon()
            return b""
        head, rest, self._head = self._head[:end], self._head[end + 4 :], b""
        parts = head.split(b"\r\n", 1)[0].split(b" ", 2)
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        if status == 101:
            self.upgraded.set_result(None)
            return rest
        if status == 401:
            said = rest[:300].decode("utf-8", "replace")  # the refusal's JSON, when it came along
            why = f"the peer refuses this node's signature (401: wrong cluster secret or clock?) {said}"
            self._upgrade_failed(RpcError(why.strip(), status))
        elif status == WRONG_PROTOCOL:
            why = f"it speaks another protocol version than this node ({PROTOCOL_VERSION})"
            self._upgrade_failed(RpcError(why, status))
        else:
            self._upgrade_failed(RpcError(f"RPC upgrade refused: HTTP {status}", status or None))
        self.close_soon()
        return b""

    def _upgrade_failed(self, exc: RpcError) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(exc)
            self.upgraded.exception()  # whoever still waits gets it; nobody waiting is no error

    def pause_writing(self) -> None:
        self.writer.pause_writing()

    def resume_writing(self) -> None:
        self.writer.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self.writer.connection_lost()
        if isinstance(exc, ssl.SSLError):  # TLS 1.3: the server checks our certificate after we write
            self._upgrade_failed(RpcError(f"TLS refused by the peer: {exc}", TLS_REFUSED))
        self._upgrade_failed(RpcError("connection closed during the RPC upgrade"))
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(RpcError("connection to peer closed"))
        self.pending.clear()

    # ---- calls ----
    @property
    def open(self) -> bool:
        return not self._lost and not self.retired and not self.writer.transport.is_closing()  # type: ignore[union-attr]

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
        self.writer.close()

    async def close(self) -> None:
        self.retired = True
        transport = self.writer.transport
        if transport is not None:
            transport.abort()  # nothing to flush that a caller still waits for


class Channel:
    """The client end of one peer: its current connection, opened on first use and replaced
    when it breaks or stays silent while a call times out."""

    def __init__(self, address: str, headers: StreamHeaders, tls: ssl.SSLContext | None = None) -> None:
        self.address = address
        url = URL(f"http://{address}")
        self.host, self.port = url.host, url.port
        self.headers = headers
        self.tls = tls
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
            conn: Connection | None = None
            try:
                conn = await asyncio.wait_for(self._open(), timeout)
            except RpcError:
                raise
            except (TimeoutError, OSError) as exc:
                self.refused_at = time.monotonic()
                why = str(exc) or f"no connection within {timeout:g}s"
                raise RpcError(f"{type(exc).__name__}: {why}") from exc
            self.refused_at = None
            self.conn = conn
            return conn

    def upgrade_request(self) -> bytes:
        """The upgrade request of one new connection (signed afresh: a captured one is useless)."""
        headers = {"Host": self.address, **self.headers(self.address, STREAM_PATH)}
        lines = [f"GET {STREAM_PATH} HTTP/1.1", "Connection: Upgrade", f"Upgrade: {STREAM_PROTOCOL}",
                 *(f"{k}: {v}" for k, v in headers.items())]  # fmt: skip
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    async def _open(self) -> Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(
                Connection, self.host, self.port, ssl=self.tls,
                server_hostname=self.host if self.tls else None,
            )  # fmt: skip
        except ssl.SSLError as exc:  # the peer's certificate is not from our cluster CA, or ours is refused
            raise RpcError(f"TLS handshake with {self.address} failed: {exc}", TLS_REFUSED) from exc
        try:
            conn.writer.write(self.upgrade_request())
            await conn.upgraded
        except BaseException:
            await conn.close()
            raise
        return conn

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
            conn.writer.write(pack([call_id, method, body]))
            if conn.writer.paused:  # the peer reads slower than we send: wait, within the deadline
                await asyncio.wait_for(conn.writer.drain(), max(0.001, deadline - time.monotonic()))
            left = max(0.001, deadline - time.monotonic())
            timer = asyncio.get_running_loop().call_later(left, _expire, fut)
            try:  # a timer on the answer itself: cheaper than wait_for's extra future per call
                return await fut
            finally:
                timer.cancel()
        except TimeoutError as exc:
            if conn.last_received < sent_at and self.conn is conn:
                self.conn = None  # silent since we asked: the link may be dead, use a new one
                conn.retire()
            raise RpcError(f"no answer to {method} within {timeout:g}s") from exc
        except (ConnectionError, RuntimeError) as exc:
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


def _expire(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


class RpcClient:
    """One channel per peer address, created on first use; ``headers`` makes each connection's
    upgrade request headers; ``tls``: connect with this client context (mutual TLS)."""

    def __init__(self, headers: StreamHeaders, tls: ssl.SSLContext | None = None) -> None:
        self.headers = headers
        self.tls = tls
        self.channels: dict[str, Channel] = {}

    async def call(self, address: str, method: str, body: Any, timeout: float) -> Any:
        channel = self.channels.get(address)
        if channel is None:
            channel = self.channels[address] = Channel(address, self.headers, self.tls)
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


__all__ = [
    "MAX_FRAME_BYTES", "STREAM_PATH", "STREAM_PROTOCOL", "TLS_REFUSED", "FrameReader",
    "RpcClient", "RpcError", "Writer",
]  # fmt: skip
