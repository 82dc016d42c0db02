"""The serving end of a peer's RPC stream (the calling end is rpc.py's RpcClient).

After the upgrade (api/internal.py answers ``GET /_internal/stream`` with 101), the HTTP server's
protocol feeds every byte of the connection to a :class:`StreamSession`: calls are decoded, the
ones that need no I/O (``inline``) are answered at once, the others each run as a task, and
answers go straight to the transport, corked per turn of the event loop. Reading pauses while
too many calls run or the peer leaves too many answers unread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection, Mapping
from typing import Any

from ..errors import NotFound
from .codec import pack
from .rpc import FrameReader, Writer

log = logging.getLogger("p2pstore.rpc")

MAX_CALLS_IN_FLIGHT = 1024  # per peer stream; reading pauses above this
ANSWER_HIGH_WATER = 4 * 1024 * 1024  # bytes of unsent answers; reading pauses above this

# method -> handler(body, peer address) returning the reply, or (a coroutine function) its awaitable
Handlers = Mapping[str, Callable[[Any, str], Any]]


class RpcErrors:
    """How a session turns errors into answers and counts them (the API layer provides these)."""

    def __init__(
        self, status_of: Callable[[Exception], tuple[int, str] | None], count: Callable[[str, int], None],
        paused: Callable[[str], None], malformed: Callable[[str], None],
    ) -> None:  # fmt: skip
        self.status_of = status_of  # a known error's (code, message); None: a bug (500, logged)
        self.count = count  # (method, code) per answer
        self.paused = paused  # why reading paused
        self.malformed = malformed  # why the stream was closed


class StreamSession:
    """One peer's stream, fed by the HTTP server's protocol (its payload-parser interface)."""

    def __init__(
        self, transport: asyncio.Transport, protocol: Any, peer: str, handlers: Handlers,
        inline: Collection[str], errors: RpcErrors,
    ) -> None:  # fmt: skip
        self.peer = peer
        self.protocol = protocol
        self.handlers = handlers
        self.inline = inline
        self.errors = errors
        self.writer = Writer()
        self.writer.transport = transport
        self.frames = FrameReader()
        self.calls: set[asyncio.Task] = set()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reading_paused = False
        self._draining: asyncio.Task | None = None  # waits for the socket to take our answers

    # ---- fed by the HTTP server's protocol ----
    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        answers: list[bytes] = []
        try:
            frames = self.frames.feed(data)
            for call_id, method, body in frames:
                if not isinstance(method, str):
                    raise ValueError("a call is [id, method, body]")
                if method in self.inline:
                    answers.append(pack(self.answer_now(call_id, method, body)))
                    continue
                task = asyncio.ensure_future(self.serve(call_id, method, body))
                self.calls.add(task)
                task.add_done_callback(self._call_done)
        except ValueError as exc:  # anything undecodable ends the connection
            self.errors.malformed(str(exc))
            self.close()
            return True, b""
        finally:
            if answers:  # the answers to calls that arrived together leave together
                self.send(b"".join(answers))
        if len(self.calls) >= MAX_CALLS_IN_FLIGHT:
            self._pause("calls")  # a peer calling faster than we answer
        return False, b""

    def feed_eof(self) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    # ---- flow control: a peer's calls are read only while we keep up with them ----
    def send(self, data: bytes) -> None:
        """Queue answers; stop reading calls while the peer leaves too many of them unread."""
        with contextlib.suppress(ConnectionError):
            self.writer.write(data)
            if self._draining is None and self.writer.buffered() > ANSWER_HIGH_WATER:
                self._pause("answers")
                self._draining = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        try:
            # aiohttp's own flow control of the connection (aiohttp is pinned in pyproject.toml)
            drain = getattr(self.protocol, "_drain_helper", None)
            if drain is not None:
                await drain()
        except ConnectionError:  # the peer is gone: nothing to resume
            return
        finally:
            self._draining = None
        self._maybe_resume()

    def _pause(self, reason: str) -> None:
        if not self._reading_paused:
            self._reading_paused = True
            self.errors.paused(reason)
            log.debug("stream from %s: reading paused (%s)", self.peer, reason)
            # the transport itself: aiohttp's pause_reading() would pause its HTTP parser, which
            # the upgraded stream no longer uses (and asserts on)
            with contextlib.suppress(AttributeError, RuntimeError):
                self.writer.transport.pause_reading()  # type: ignore[union-attr]

    def _maybe_resume(self) -> None:
        if self._reading_paused and self._draining is None and len(self.calls) < MAX_CALLS_IN_FLIGHT // 2:
            self._reading_paused = False
            with contextlib.suppress(AttributeError, RuntimeError):
                self.writer.transport.resume_reading()  # type: ignore[union-attr]

    def _call_done(self, task: asyncio.Task) -> None:
        self.calls.discard(task)
        self._maybe_resume()

    def cancel_calls(self) -> None:
        """The stream ended: nobody will read what the calls still running would answer."""
        for task in [*self.calls, *([self._draining] if self._draining else [])]:
            task.cancel()

    def close(self) -> None:
        self.writer.close()
        self.feed_eof()

    # ---- answers ----
    def answer(
        self, call_id: int, method: str, result: Any = None, exc: Exception | None = None
    ) -> list[Any]:
        """``[id, code, body]`` for a result or an error (a bug: logged, 500), counted."""
        if exc is None:
            answer = [call_id, 200, result]
        elif (known := self.errors.status_of(exc)) is not None:
            answer = [call_id, *known]
        else:
            log.error("unexpected error serving internal call %s from %s", method, self.peer, exc_info=exc)
            answer = [call_id, 500, f"internal error: {type(exc).__name__}"]
        self.errors.count(method, answer[1])
        return answer

    def answer_now(self, call_id: int, method: str, body: Any) -> list[Any]:
        try:
            return self.answer(call_id, method, self.handlers[method](body, self.peer))
        except Exception as exc:
            return self.answer(call_id, method, exc=exc)

    async def serve(self, call_id: int, method: str, body: Any) -> None:
        handler = self.handlers.get(method)
        if handler is None:
            answer = self.answer(call_id, "?", exc=NotFound(f"no internal method {method!r}"))
        else:
            try:
                answer = self.answer(call_id, method, await handler(body, self.peer))
            except Exception as exc:
                answer = self.answer(call_id, method, exc=exc)
        self.send(pack(answer))
