"""The internal port's listener: mutual TLS, with refused handshakes seen and logged.

Why not ``create_server(ssl=...)``: there asyncio (and uvloop) run the handshake and drop a
failed one silently (logged only in the loop's debug mode), so a node whose certificate another
CA signed would be refused without a word on this side. Here the listener accepts sockets itself
and hands each to ``loop.connect_accepted_socket(ssl=...)``, which returns once the handshake is
done or raises why it failed; a failure is logged (once a minute per address, like a wrong
signature), and a connection that completes it is served by aiohttp like any TLS connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from typing import Any

from aiohttp import web

log = logging.getLogger("p2pstore.internal")
HANDSHAKE_TIMEOUT = 10.0  # seconds a connection may take to complete its TLS handshake
LOG_EVERY = 60.0  # seconds between two log lines about the same refused address
_logged: dict[tuple[str, bool], float] = {}  # (address, we refused it) -> when last logged


def log_failed_handshake(peer: str, exc: BaseException) -> None:
    """One line per address a minute: we refused its certificate (ERROR), or it hung up during
    the handshake, which is how a peer that does not trust ours refuses it (WARNING)."""
    now, ours = time.monotonic(), isinstance(exc, ssl.SSLError)
    if now - _logged.get((peer, ours), float("-inf")) <= LOG_EVERY:
        return
    _logged[(peer, ours)] = now
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or type(exc).__name__
        why = "a certificate from another CA, or none?"
        log.error("refused a TLS connection from %s: %s (%s)", peer, reason, why)
    else:
        log.warning("a TLS connection from %s ended during the handshake (%s): does it trust another CA?",
                    peer, type(exc).__name__)  # fmt: skip


class MutualTLSSite(web.BaseSite):
    """An aiohttp site on ``host:port`` whose connections must complete a TLS handshake with
    ``ctx`` (which requires a client certificate) before aiohttp sees them."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, ctx: ssl.SSLContext, **kw: Any) -> None:
        super().__init__(runner, ssl_context=ctx, **kw)
        self._host, self._port = host, port
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._handshakes: set[asyncio.Task[None]] = set()

    @property
    def name(self) -> str:
        return f"https://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        self._listener = socket.create_server((self._host, self._port), family=family, backlog=self._backlog)
        self._listener.setblocking(False)
        self._accepting = asyncio.ensure_future(self._accept(self._listener))

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, addr = await loop.sock_accept(listener)
            except OSError as exc:  # EMFILE and the like: the listener stays, try again shortly
                log.warning("internal TLS port: accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            task = asyncio.ensure_future(self._handshake(conn, str(addr[0]) if addr else "?"))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    async def _handshake(self, conn: socket.socket, peer: str) -> None:
        server = self._runner.server
        assert server is not None and self._ssl_context is not None
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                server, conn, ssl=self._ssl_context, ssl_handshake_timeout=HANDSHAKE_TIMEOUT
            )
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            conn.close()
            log_failed_handshake(peer, exc)

    async def stop(self) -> None:
        for task in [*([self._accepting] if self._accepting else []), *self._handshakes]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._listener is not None:
            self._listener.close()
        await super().stop()
