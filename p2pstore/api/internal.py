"""Node-to-node endpoints under /_internal/: msgpack messages, cluster secret required.

Each message handler serves two ways: as a call on the RPC stream (``/_internal/stream``, what
nodes use; see cluster/rpc.py) and as an HTTP POST to ``/_internal/<method>`` (older peers, tools).

Every handler validates what it receives; a malformed message gets 400 and is logged once
per peer, and never reaches the protocol cores or the store.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..cluster.codec import ENTRY_HEADER, MAX_MESSAGE_BYTES, MSGPACK, pack, unpack
from ..cluster.replication import ONE_PHASE_MAX, WHOLE_HASH_HEADER
from ..cluster.rpc import STREAM_PATH, STREAM_PROTOCOL, FrameReader, Writer
from ..core.manifest import ManifestEntry
from ..errors import BadRequest, NotFound, StoreError, Unauthorized, disk_full
from ..storage.chunks import is_sha256_hex
from .metrics import REQUESTS, RPC_READ_PAUSES
from .public import READ_SIZE, check_sha_header, get_node

if TYPE_CHECKING:
    from ..node import Node

log = logging.getLogger("p2pstore.internal")
MAX_KEYS_PER_LOOKUP = 10_000
_warned: set[str] = set()
RPC_SESSIONS = web.AppKey("rpc_sessions", set)
MAX_CALLS_IN_FLIGHT = 1024  # per peer stream; reading pauses above this
ANSWER_HIGH_WATER = 4 * 1024 * 1024  # bytes of unsent answers; reading pauses above this


def check_cluster_secret(request: web.Request) -> None:
    """Internal endpoints need ``Authorization: Bearer <cluster secret>``."""
    secret = get_node(request).config.cluster_secret
    given = request.headers.get("Authorization", "")
    if not secret or not hmac.compare_digest(given.encode(), f"Bearer {secret}".encode()):
        raise Unauthorized("missing or wrong cluster secret")


def reply(obj: object) -> web.Response:
    return web.Response(body=pack(obj), content_type=MSGPACK)


async def read_message(request: web.Request, peer: str, method: str) -> object:
    if request.content_length is not None and request.content_length > MAX_MESSAGE_BYTES:
        raise BadRequest("message too large")
    raw = await read_body(request, MAX_MESSAGE_BYTES)
    try:
        return unpack(raw)
    except Exception as exc:
        raise malformed(peer, method, f"undecodable msgpack: {type(exc).__name__}") from exc


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole request body, at most ``limit`` bytes; one copy when its length is announced."""
    if request.content_length is not None:
        if request.content_length > limit:
            raise BadRequest("message too large")
        try:
            return await request.content.readexactly(request.content_length)
        except asyncio.IncompleteReadError as exc:
            raise BadRequest("body shorter than its Content-Length") from exc
    buf = bytearray()
    async for piece in request.content.iter_any():  # read(n) may return less than n: loop
        buf += piece
        if len(buf) > limit:
            raise BadRequest("message too large")
    return bytes(buf)


async def write_raw(request: web.Request) -> web.Response:
    """A one-phase write with the body as raw bytes and the entry (msgpack, base64) in a header:
    the 1 MiB body is not copied into and out of a msgpack message on both ends."""
    peer = request.remote or "?"
    try:
        wire = unpack(base64.b64decode(request.headers.get(ENTRY_HEADER, ""), validate=True))
    except Exception as exc:
        raise malformed(peer, "write", f"bad {ENTRY_HEADER} header: {type(exc).__name__}") from exc
    data = await read_body(request, ONE_PHASE_MAX)
    return reply(await write_small(get_node(request), {"entry": wire, "data": data}, peer))


def malformed(peer: str, method: str, why: str) -> BadRequest:
    if peer not in _warned:
        _warned.add(peer)
        log.warning("rejected malformed message from %s on %s: %s", peer, method, why)
    return BadRequest(f"malformed message: {why}")


# ---- message handlers: (node, message, peer address) -> reply; shared by HTTP and RPC ----
def gossip(node: Node, msg: Any, peer: str) -> Any:
    try:
        node.cluster.gossip.receive(msg, peer)
    except ValueError as exc:
        raise malformed(peer, "gossip", str(exc)) from exc
    return {"ok": True}


async def manifest_sync(node: Node, msg: Any, peer: str) -> Any:
    try:
        return await node.cluster.handle_manifest_sync(msg)
    except ValueError as exc:
        raise malformed(peer, "manifest-sync", str(exc)) from exc


def entry_of(peer: str, method: str, msg: dict) -> ManifestEntry:
    """The validated manifest entry carried by a commit or write message (400 when malformed)."""
    try:
        return ManifestEntry.from_wire(msg.get("entry"))
    except ValueError as exc:
        raise malformed(peer, method, str(exc)) from exc


async def commit(node: Node, msg: Any, peer: str) -> Any:
    if not isinstance(msg, dict):
        raise malformed(peer, "commit", "commit must be a map")
    upload = msg.get("upload")
    if upload is not None and not isinstance(upload, str):
        raise malformed(peer, "commit", "upload must be a string or nil")
    entry = entry_of(peer, "commit", msg)
    applied = await node.cluster.commit_local(upload, entry)
    return {"applied": applied, "leases": node.cluster.leases.report(entry.key)}


async def write_small(node: Node, msg: Any, peer: str) -> Any:
    data = msg.get("data") if isinstance(msg, dict) else None
    if not isinstance(data, bytes) or len(data) > ONE_PHASE_MAX:
        raise malformed(peer, "write", "write needs the data as bytes (a small file)")
    entry = entry_of(peer, "write", msg)
    applied = await node.cluster.commit_small_local(entry, data)
    return {"applied": applied, "leases": node.cluster.leases.report(entry.key)}


async def abort(node: Node, msg: Any, peer: str) -> Any:
    if not isinstance(msg, dict) or not isinstance(msg.get("upload"), str):
        raise malformed(peer, "abort", "abort needs an upload id")
    await node.cluster.abort_local(msg["upload"])
    return {"ok": True}


def entries(node: Node, msg: Any, peer: str) -> Any:
    keys = msg.get("keys") if isinstance(msg, dict) else None
    if (
        not isinstance(keys, list)
        or len(keys) > MAX_KEYS_PER_LOOKUP
        or not all(isinstance(k, str) for k in keys)
    ):
        raise malformed(peer, "entries", "entries needs a list of keys")
    return {"views": [node.cluster.local_view(k) for k in keys]}


def lease(node: Node, msg: Any, peer: str) -> Any:
    """A read lease for the asking replica (or None: refused)."""
    try:
        return node.cluster.leases.handle_request(msg if isinstance(msg, dict) else {})
    except ValueError as exc:
        raise malformed(peer, "lease", str(exc)) from exc


def lease_revoke(node: Node, msg: Any, peer: str) -> Any:
    """A coordinator's word that a leaseholder missed a write: renew its lease no more."""
    try:
        return node.cluster.leases.handle_revoke(msg if isinstance(msg, dict) else {})
    except ValueError as exc:
        raise malformed(peer, "lease-revoke", str(exc)) from exc


def entries_of(peer: str, method: str, msg: Any) -> list[ManifestEntry]:
    """The validated manifest entries a message carries (400 when malformed)."""
    wires = msg.get("entries") if isinstance(msg, dict) else None
    if not isinstance(wires, list) or not wires or len(wires) > MAX_KEYS_PER_LOOKUP:
        raise malformed(peer, method, f"{method} needs a list of entries")
    try:
        return [ManifestEntry.from_wire(w) for w in wires]
    except ValueError as exc:
        raise malformed(peer, method, str(exc)) from exc


async def read_repair(node: Node, msg: Any, peer: str) -> Any:
    """Newest entries a peer's read found this node behind on: applied if still newer."""
    fresh = entries_of(peer, "read-repair", msg)
    return {"applied": len(await node.cluster.apply_remote_entries(fresh))}


async def announce(node: Node, msg: Any, peer: str) -> Any:
    """New entries of keys this node holds no replica of, from the gateway that wrote them."""
    return {"applied": await node.cluster.apply_announced(entries_of(peer, "announce", msg))}


async def checkpoint(node: Node, msg: Any, peer: str) -> Any:
    return await node.checkpoint_local()


async def recover(node: Node, msg: Any, peer: str) -> Any:
    await node.cluster.sync_all_manifests()
    return await node.cluster.repairer.run_pass()


async def purge(node: Node, msg: Any, peer: str) -> Any:
    tombstones = msg.get("tombstones") if isinstance(msg, dict) else None
    if not isinstance(tombstones, list) or len(tombstones) > MAX_KEYS_PER_LOOKUP:
        raise malformed(peer, "purge", "purge needs a list of tombstones")
    try:
        purged = await node.cluster.purge_local(tombstones)
    except ValueError as exc:
        raise malformed(peer, "purge", str(exc)) from exc
    return {"purged": purged}


# A handler returns its reply, or (async) an awaitable of it; the plain ones (no I/O to wait
# for) are answered as their call arrives on the RPC stream, with no task per call.
MessageHandler = Callable[["Node", Any, str], Any]
HANDLERS: dict[str, MessageHandler] = {
    "gossip": gossip,
    "manifest-sync": manifest_sync,
    "commit": commit,
    "abort": abort,
    "write": write_small,
    "entries": entries,
    "read-repair": read_repair,
    "announce": announce,
    "lease": lease,
    "lease-revoke": lease_revoke,
    "checkpoint": checkpoint,
    "recover": recover,
    "purge": purge,
}
INLINE = frozenset(name for name, handler in HANDLERS.items() if not inspect.iscoroutinefunction(handler))


def http_route(name: str, handler: MessageHandler) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The same handler as one HTTP POST (older peers, tools, tests)."""

    async def route(request: web.Request) -> web.Response:
        peer = request.remote or "?"
        msg = await read_message(request, peer, name)
        result = handler(get_node(request), msg, peer)
        return reply(await result if inspect.isawaitable(result) else result)

    return route


# ---- the RPC stream: many calls in flight on one connection per peer (see cluster/rpc.py) ----
class Upgraded(web.StreamResponse):
    """The 101 answer; after it the connection belongs to the RPC stream, nothing to end."""

    async def write_eof(self, data: bytes = b"") -> None:
        return None


class StreamSession:
    """The serving end of one peer's RPC stream: aiohttp's protocol feeds it the bytes after
    the upgrade (its payload-parser interface), answers go straight to the transport."""

    def __init__(self, request: web.Request) -> None:
        self.node, self.peer = get_node(request), request.remote or "?"
        self.protocol = request.protocol
        self.writer = Writer()
        self.writer.transport = request.transport  # type: ignore[assignment]
        self.frames = FrameReader()
        self.calls: set[asyncio.Task] = set()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reading_paused = False
        self._draining: asyncio.Task | None = None  # waits for the socket to take our answers

    # ---- fed by aiohttp's RequestHandler ----
    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        answers: list[bytes] = []
        try:
            frames = self.frames.feed(data)
            for call_id, method, body in frames:
                if not isinstance(method, str):
                    raise ValueError("a call is [id, method, body]")
                if method in INLINE:
                    answers.append(pack(self.answer_now(call_id, method, body)))
                    continue
                task = asyncio.ensure_future(self.serve(call_id, method, body))
                self.calls.add(task)
                task.add_done_callback(self._call_done)
        except ValueError as exc:  # anything undecodable ends the connection
            malformed(self.peer, "rpc", str(exc))
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
            drain = getattr(self.protocol, "_drain_helper", None)  # aiohttp's own flow control
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
            RPC_READ_PAUSES[reason] += 1
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

    def answer(
        self, call_id: int, method: str, result: Any = None, exc: Exception | None = None
    ) -> list[Any]:
        """``[id, status, body]`` for a result or an error (a bug: logged, 500), counted."""
        if exc is not None:
            exc = disk_full(exc) or exc
        if exc is None:
            answer = [call_id, 200, result]
        elif isinstance(exc, StoreError):
            answer = [call_id, exc.status, exc.message]
        else:
            log.error("unexpected error serving internal call %s from %s", method, self.peer, exc_info=exc)
            answer = [call_id, 500, f"internal error: {type(exc).__name__}"]
        REQUESTS[("internal", f"RPC {method}", f"{answer[1] // 100}xx")] += 1
        return answer

    def answer_now(self, call_id: int, method: str, body: Any) -> list[Any]:
        try:
            return self.answer(call_id, method, HANDLERS[method](self.node, body, self.peer))
        except Exception as exc:
            return self.answer(call_id, method, exc=exc)

    async def serve(self, call_id: int, method: str, body: Any) -> None:
        handler = HANDLERS.get(method)
        try:
            if handler is None:
                raise NotFound(f"no internal method {method!r}")
            answer = self.answer(call_id, method, await handler(self.node, body, self.peer))
        except Exception as exc:
            answer = self.answer(call_id, method if handler else "?", exc=exc)
        self.send(pack(answer))


async def rpc_stream(request: web.Request) -> web.StreamResponse:
    """Upgrade an authenticated ``GET /_internal/stream`` to the RPC stream and serve it."""
    if request.headers.get("Upgrade", "").lower() != STREAM_PROTOCOL:
        raise BadRequest(f"this endpoint needs Upgrade: {STREAM_PROTOCOL}")
    resp = Upgraded(status=101, headers={"Upgrade": STREAM_PROTOCOL, "Connection": "Upgrade"})
    await resp.prepare(request)
    session = StreamSession(request)
    request.app[RPC_SESSIONS].add(session)
    try:
        request.protocol.set_parser(session)  # type: ignore[arg-type]  # bytes after the headers too
        await session.closed
    finally:
        request.app[RPC_SESSIONS].discard(session)
        session.cancel_calls()
    return resp


async def stage(request: web.Request) -> web.Response:
    """Receive a streamed body into tmp/ (the first phase of a large write)."""
    upload = request.match_info["upload"]
    if not (8 <= len(upload) <= 64 and upload.isalnum()):
        raise BadRequest("bad upload id")
    expected = check_sha_header(request.headers.get("X-Content-SHA256"))

    async def body() -> AsyncIterator[bytes]:
        async for piece in request.content.iter_chunked(READ_SIZE):
            yield piece

    whole_hash = request.headers.get(WHOLE_HASH_HEADER) != "gateway"  # else the gateway checks it
    return reply(await get_node(request).cluster.stage_local(upload, body(), expected, whole_hash))


async def chunk(request: web.Request) -> web.Response:
    sha = request.match_info["sha"]
    if not is_sha256_hex(sha):
        raise BadRequest("bad chunk name")
    try:
        data = await get_node(request).store.read_chunk(sha)
    except FileNotFoundError as exc:
        raise NotFound(f"chunk {sha[:12]} not on this node") from exc
    return web.Response(body=data, content_type="application/octet-stream")


async def close_rpc_sessions(app: web.Application) -> None:
    """On shutdown: peers' streams would otherwise keep the server waiting for them."""
    for session in list(app[RPC_SESSIONS]):
        session.close()


def add_internal_routes(app: web.Application) -> None:
    app[RPC_SESSIONS] = set()
    app.on_shutdown.append(close_rpc_sessions)
    app.router.add_get(STREAM_PATH, rpc_stream)
    for name, handler in HANDLERS.items():
        app.router.add_post(f"/_internal/{name}", http_route(name, handler))
    app.router.add_post("/_internal/write-raw", write_raw)
    app.router.add_put("/_internal/stage/{upload}", stage)
    app.router.add_get("/_internal/chunk/{sha}", chunk)
