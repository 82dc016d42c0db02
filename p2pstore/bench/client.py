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

BUFFER = 4 << 20  # bytes read ahead before the socket is paused (a 64 KiB limit paused it 16 times per MiB)
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


class Connection:
    """One keep-alive TCP connection to one host."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.idle_since = time.monotonic()
        self.used = False  # has carried a request: a failure may be a stale keep-alive

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, limit=BUFFER), CONNECT_TIMEOUT
        )

    @property
    def closed(self) -> bool:
        return self.writer is None or self.writer.is_closing() or self.reader is None or self.reader.at_eof()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class Response:
    """Status and headers of one answer; the body is read with ``read`` or ``iter_chunked``."""

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

    async def iter_chunked(self, size: int) -> AsyncIterator[bytes]:
        """The body in pieces of at most ``size`` bytes."""
        reader = self.conn.reader
        assert reader is not None
        if self.chunked:
            async for piece in self._chunked(reader, size):
                yield piece
        elif self.remaining is None:
            while piece := await asyncio.wait_for(reader.read(size), READ_TIMEOUT):
                yield piece
        else:
            while self.remaining > 0:
                piece = await asyncio.wait_for(reader.read(min(size, self.remaining)), READ_TIMEOUT)
                if not piece:
                    raise ClientError(f"connection closed with {self.remaining} body bytes missing")
                self.remaining -= len(piece)
                yield piece
        self.done = True

    async def _chunked(self, reader: asyncio.StreamReader, size: int) -> AsyncIterator[bytes]:
        while True:
            line = await asyncio.wait_for(reader.readuntil(b"\r\n"), READ_TIMEOUT)
            try:
                left = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError as exc:
                raise ClientError(f"bad chunk size line {line[:40]!r}") from exc
            if left == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass  # trailer fields, ignored
                return
            while left > 0:
                piece = await asyncio.wait_for(reader.read(min(size, left)), READ_TIMEOUT)
                if not piece:
                    raise ClientError("connection closed inside a chunk")
                left -= len(piece)
                yield piece
            await reader.readexactly(2)

    async def read(self) -> bytes:
        """The whole body (small answers only)."""
        if self.remaining is not None and not self.chunked:
            reader = self.conn.reader
            assert reader is not None
            async with asyncio.timeout(READ_TIMEOUT):
                body = await reader.readexactly(self.remaining)
            self.remaining, self.done = 0, True
            return body
        return b"".join([piece async for piece in self.iter_chunked(1 << 20)])

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
                if conn.writer is None:
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
        writer, reader = conn.writer, conn.reader
        assert writer is not None and reader is not None
        if isinstance(self.data, bytes) and len(self.data) <= 256 * 1024:
            writer.write(preamble + self.data)  # one send for small requests
        else:
            writer.write(preamble)
            if isinstance(self.data, bytes):
                writer.write(self.data)
            elif self.data is not None:
                chunked = "Content-Length" not in self.headers
                async for piece in self.data:
                    if chunked:
                        writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                    else:
                        writer.write(piece)
                    await writer.drain()
                if chunked:
                    writer.write(b"0\r\n\r\n")
        await writer.drain()
        conn.used = True
        head = await reader.readuntil(b"\r\n\r\n")
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
