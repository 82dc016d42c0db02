"""What one client can hold of a node: bounded time to send a request head, a minimum pace for
a request body, and a cap on the uploads one client address runs at once.

Why at the connection, below the application: aiohttp has no header or body read timeout (a
connection that trickles a request head one byte at a time is held until its keep-alive
timeout, an hour by default), and a body that trickles keeps a handler, its buffers and the
streams it opened to replicas busy for as long as the client likes. So the node's protocol is
a subclass of aiohttp's ``RequestHandler`` that notes when a head started and how much of a
body arrived; one sweep a second (``Guard.run``) cuts the connections that are too slow:

- a request head (or a new connection's first head) not complete ``header_timeout`` seconds
  after it started;
- a request body that, over any ``body_timeout`` window, arrived slower than
  ``min_body_rate`` bytes/s (a window in which this node itself paused reading, because the
  handler was not keeping up, does not count). Bodies of node-to-node requests
  (``/_internal/``) are exempt: they come at the pace of the client upload they carry, and the
  write path drops a stalled replica itself (``--stall-timeout``).

The cap: a client address with ``max_uploads_per_client`` requests with a body already in
progress on this node's public or S3 port gets 503 (Retry-After) for the next one, and the
connection is closed; other addresses are served as usual.

Each cut or refusal is one WARNING line per client address a minute, never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server

log = logging.getLogger("p2pstore.guard")
SWEEP_INTERVAL = 1.0  # seconds between two looks at every connection
LOG_EVERY = 60.0  # seconds between two log lines about the same address and reason
INTERNAL_PREFIX = "/_internal/"
# (request, why) -> the refusal in the port's own error format (JSON, S3 XML)
Refuse = Callable[..., web.StreamResponse]
"""``refuse(request, why, status=503)``: an answer in the port's own error format (JSON on the
native port, S3 XML on the S3 port); 400 for a request that does not parse, 431 for a head over
aiohttp's line and field limits."""


@dataclass(frozen=True)
class Limits:
    """The node's settings (config.py: header_timeout, body_timeout, min_body_rate,
    max_uploads_per_client)."""

    header_timeout: float = 20.0
    body_timeout: float = 30.0
    min_body_rate: float = 1024.0
    max_uploads_per_client: int = 64


class Guard:
    """The limits, the uploads in progress per client address (shared by the node's ports) and
    the sweep over the connections of every server it guards."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.uploads: dict[str, int] = {}
        self.cut: dict[str, int] = {"header": 0, "body": 0, "uploads": 0}  # connections cut, by reason
        self.servers: list[GuardedServer] = []
        self._logged: dict[tuple[str, str], float] = {}

    def warn(self, peer: str, reason: str, message: str, *args: Any) -> None:
        self.cut[reason] += 1
        now = time.monotonic()
        if now - self._logged.get((peer, reason), float("-inf")) > LOG_EVERY:
            if len(self._logged) > 10_000:
                self._logged.clear()
            self._logged[(peer, reason)] = now
            log.warning(message, peer, *args)

    def sweep(self) -> None:
        """Cut every connection that is too slow (see the module's docstring)."""
        for server in self.servers:
            now = server.loop.time()
            for handler in server.connections:
                if isinstance(handler, GuardedHandler):
                    handler.check(now, self)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            self.sweep()


class GuardedHandler(RequestHandler):
    """aiohttp's HTTP protocol, noting when a head started and a body's progress."""

    def __init__(self, manager: Server, *, guard: Guard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.guard = guard
        self.head_since: float | None = None
        self.body: Any = None  # the StreamReader of a body being received, while watched
        self.window_start = 0.0
        self.window_mark = 0  # body bytes received when the window started
        self.paused_in_window = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.head_since = self._loop.time()  # a connection that sends nothing is a slow head

    def data_received(self, data: bytes) -> None:
        count = self._request_count
        in_body = self.body is not None and not self.body.is_eof()
        super().data_received(data)
        if self._upgraded:  # an RPC stream: no heads or bodies any more
            self.head_since = self.body = None
            return
        if self._request_count != count:  # a head is complete
            self.head_since = None
            self._watch(self._messages[-1] if self._messages else None)
        elif not in_body and self.head_since is None and data:
            self.head_since = self._loop.time()

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:  # fmt: skip
        """A request that does not parse (a head line or field over the limits, a bad method
        or header) is the client's error: one debug line, no traceback, and the answer in the
        port's own format rather than aiohttp's plain text."""
        if status != 400 or not isinstance(exc, HttpProcessingError) or request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)
        too_large = isinstance(exc, LineTooLong)
        why = ("the request's head has a line or field over the size limit" if too_large
               else f"the request does not parse as HTTP: {exc.message}")  # fmt: skip
        log.debug("malformed request from %s: %s", self._peer(), exc)
        resp = self._manager.refuse(request, why, 431 if too_large else 400)  # type: ignore[union-attr]
        resp.force_close()
        return resp

    def _watch(self, parsed: Any) -> None:
        message, payload = parsed if parsed is not None else (None, None)
        path = getattr(message, "path", "")
        if payload is None or payload.is_eof() or path.startswith(INTERNAL_PREFIX):
            self.body = None
            return
        self.body = payload
        self.window_start, self.window_mark = self._loop.time(), payload.total_bytes
        self.paused_in_window = False

    def pause_reading(self) -> None:
        self.paused_in_window = True  # this node is behind: the client is not the slow one
        super().pause_reading()

    def check(self, now: float, guard: Guard) -> None:
        limits, peer = guard.limits, self._peer()
        if self.head_since is not None and now - self.head_since > limits.header_timeout:
            guard.warn(peer, "header", "cut a connection from %s: no complete request head in %.0f s",
                       limits.header_timeout)  # fmt: skip
            self._cut()
            return
        body = self.body
        if body is None or body.is_eof():
            return
        if self.paused_in_window or self._reading_paused or self._buffer_paused:
            self.window_start, self.window_mark = now, body.total_bytes
            self.paused_in_window = self._reading_paused
            return
        elapsed = now - self.window_start
        if elapsed < limits.body_timeout:
            return
        got = body.total_bytes - self.window_mark
        if got < max(1.0, limits.min_body_rate * elapsed):
            guard.warn(peer, "body", "cut a connection from %s: request body at %.0f bytes/s for %.0f s "
                       "(the least allowed is %.0f)", got / elapsed, elapsed,
                       limits.min_body_rate)  # fmt: skip
            self._cut()
            return
        self.window_start, self.window_mark = now, body.total_bytes

    def _peer(self) -> str:
        peer = self.transport.get_extra_info("peername") if self.transport is not None else None
        return str(peer[0]) if peer else "?"

    def _cut(self) -> None:
        self.head_since = self.body = None
        transport = self.transport
        self.force_close()
        if transport is not None:
            transport.abort()  # the descriptor is freed now, not after a lingering close


class GuardedServer(Server):
    """aiohttp's server making GuardedHandlers, with the per-address upload cap in front of the
    application (``refuse`` answers in the port's own error format)."""

    def __init__(self, handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]], *,
                 guard: Guard, refuse: Refuse, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(handler, **kwargs)
        self.guard = guard
        self.refuse = refuse
        self.app_handler = handler
        self.request_handler = self.capped
        guard.servers.append(self)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def __call__(self) -> RequestHandler:
        return GuardedHandler(self, loop=self._loop, guard=self.guard, **self._kwargs)

    async def capped(self, request: web.BaseRequest) -> web.StreamResponse:
        if not request.body_exists or request.path.startswith(INTERNAL_PREFIX):
            return await self.app_handler(request)
        guard, peer = self.guard, request.remote or "?"
        running = guard.uploads.get(peer, 0)
        cap = guard.limits.max_uploads_per_client
        if cap and running >= cap:
            guard.warn(peer, "uploads", "refused an upload from %s: %d of its uploads already in progress",
                       running)  # fmt: skip
            why = f"too many uploads in progress from {peer} ({cap}); retry when one has finished"
            resp = self.refuse(request, why)
            resp.headers["Retry-After"] = "1"
            resp.force_close()  # its body is not read
            return resp
        guard.uploads[peer] = running + 1
        try:
            return await self.app_handler(request)
        finally:
            left = guard.uploads[peer] - 1
            if left:
                guard.uploads[peer] = left
            else:
                del guard.uploads[peer]


class GuardedRunner(web.AppRunner):
    """An AppRunner whose server is a GuardedServer. ``handler``: what the server calls for each
    request instead of the application's router (an app with one catch-all route, s3/app.py)."""

    def __init__(self, app: web.Application, guard: Guard, refuse: Refuse,
                 handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]] | None = None,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(app, **kwargs)
        self._guard = guard
        self._refuse = refuse
        self._handler = handler

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        handler = self._handler or server.request_handler
        return GuardedServer(handler, guard=self._guard, refuse=self._refuse,
                             request_factory=server.request_factory, loop=server._loop,
                             handler_cancellation=server.handler_cancellation,
                             **server._kwargs)  # fmt: skip
