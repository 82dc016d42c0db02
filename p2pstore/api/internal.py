"""Node-to-node endpoints under /_internal/: msgpack bodies, cluster secret required.

Every handler validates what it receives; a malformed message gets 400 and is logged once
per peer, and never reaches the protocol cores or the store.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from ..cluster.replication import ONE_PHASE_MAX
from ..cluster.transport import MAX_MESSAGE_BYTES, MSGPACK, pack, unpack
from ..core.manifest import ManifestEntry
from ..errors import BadRequest, NotFound, Unauthorized
from ..storage.chunks import is_sha256_hex
from .public import READ_SIZE, check_sha_header, get_node

log = logging.getLogger("p2pstore.internal")
MAX_KEYS_PER_LOOKUP = 10_000
_warned: set[str] = set()


@web.middleware
async def cluster_secret_auth(request: web.Request, handler):  # type: ignore[no-untyped-def]
    """Internal endpoints need ``Authorization: Bearer <cluster secret>``."""
    if request.path.startswith("/_internal/"):
        secret = get_node(request).config.cluster_secret
        given = request.headers.get("Authorization", "")
        if not secret or not hmac.compare_digest(given.encode(), f"Bearer {secret}".encode()):
            raise Unauthorized("missing or wrong cluster secret")
    return await handler(request)


def reply(obj: object) -> web.Response:
    return web.Response(body=pack(obj), content_type=MSGPACK)


async def read_message(request: web.Request) -> object:
    if request.content_length is not None and request.content_length > MAX_MESSAGE_BYTES:
        raise BadRequest("message too large")
    buf = bytearray()
    async for piece in request.content.iter_any():  # read(n) may return less than n: loop
        buf += piece
        if len(buf) > MAX_MESSAGE_BYTES:
            raise BadRequest("message too large")
    raw = bytes(buf)
    try:
        return unpack(raw)
    except Exception as exc:
        raise malformed(request, f"undecodable msgpack: {type(exc).__name__}") from exc


def malformed(request: web.Request, why: str) -> BadRequest:
    peer = request.remote or "?"
    if peer not in _warned:
        _warned.add(peer)
        log.warning("rejected malformed message from %s on %s: %s", peer, request.path, why)
    return BadRequest(f"malformed message: {why}")


async def gossip(request: web.Request) -> web.Response:
    envelope = await read_message(request)
    try:
        get_node(request).cluster.gossip.receive(envelope, request.remote or "")
    except ValueError as exc:
        raise malformed(request, str(exc)) from exc
    return reply({"ok": True})


async def manifest_sync(request: web.Request) -> web.Response:
    msg = await read_message(request)
    try:
        return reply(await get_node(request).cluster.handle_manifest_sync(msg))
    except ValueError as exc:
        raise malformed(request, str(exc)) from exc


async def stage(request: web.Request) -> web.Response:
    upload = request.match_info["upload"]
    if not (8 <= len(upload) <= 64 and upload.isalnum()):
        raise BadRequest("bad upload id")
    expected = check_sha_header(request.headers.get("X-Content-SHA256"))

    async def body() -> AsyncIterator[bytes]:
        async for piece in request.content.iter_chunked(READ_SIZE):
            yield piece

    return reply(await get_node(request).cluster.stage_local(upload, body(), expected))


def entry_of(request: web.Request, msg: dict) -> ManifestEntry:
    """The validated manifest entry carried by a commit or write message (400 when malformed)."""
    try:
        return ManifestEntry.from_wire(msg.get("entry"))
    except ValueError as exc:
        raise malformed(request, str(exc)) from exc


async def commit(request: web.Request) -> web.Response:
    msg = await read_message(request)
    if not isinstance(msg, dict):
        raise malformed(request, "commit must be a map")
    upload = msg.get("upload")
    if upload is not None and not isinstance(upload, str):
        raise malformed(request, "upload must be a string or nil")
    entry = entry_of(request, msg)
    applied = await get_node(request).cluster.commit_local(upload, entry)
    return reply({"applied": applied})


async def write_small(request: web.Request) -> web.Response:
    msg = await read_message(request)
    data = msg.get("data") if isinstance(msg, dict) else None
    if not isinstance(data, bytes) or len(data) > ONE_PHASE_MAX:
        raise malformed(request, "write needs the data as bytes (a small file)")
    entry = entry_of(request, msg)
    applied = await get_node(request).cluster.commit_small_local(entry, data)
    return reply({"applied": applied})


async def abort(request: web.Request) -> web.Response:
    msg = await read_message(request)
    if not isinstance(msg, dict) or not isinstance(msg.get("upload"), str):
        raise malformed(request, "abort needs an upload id")
    await get_node(request).cluster.abort_local(msg["upload"])
    return reply({"ok": True})


async def entries(request: web.Request) -> web.Response:
    msg = await read_message(request)
    keys = msg.get("keys") if isinstance(msg, dict) else None
    if (
        not isinstance(keys, list)
        or len(keys) > MAX_KEYS_PER_LOOKUP
        or not all(isinstance(k, str) for k in keys)
    ):
        raise malformed(request, "entries needs a list of keys")
    cluster = get_node(request).cluster
    return reply({"views": [cluster.local_view(k) for k in keys]})


async def chunk(request: web.Request) -> web.Response:
    sha = request.match_info["sha"]
    if not is_sha256_hex(sha):
        raise BadRequest("bad chunk name")
    try:
        data = await get_node(request).store.read_chunk(sha)
    except FileNotFoundError as exc:
        raise NotFound(f"chunk {sha[:12]} not on this node") from exc
    return web.Response(body=data, content_type="application/octet-stream")


async def checkpoint(request: web.Request) -> web.Response:
    await read_message(request)
    return reply(await get_node(request).checkpoint_local())


async def recover(request: web.Request) -> web.Response:
    await read_message(request)
    cluster = get_node(request).cluster
    await cluster.sync_all_manifests()
    return reply(await cluster.repairer.run_pass())


async def purge(request: web.Request) -> web.Response:
    msg = await read_message(request)
    tombstones = msg.get("tombstones") if isinstance(msg, dict) else None
    if not isinstance(tombstones, list) or len(tombstones) > MAX_KEYS_PER_LOOKUP:
        raise malformed(request, "purge needs a list of tombstones")
    try:
        purged = await get_node(request).cluster.purge_local(tombstones)
    except ValueError as exc:
        raise malformed(request, str(exc)) from exc
    return reply({"purged": purged})


def add_internal_routes(app: web.Application) -> None:
    app.router.add_post("/_internal/gossip", gossip)
    app.router.add_post("/_internal/manifest-sync", manifest_sync)
    app.router.add_put("/_internal/stage/{upload}", stage)
    app.router.add_post("/_internal/commit", commit)
    app.router.add_post("/_internal/abort", abort)
    app.router.add_post("/_internal/write", write_small)
    app.router.add_post("/_internal/entries", entries)
    app.router.add_get("/_internal/chunk/{sha}", chunk)
    app.router.add_post("/_internal/checkpoint", checkpoint)
    app.router.add_post("/_internal/recover", recover)
    app.router.add_post("/_internal/purge", purge)
