"""Node-to-node endpoints under /_internal/: the handler table, msgpack messages, a peer's
credentials (a client certificate from the cluster CA, or a request signed with the cluster
secret) and protocol version required.

Each message handler serves two ways: as a call on the RPC stream (``/_internal/stream``, what
nodes use; cluster/rpc.py calls, cluster/rpc_server.py serves) and as an HTTP POST to
``/_internal/<method>`` (tools, tests). Bulk bytes have their own HTTP endpoints: a staged
upload's body, a one-phase write's raw body, a chunk.

Every handler validates what it receives; a malformed message gets 400 and is logged once
per peer, and never reaches the protocol cores or the store.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from ..cluster.codec import (
    ENTRY_HEADER,
    MAX_MESSAGE_BYTES,
    MSGPACK,
    PROTOCOL_HEADER,
    PROTOCOL_VERSION,
    pack,
    unpack,
)
from ..cluster.rpc import STREAM_PATH, STREAM_PROTOCOL
from ..cluster.rpc_server import RpcErrors, StreamSession
from ..cluster.signing import ENTRY, UNSIGNED, SignatureError, Verifier
from ..cluster.writes import ONE_PHASE_MAX
from ..core.manifest import ManifestEntry
from ..errors import BadRequest, NotFound, PayloadTooLarge, StoreError, Unauthorized, WrongProtocol, disk_full
from ..node import Node
from ..storage.chunks import is_sha256_hex
from .errors import status_of
from .metrics import REQUESTS, RPC_READ_PAUSES
from .overview import node_summary
from .public import NODE_KEY, READ_SIZE, get_node, pieces_of

log = logging.getLogger("p2pstore.internal")
MAX_KEYS_PER_LOOKUP = 10_000
_warned: set[str] = set()
_warned_protocol: set[str] = set()
_refused_logged: dict[str, float] = {}  # peer -> when a wrong secret from it was last logged
REFUSAL_LOG_EVERY = 60.0
RPC_SESSIONS = web.AppKey("rpc_sessions", set)
VERIFIER = web.AppKey("verifier", Verifier)
BODY_DIGEST = web.RequestKey("body_digest", str)  # the sha256 a signed request claims for its body
# the bulk endpoints whose body is checked against a signed manifest entry instead of its digest
UNSIGNED_BODY_OK = {UNSIGNED: ("PUT", "/_internal/stage/"), ENTRY: ("POST", "/_internal/write-raw")}


def refuse(request: web.Request, why: str) -> Unauthorized:
    """Log a refused peer (once a minute per address) and make the 401 that tells it why."""
    peer = request.remote or "?"
    now = time.monotonic()
    if now - _refused_logged.get(peer, float("-inf")) > REFUSAL_LOG_EVERY:
        _refused_logged[peer] = now
        log.error("refused internal requests from %s: %s", peer, why)
    return Unauthorized(why)


def check_credentials(request: web.Request) -> None:
    """Over TLS: the connection carries a client certificate the cluster CA signed (the internal
    listener requires and verifies it). Otherwise: a valid, fresh signature (signing.py)."""
    node = get_node(request)
    if node.config.internal_tls:
        transport = request.transport
        if not (transport is not None and transport.get_extra_info("peercert")):
            raise refuse(request, "internal requests need the internal TLS port and a cluster certificate")
        return
    try:
        claim = request.app[VERIFIER].verify(request.method, request.raw_path, request.headers)
    except SignatureError as exc:
        raise refuse(request, str(exc)) from exc
    cfg = node.config
    if request.host not in (cfg.advertise_address, f"{cfg.host}:{cfg.port}"):
        # each node remembers its own nonces: a request signed for another node is not for us
        why = f"request signed for {request.host}, not for this node ({cfg.advertise_address})"
        raise refuse(request, why)
    if claim in UNSIGNED_BODY_OK:
        method, prefix = UNSIGNED_BODY_OK[claim]
        if request.method != method or not request.path.startswith(prefix):
            raise refuse(request, f"body digest {claim} is only for {method} {prefix}")
    elif len(claim) != 64:
        raise refuse(request, "malformed body digest")
    request[BODY_DIGEST] = claim


def check_peer(request: web.Request) -> None:
    """Internal endpoints need a peer's credentials (see check_credentials) and this node's
    protocol version. A version named and different is refused first: a node of another
    version signs differently (protocol 2 sent a bearer secret) and must hear why it is
    refused; it is refused with one log line. A request naming none is checked as unsigned."""
    version = request.headers.get(PROTOCOL_HEADER, "")
    if version:
        check_version(request, version)
    check_credentials(request)
    check_version(request, version)


def check_version(request: web.Request, version: str) -> None:
    if version != str(PROTOCOL_VERSION):
        peer = request.remote or "?"
        why = f"protocol version {version or 'none'}; this node speaks {PROTOCOL_VERSION}"
        if peer not in _warned_protocol:
            _warned_protocol.add(peer)
            log.error("refused peer %s: %s", peer, why)
        raise WrongProtocol(f"refused: {why}")


def reply(obj: object) -> web.Response:
    return web.Response(body=pack(obj), content_type=MSGPACK)


async def read_message(request: web.Request, peer: str, method: str) -> object:
    raw = await read_body(request, MAX_MESSAGE_BYTES)
    try:
        return unpack(raw, MAX_MESSAGE_BYTES)
    except Exception as exc:
        raise malformed(peer, method, f"undecodable msgpack: {type(exc).__name__}: {str(exc)[:100]}") from exc


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole request body, at most ``limit`` bytes; one copy when its length is announced."""
    if request.content_length is not None:
        if request.content_length > limit:  # refused unread
            raise too_large(request.content_length, limit)
        try:
            body = await request.content.readexactly(request.content_length)
        except asyncio.IncompleteReadError as exc:
            raise BadRequest("body shorter than its Content-Length") from exc
    else:
        pieces, size = [], 0
        async for piece in request.content.iter_any():  # read(n) may return less than n: loop
            pieces.append(piece)
            size += len(piece)
            if size > limit:
                raise too_large(size, limit)
        body = b"".join(pieces)
    return checked_body(request, body)


def too_large(size: int, limit: int) -> PayloadTooLarge:
    """413 for a body over its limit; the connection is closed rather than the rest read."""
    return PayloadTooLarge(f"message of {size}+ bytes exceeds the limit of {limit} bytes")


def sha256_hex(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def checked_body(request: web.Request, body: bytes) -> bytes:
    """The body, if it is the one the request's signature covers (a signed digest, not ENTRY:
    a raw write's bytes are checked against the signed entry by the replica)."""
    claim = request.get(BODY_DIGEST)
    if claim is not None and len(claim) == 64 and not hmac.compare_digest(claim, sha256_hex(body)):
        raise refuse(request, "the body does not match its signed digest (altered in transit?)")
    return body


async def write_raw(request: web.Request) -> web.Response:
    """A one-phase write with the body as raw bytes and the entry (msgpack, base64) in a header:
    the 1 MiB body is not copied into and out of a msgpack message on both ends."""
    peer = request.remote or "?"
    try:
        header = base64.b64decode(request.headers.get(ENTRY_HEADER, ""), validate=True)
        wire = unpack(header, MAX_MESSAGE_BYTES)
    except Exception as exc:
        raise malformed(peer, "write", f"bad {ENTRY_HEADER} header: {type(exc).__name__}") from exc
    pieces = await read_pieces(request, ONE_PHASE_MAX)
    entry = entry_of(peer, "write", {"entry": wire})
    node = get_node(request)
    applied = await node.cluster.replica.commit_small(entry, pieces)  # checks them against the entry
    return reply({"applied": applied, "leases": node.cluster.leases.report(entry.key)})


async def read_pieces(request: web.Request, limit: int) -> tuple[bytes, ...]:
    """A raw body of at most ``limit`` bytes, in the pieces it arrived in: it is hashed and
    written piece by piece, so joining it (as ``readexactly`` does) would only copy it."""
    length = request.content_length
    if length is not None and length > limit:  # refused unread
        raise too_large(length, limit)
    pieces, size = [], 0
    async for piece in pieces_of(request.content):
        pieces.append(piece)
        size += len(piece)
        if size > limit:
            raise too_large(size, limit)
    if length is not None and size != length:
        raise BadRequest("body shorter than its Content-Length")
    claim = request.get(BODY_DIGEST)  # signed with the body's own digest rather than ENTRY
    if claim is not None and len(claim) == 64:
        checked_body(request, b"".join(pieces))
    return tuple(pieces)


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
        return await node.cluster.antientropy.handle(msg)
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
    applied = await node.cluster.replica.commit(upload, entry)
    return {"applied": applied, "leases": node.cluster.leases.report(entry.key)}


async def write_small(node: Node, msg: Any, peer: str) -> Any:
    data = msg.get("data") if isinstance(msg, dict) else None
    if not isinstance(data, bytes) or len(data) > ONE_PHASE_MAX:
        raise malformed(peer, "write", "write needs the data as bytes (a small file)")
    entry = entry_of(peer, "write", msg)
    applied = await node.cluster.replica.commit_small(entry, data)
    return {"applied": applied, "leases": node.cluster.leases.report(entry.key)}


async def compose_prepare(node: Node, msg: Any, peer: str) -> Any:
    """Gather the chunks of an object composed by reference (cluster/compose.py)."""
    try:
        if not isinstance(msg, dict):
            raise ValueError("compose-prepare must be a map")
        chunks, lengths, holders = msg.get("chunks"), msg.get("lengths"), msg.get("holders")
        probe = ManifestEntry(
            "probe", "0000000000000.000000.p", sum(lengths) if isinstance(lengths, list) else -1,
            "0" * 64, tuple(chunks) if isinstance(chunks, list) else (), "", False, 0.0,
            lengths=tuple(lengths) if isinstance(lengths, list) else (),
        ).validate()  # fmt: skip
        if not probe.lengths or not isinstance(holders, dict) or not all(
            isinstance(h, list) and all(isinstance(n, str) for n in h) for h in holders.values()
        ):
            raise ValueError("compose-prepare needs chunks, their lengths and holders")
    except (ValueError, TypeError) as exc:
        raise malformed(peer, "compose-prepare", str(exc)) from exc
    composer = node.cluster.composer.local
    return await composer.prepare(
        probe.chunks, probe.lengths, holders, msg.get("hash") is True, msg.get("md5") is True
    )


async def compose_commit(node: Node, msg: Any, peer: str) -> Any:
    if not isinstance(msg, dict):
        raise malformed(peer, "compose-commit", "compose-commit must be a map")
    entry = entry_of(peer, "compose-commit", msg)
    applied = await node.cluster.composer.local.commit(entry)
    return {"applied": applied, "leases": node.cluster.leases.report(entry.key)}


async def abort(node: Node, msg: Any, peer: str) -> Any:
    if not isinstance(msg, dict) or not isinstance(msg.get("upload"), str):
        raise malformed(peer, "abort", "abort needs an upload id")
    await node.cluster.replica.abort(msg["upload"])
    return {"ok": True}


def entries(node: Node, msg: Any, peer: str) -> Any:
    keys = msg.get("keys") if isinstance(msg, dict) else None
    if (
        not isinstance(keys, list)
        or len(keys) > MAX_KEYS_PER_LOOKUP
        or not all(isinstance(k, str) for k in keys)
    ):
        raise malformed(peer, "entries", "entries needs a list of keys")
    return {"views": [node.cluster.replica.local_view(k) for k in keys]}


def members(node: Node, msg: Any, peer: str) -> Any:
    """This node's member table and term: what a node with an empty data dir asks before it
    takes a dead member's place (cluster/identity.py)."""
    gossip = node.cluster.gossip
    records = [{"id": m.id, "addr": m.address, "state": m.state, "inc": m.incarnation}
               for m in gossip.membership.members()]  # fmt: skip
    return {"members": records, "term": gossip.term}


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
    return {"applied": len(await node.cluster.antientropy.apply_remote_entries(fresh))}


async def announce(node: Node, msg: Any, peer: str) -> Any:
    """New entries of keys this node holds no replica of, from the gateway that wrote them."""
    return {"applied": await node.cluster.announcer.receive(entries_of(peer, "announce", msg))}


async def checkpoint(node: Node, msg: Any, peer: str) -> Any:
    return await node.checkpoint_local()


async def recover(node: Node, msg: Any, peer: str) -> Any:
    return await node.cluster.admin.recover_here()


def summary(node: Node, msg: Any, peer: str) -> Any:
    """Disk, re-sync and recent activity, for the status page served by another node."""
    return node_summary(node)


async def purge(node: Node, msg: Any, peer: str) -> Any:
    tombstones = msg.get("tombstones") if isinstance(msg, dict) else None
    if not isinstance(tombstones, list) or len(tombstones) > MAX_KEYS_PER_LOOKUP:
        raise malformed(peer, "purge", "purge needs a list of tombstones")
    try:
        purged = await node.cluster.replica.purge(tombstones)
    except ValueError as exc:
        raise malformed(peer, "purge", str(exc)) from exc
    return {"purged": purged}


# A handler returns its reply, or (async) an awaitable of it; the plain ones (no I/O to wait
# for) are answered as their call arrives on the RPC stream, with no task per call.
MessageHandler = Callable[[Node, Any, str], Any]
HANDLERS: dict[str, MessageHandler] = {
    "gossip": gossip,
    "manifest-sync": manifest_sync,
    "commit": commit,
    "abort": abort,
    "compose-prepare": compose_prepare,
    "compose-commit": compose_commit,
    "write": write_small,
    "entries": entries,
    "read-repair": read_repair,
    "announce": announce,
    "lease": lease,
    "members": members,
    "lease-revoke": lease_revoke,
    "checkpoint": checkpoint,
    "recover": recover,
    "purge": purge,
    "summary": summary,
}
INLINE = frozenset(name for name, handler in HANDLERS.items() if not inspect.iscoroutinefunction(handler))


def http_route(name: str, handler: MessageHandler) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The same handler as one HTTP POST (tools, tests)."""

    async def route(request: web.Request) -> web.Response:
        peer = request.remote or "?"
        msg = await read_message(request, peer, name)
        result = handler(get_node(request), msg, peer)
        return reply(await result if inspect.isawaitable(result) else result)

    return route


# ---- the RPC stream: many calls in flight on one connection per peer ----
class Upgraded(web.StreamResponse):
    """The 101 answer; after it the connection belongs to the RPC stream, nothing to end."""

    async def write_eof(self, data: bytes = b"") -> None:
        return None


def rpc_code(exc: Exception) -> tuple[int, str] | None:
    """A known error's code and message on the stream (the HTTP status it would have)."""
    exc = disk_full(exc) or exc
    return (status_of(exc), exc.message) if isinstance(exc, StoreError) else None


def count_rpc(method: str, code: int) -> None:
    REQUESTS[("internal", f"RPC {method}", f"{code // 100}xx")] += 1


def count_pause(reason: str) -> None:
    RPC_READ_PAUSES[reason] += 1


async def rpc_stream(request: web.Request) -> web.StreamResponse:
    """Upgrade an authenticated ``GET /_internal/stream`` to the RPC stream and serve it."""
    if request.headers.get("Upgrade", "").lower() != STREAM_PROTOCOL:
        raise BadRequest(f"this endpoint needs Upgrade: {STREAM_PROTOCOL}")
    resp = Upgraded(status=101, headers={"Upgrade": STREAM_PROTOCOL, "Connection": "Upgrade"})
    await resp.prepare(request)
    node, peer = get_node(request), request.remote or "?"
    handlers = {name: functools.partial(handler, node) for name, handler in HANDLERS.items()}
    errors = RpcErrors(rpc_code, count_rpc, count_pause, lambda why: malformed(peer, "rpc", why))
    assert request.transport is not None
    session = StreamSession(request.transport, request.protocol, peer, handlers, INLINE, errors)  # type: ignore[arg-type]
    request.app[RPC_SESSIONS].add(session)
    try:
        # the bytes after the headers go to the session (aiohttp is pinned in pyproject.toml)
        request.protocol.set_parser(session)  # type: ignore[arg-type]
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

    async def body() -> AsyncIterator[bytes]:
        async for piece in request.content.iter_chunked(READ_SIZE):
            yield piece

    return reply(await get_node(request).cluster.replica.stage(upload, body()))


async def chunk(request: web.Request) -> web.StreamResponse:
    """A verified chunk for a peer, sent in 1 MiB pieces that are freed as they go out, its
    buffers counted in the node's read budget like a GET's (cluster/budget.py)."""
    sha = request.match_info["sha"]
    if not is_sha256_hex(sha):
        raise BadRequest("bad chunk name")
    node = get_node(request)
    budget, length = node.cluster.reads.budget, node.store.chunk_length(sha) or 0
    await budget.acquire(length)
    try:
        try:
            pieces = await node.store.read_chunk_pieces(sha)
        except FileNotFoundError as exc:
            raise NotFound(f"chunk {sha[:12]} not on this node") from exc
        if len(pieces) == 1:
            return web.Response(body=pieces[0], content_type="application/octet-stream")
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.content_length = sum(len(p) for p in pieces)
        await resp.prepare(request)
        pieces.reverse()
        while pieces:
            await resp.write(pieces.pop())
        await resp.write_eof()
        return resp
    finally:
        budget.release(length)


async def close_rpc_sessions(app: web.Application) -> None:
    """On shutdown: peers' streams would otherwise keep the server waiting for them."""
    for session in list(app[RPC_SESSIONS]):
        session.close()


def add_internal_routes(app: web.Application) -> None:
    """The internal routes, on an app that holds its node (NODE_KEY)."""
    app[RPC_SESSIONS] = set()
    app[VERIFIER] = Verifier(app[NODE_KEY].config.cluster_secret)
    app.on_shutdown.append(close_rpc_sessions)
    app.router.add_get(STREAM_PATH, rpc_stream)
    for name, handler in HANDLERS.items():
        app.router.add_post(f"/_internal/{name}", http_route(name, handler))
    app.router.add_post("/_internal/write-raw", write_raw)
    app.router.add_put("/_internal/stage/{upload}", stage)
    app.router.add_get("/_internal/chunk/{sha}", chunk)
