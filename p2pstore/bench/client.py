"""A lean HTTP/1.1 keep-alive client for the load generator.

The benchmark shares the machine's cores with the nodes it measures. aiohttp's client spent
about 0.4 ms of CPU per 4 KiB request here (URL objects, cookie jar, multidicts, timers), a
third of what the whole cluster spends serving that request, so the figures measured the client
as much as the store. This client does only what the benchmark needs: one request at a time per
connection, bodies with Content-Length (chunked answers are decoded too), streamed both ways,
connections kept alive and reused. It is not a general-purpose client.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

BUFFER = 1 << 20  # each connection's receive buffer: a 1 MiB answer arrives in one piece
MIN_ROOM = 64 * 1024  # free space below which unread bytes are moved to the buffer's start
MAX_HEAD = 64 * 1024  # longest status line + headers accepted
IDLE_REUSE = 30.0  # seconds: an idle connection older than this is closed, not reused
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 300.0


class ClientError(Exception):
    """A connection failed or the server's answer was not valid HTTP/1.1."""


class Headers(dict[str, str]):
    """Response headers with lower-cased names; ``get`` ignores case like aiohttp's."""

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return super().get(name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())


def expire(waiter: asyncio.Future[None]) -> None:
    """A read that waited READ_TIMEOUT for bytes fails instead of hanging the benchmark."""
    if not waiter.done():
        waiter.set_exception(TimeoutError(f"no bytes for {READ_TIMEOUT:.0f}s"))


class Stream(asyncio.BufferedProtocol):
    """One socket's bytes, received straight into one reused buffer.

    With asyncio's StreamReader every received MiB was copied three times (the loop's read
    buffer into a new bytes object, that into the reader's bytearray, that into the bytes
    returned) and the fresh allocations cost page faults: together a third of the load
    generator's CPU in the get-1m phase. Here the kernel writes into ``buf`` and readers get
    memoryviews of it, valid until their next await on this stream.
    """

    def __init__(self, size: int | None = None) -> None:
        self.buf = bytearray(size or BUFFER)
        self.view = memoryview(self.buf)
        self.start = self.end = 0  # unread bytes are buf[start:end]
        self.received = 0  # bytes ever received (``end`` moves back when unread bytes move)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reading_paused = False
        self.writing_paused = False
        self.waiter: asyncio.Future[None] | None = None  # a reader waiting for bytes
        self.drainer: asyncio.Future[None] | None = None  # a writer waiting for the socket

    # ---- protocol callbacks (the event loop calls these) ----
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.start == self.end:
            self.start = self.end = 0
        elif len(self.buf) - self.end < MIN_ROOM and self.start > 0:
            unread = bytes(self.view[self.start : self.end])  # rare: only a partial answer moves
            self.buf[: len(unread)] = unread
            self.start, self.end = 0, len(unread)
        return self.view[self.end :]

    def buffer_updated(self, nbytes: int) -> None:
        self.end += nbytes
        self.received += nbytes
        if self.end - self.start >= len(self.buf) and self.transport is not None:
            self.transport.pause_reading()  # full: resumed when a reader takes bytes
            self.reading_paused = True
        self._wake()

    def eof_received(self) -> bool:
        self.closed = True
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._wake()
        if self.drainer is not None and not self.drainer.done():
            self.drainer.set_result(None)

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.drainer is not None and not self.drainer.done():
            self.drainer.set_result(None)

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    # ---- used by requests ----
    @property
    def unread(self) -> int:
        return self.end - self.start

    async def more(self) -> bool:
        """Wait until bytes arrive beyond those unread now; False if the connection ends first."""
        seen = self.received
        while self.received == seen:
            if self.closed:
                return False
            loop = asyncio.get_running_loop()
            self.waiter = loop.create_future()
            timer = loop.call_later(READ_TIMEOUT, expire, self.waiter)
            try:
                await self.waiter
            finally:
                timer.cancel()
        return True

    async def fill(self) -> bool:
        """True once at least one unread byte is there; False at the end of the connection."""
        while self.start == self.end:
            if not await self.more():
                return False
        return True

    def take(self, n: int) -> memoryview:
        """Up to ``n`` unread bytes (at least one after ``fill``); valid until the next await."""
        k = min(n, self.end - self.start)
        piece = self.view[self.start : self.start + k]
        self.start += k
        if self.reading_paused and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()
        return piece

    async def readuntil(self, sep: bytes) -> bytes:
        """Bytes up to and including ``sep``; ClientError when the answer ends or runs too long."""
        while (i := self.buf.find(sep, self.start, self.end)) < 0:
            if self.unread >= min(MAX_HEAD, len(self.buf)):
                raise ClientError(f"no {sep!r} within {self.unread} bytes")
            if not await self.more():
                raise asyncio.IncompleteReadError(bytes(self.view[self.start : self.end]), None)
        return bytes(self.take(i + len(sep) - self.start))

    async def readexactly(self, n: int) -> bytes:
        while self.unread < n:
            if not await self.more():
                raise asyncio.IncompleteReadError(bytes(self.view[self.start : self.end]), n)
        return bytes(self.take(n))

    def write(self, data: bytes) -> None:
        if self.transport is None or self.closed:
            raise ConnectionResetError("connection closed")
        self.transport.write(data)

    async def drain(self) -> None:
        while self.writing_paused and not self.closed:
            self.drainer = asyncio.get_running_loop().create_future()
            await self.drainer
        if self.closed:
            raise ConnectionResetError("connection closed")

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Connection:
    """One keep-alive TCP connection to one host."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.stream: Stream | None = None
        self.idle_since = time.monotonic()
        self.used = False  # has carried a request: a failure may be a stale keep-alive

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        _, self.stream = await asyncio.wait_for(
            loop.create_connection(Stream, self.host, self.port), CONNECT_TIMEOUT
        )

    @property
    def closed(self) -> bool:
        stream = self.stream
        return stream is None or stream.closed or stream.transport is None or stream.transport.is_closing()

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
        self.stream = None


class Response:
    """Status and headers of one answer; the body is read with ``read``, ``iter_chunked`` or
    ``iter_views`` (no copies: for hashing)."""

    def __init__(self, conn: Connection, status: int, headers: Headers) -> None:
        self.conn = conn
        self.status = status
        self.headers = headers
        self.reusable = headers.get("connection", "").lower() != "close"
        self.done = False
        length = headers.get("content-length")
        self.chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        self.remaining = int(length) if length is not None and not self.chunked else None
        if self.remaining is None and not self.chunked:
            self.reusable = False  # body ends when the server closes the connection

    async def iter_views(self, size: int) -> AsyncIterator[memoryview]:
        """The body in pieces of at most ``size`` bytes, each valid only until the next one."""
        stream = self.conn.stream
        assert stream is not None
        if self.chunked:
            async for piece in self._chunked(stream, size):
                yield piece
        elif self.remaining is None:
            while await stream.fill():
                yield stream.take(size)
        else:
            while self.remaining > 0:
                if not await stream.fill():
                    raise ClientError(f"connection closed with {self.remaining} body bytes missing")
                piece = stream.take(min(size, self.remaining))
                self.remaining -= len(piece)
                yield piece
        self.done = True

    async def _chunked(self, stream: Stream, size: int) -> AsyncIterator[memoryview]:
        while True:
            line = await stream.readuntil(b"\r\n")
            try:
                left = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError as exc:
                raise ClientError(f"bad chunk size line {line[:40]!r}") from exc
            if left == 0:
                while await stream.readuntil(b"\r\n") != b"\r\n":
                    pass  # trailer fields, ignored
                return
            while left > 0:
                if not await stream.fill():
                    raise ClientError("connection closed inside a chunk")
                piece = stream.take(min(size, left))
                left -= len(piece)
                yield piece
            await stream.readexactly(2)

    async def iter_chunked(self, size: int) -> AsyncIterator[bytes]:
        """The body in pieces of at most ``size`` bytes (copies the caller may keep)."""
        async for piece in self.iter_views(size):
            yield bytes(piece)

    async def read(self) -> bytes:
        """The whole body (small answers only)."""
        parts = [piece async for piece in self.iter_chunked(1 << 20)]
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def text(self) -> str:
        return (await self.read()).decode(errors="replace")

    async def json(self) -> Any:
        return json.loads(await self.read())


class Request:
    """``async with client.put(...) as resp``: sends on enter, returns the connection on exit."""

    def __init__(self, client: Client, method: str, url: str, data: bytes | AsyncIterator[bytes] | None,
                 headers: dict[str, str] | None) -> None:  # fmt: skip
        self.client, self.method, self.url, self.data = client, method, url, data
        self.headers = headers or {}
        self.response: Response | None = None

    async def __aenter__(self) -> Response:
        parts = urlsplit(self.url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        head = [f"{self.method} {path} HTTP/1.1", f"Host: {parts.netloc}"]
        head += [f"{k}: {v}" for k, v in self.headers.items()]
        streamed = self.data is not None and not isinstance(self.data, bytes)
        if isinstance(self.data, bytes) and "Content-Length" not in self.headers:
            head.append(f"Content-Length: {len(self.data)}")
        elif streamed and "Content-Length" not in self.headers:
            head.append("Transfer-Encoding: chunked")
        preamble = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        for attempt in (0, 1):
            conn = self.client.take(host, port, fresh=streamed or attempt > 0)
            try:
                if conn.stream is None:
                    await conn.open()
                async with asyncio.timeout(READ_TIMEOUT):
                    self.response = await self._exchange(conn, preamble, streamed)
                return self.response
            except (OSError, asyncio.IncompleteReadError, ClientError) as exc:
                conn.close()
                # A kept-alive connection the server closed meanwhile: resend once on a new one.
                if attempt == 0 and conn.used and not streamed and isinstance(
                    exc, (ConnectionError, asyncio.IncompleteReadError)
                ):
                    continue
                raise ClientError(f"{self.method} {self.url}: {type(exc).__name__}: {exc}") from exc
        raise AssertionError("unreachable")

    async def _exchange(self, conn: Connection, preamble: bytes, streamed: bool) -> Response:
        stream = conn.stream
        assert stream is not None
        if isinstance(self.data, bytes) and len(self.data) <= 256 * 1024:
            stream.write(preamble + self.data)  # one send for small requests
        else:
            stream.write(preamble)
            if isinstance(self.data, bytes):
                stream.write(self.data)
            elif self.data is not None:
                chunked = "Content-Length" not in self.headers
                async for piece in self.data:
                    if chunked:
                        stream.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                    else:
                        stream.write(piece)
                    await stream.drain()
                if chunked:
                    stream.write(b"0\r\n\r\n")
        await stream.drain()
        conn.used = True
        head = await stream.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status_line = lines[0].split(" ", 2)
        if len(status_line) < 2 or not status_line[0].startswith("HTTP/1."):
            raise ClientError(f"bad status line {lines[0][:80]!r}")
        headers = Headers()
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        return Response(conn, int(status_line[1]), headers)

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:  # fmt: skip
        resp = self.response
        if resp is None:
            return
        if exc_type is None and not resp.done and resp.remaining == 0:
            resp.done = True  # an empty body needs no read
        if exc_type is None and resp.done and resp.reusable and not resp.conn.closed:
            self.client.give_back(resp.conn)
        else:
            resp.conn.close()


class Client:
    """Idle keep-alive connections per host, at most ``limit`` of them kept."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.idle: dict[tuple[str, int], list[Connection]] = {}

    def take(self, host: str, port: int, fresh: bool = False) -> Connection:
        pool = self.idle.setdefault((host, port), [])
        now = time.monotonic()
        while pool and not fresh:
            conn = pool.pop()
            if not conn.closed and now - conn.idle_since < IDLE_REUSE:
                return conn
            conn.close()
        return Connection(host, port)

    def give_back(self, conn: Connection) -> None:
        pool = self.idle.setdefault((conn.host, conn.port), [])
        if len(pool) < self.limit:
            conn.idle_since = time.monotonic()
            pool.append(conn)
        else:
            conn.close()

    def get(self, url: str, headers: dict[str, str] | None = None) -> Request:
        return Request(self, "GET", url, None, headers)

    def put(self, url: str, data: bytes | AsyncIterator[bytes] | None = None,
            headers: dict[str, str] | None = None) -> Request:  # fmt: skip
        return Request(self, "PUT", url, data, headers)

    async def close(self) -> None:
        for pool in self.idle.values():
            for conn in pool:
                conn.close()
        self.idle.clear()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
