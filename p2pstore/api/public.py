"""The public gateway API: files, listing, health, status, checkpoint."""

from __future__ import annotations

import functools
import hmac
import logging
from collections.abc import AsyncIterator

from aiohttp import BodyPartReader, StreamReader, web
from aiohttp.http_exceptions import HttpProcessingError

from ..cluster.writes import WriteResult
from ..core.keys import RESERVED_PREFIX, InvalidKey, is_reserved, validate_key
from ..core.manifest import ManifestEntry
from ..errors import BadRequest, Conflict, Forbidden, LengthRequired, NotFound, Unauthorized
from ..node import Node
from . import versions
from .http import etag_matches, file_headers, parse_range, send_range
from .metrics import CLIENT_BYTES, render_metrics
from .status import status_json

log = logging.getLogger("p2pstore.api")
NODE_KEY = web.AppKey("node", Node)
READ_SIZE = 256 * 1024
MAX_LIST = 10_000
DEFAULT_CONTENT_TYPE = "application/octet-stream"


def get_node(request: web.Request) -> Node:
    return request.app[NODE_KEY]


def checked_key(key: str, node: Node) -> str:
    """``key`` if it can be stored, else BadRequest saying why (Forbidden for cluster metadata)."""
    try:
        validate_key(key, node.config.max_key_bytes)
    except InvalidKey as exc:
        raise BadRequest(exc.message, exc.detail) from None
    if is_reserved(key):
        raise Forbidden(f"keys under {RESERVED_PREFIX} are cluster metadata, not files")
    return key


def visible_entries(node: Node, prefix: str, after: str, limit: int) -> list[ManifestEntry]:
    """Up to ``limit`` live entries in key order, without the cluster metadata under .p2pstore/."""
    out: list[ManifestEntry] = []
    while len(out) < limit:
        want = limit - len(out)
        batch = node.store.db.list(prefix, after, want)
        out += [e for e in batch if not is_reserved(e.key)]
        if len(batch) < want:
            break
        after = batch[-1].key
        if is_reserved(after):
            after = max(after, RESERVED_PREFIX + "\U0010ffff")
    return out


MAX_CHAR = "\U0010ffff"  # sorts after every character a key may hold
FOLDER_BATCH = 128  # rows read per query of a folder listing (a sub-folder ends a batch early)
MAX_DELIMITER = 16
BUCKET_RECORDS = RESERVED_PREFIX + "s3/buckets/"  # the S3 registry's bucket records (s3/registry.py)


def folder_entries(
    node: Node, prefix: str, delimiter: str, after: str, limit: int
) -> tuple[list[ManifestEntry], list[str], str | None]:
    """One page of a folder: the files directly under ``prefix`` and its sub-folders (the
    prefixes up to the next ``delimiter``), in key order, ``limit`` items at most, and where the
    next page starts. A sub-folder is skipped over in the index (the next query starts after
    its last possible key), so a folder of 100,000 files costs one row, not 100,000."""
    files: list[ManifestEntry] = []
    folders: list[str] = []
    if after.startswith(prefix) and after.endswith(delimiter) and len(after) > len(prefix):
        after += MAX_CHAR  # the previous page ended on a sub-folder: resume past all of it
    last = ""
    while len(files) + len(folders) < limit:
        want = min(FOLDER_BATCH, limit - len(files) - len(folders))
        batch = node.store.db.list(prefix, after, want)
        for e in batch:
            cut = e.key.find(delimiter, len(prefix))
            if cut >= 0:
                folder = e.key[: cut + len(delimiter)]
                after = folder + MAX_CHAR
                if not is_reserved(folder):
                    folders.append(folder)
                    last = folder
                break
            after = e.key
            if not is_reserved(e.key):
                files.append(e)
                last = e.key
        else:
            if len(batch) < want:
                return files, folders, None
    return files, folders, last if len(files) + len(folders) >= limit else None


def bucket_names(node: Node) -> list[str]:
    """The S3 buckets this node knows of (its local copy of the registry's records): each is
    the top-level folder of the same name, shown as a bucket even while empty."""
    return [e.key[len(BUCKET_RECORDS) :] for e in node.store.db.list(BUCKET_RECORDS, "", MAX_LIST)]


def key_from_path(request: web.Request) -> str:
    return checked_key(request.match_info["key"], get_node(request))


def check_sha_header(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip().lower()
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise BadRequest("X-Content-SHA256 must be 64 hex digits")
    return value


def write_json(result: WriteResult) -> dict:
    """What a write answers: the stored entry and the nodes that acknowledged it."""
    return {**entry_json(result.entry), "replicas": result.replicas}


def entry_json(e: ManifestEntry) -> dict:
    return {
        "key": e.key,
        "size": e.size,
        "sha256": e.sha256,
        "version": e.version,
        "content_type": e.content_type,
        "modified": e.modified,
    }


def check_api_token(request: web.Request) -> None:
    """When --api-token is set, public endpoints need ``Authorization: Bearer <token>``."""
    token = get_node(request).config.api_token
    path = request.path
    # The page and its assets are static and hold no data; the page sends the token itself.
    if token and path not in ("/health", "/") and not path.startswith("/static/"):
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise Unauthorized("missing or wrong API token")


async def body_stream(request: web.Request) -> AsyncIterator[bytes]:
    """The body in the pieces the socket delivered them (each at most one read of the transport,
    256 KiB), as they come: re-cutting them to a fixed size (``iter_chunked``) joins and slices
    them, a copy of every byte of every upload."""
    async for piece in pieces_of(request.content):
        CLIENT_BYTES["in"] += len(piece)
        yield piece


async def pieces_of(content: StreamReader) -> AsyncIterator[bytes]:
    """A request body's buffered pieces, each handed on as received (``readchunk``); a chunked
    body's chunk ends (empty pieces) are skipped. Raises what the stream raises (a body cut
    short). ``at_eof`` as well: aiohttp's shared empty body answers (b"", True) after its first
    use, which alone would read as a chunk end forever."""
    while True:
        piece, end_of_chunk = await content.readchunk()
        if piece:
            yield piece
        elif not end_of_chunk or content.at_eof():
            return


async def put_file(request: web.Request) -> web.Response:
    key = key_from_path(request)
    chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    if request.content_length is None and not chunked:
        raise LengthRequired("Content-Length or chunked transfer encoding required")
    expected = check_sha_header(request.headers.get("X-Content-SHA256"))
    content_type = request.headers.get("Content-Type") or DEFAULT_CONTENT_TYPE
    node = get_node(request)
    w = int_param(request, "w", node.config.write_quorum, 1, node.config.replicas)
    writes = node.cluster.writes
    result = await writes.put(key, body_stream(request), content_type, expected, request.content_length, w)
    return web.json_response(write_json(result), status=201)


async def post_file(request: web.Request) -> web.Response:
    """Browser form upload: field ``file`` and optional ``key`` (send ``key`` first; without it
    the upload's file name is the key). The file part is streamed straight to the replicas."""
    if not request.content_type.startswith("multipart/"):
        raise BadRequest("POST /files needs a multipart/form-data body with a 'file' field")
    try:
        return await read_form(request)
    except (ValueError, HttpProcessingError, AssertionError) as exc:  # aiohttp's multipart parser
        log.warning("malformed multipart upload from %s: %s", request.remote, str(exc)[:200])
        raise BadRequest(f"malformed multipart body: {str(exc)[:200] or type(exc).__name__}") from None


async def read_form(request: web.Request) -> web.Response:
    node = get_node(request)
    w = int_param(request, "w", node.config.write_quorum, 1, node.config.replicas)
    reader = await request.multipart()
    key: str | None = None
    result: WriteResult | None = None
    async for part in reader:
        if not isinstance(part, BodyPartReader):
            continue
        if part.name == "key" and result is None:
            key = (await part.text()).strip() or None
        elif part.name == "file" and result is None:
            key = checked_key(key or part.filename or "", node)
            content_type = part.headers.get("Content-Type") or DEFAULT_CONTENT_TYPE

            async def pieces(p: BodyPartReader = part) -> AsyncIterator[bytes]:
                while data := await p.read_chunk(READ_SIZE):
                    CLIENT_BYTES["in"] += len(data)
                    yield data
                if request.content.at_eof():  # the body ended inside the part: truncated
                    raise BadRequest("multipart body ends inside the file part; nothing stored")

            result = await node.cluster.writes.put(key, pieces(), content_type, None, None, w)
        else:
            await part.release()
    if result is None:
        raise BadRequest("multipart body has no 'file' field")
    return web.json_response(write_json(result), status=201)


async def get_file(request: web.Request) -> web.StreamResponse:
    key = key_from_path(request)
    node = get_node(request)
    if "version" in request.query or "versions" in request.query:
        return await versions.get_versions(request, node, key)
    local = request.query.get("local") in ("1", "true", "yes")
    r = int_param(request, "r", 0, 1, node.config.replicas) or None  # read quorum override
    reads = node.cluster.reads
    resolved = reads.lookup_local(key) if local else await reads.resolve(key, r)
    entry = resolved.entry
    headers = file_headers(entry, entry.version)
    if etag_matches(request.headers.get("If-None-Match"), entry.sha256):
        return web.Response(status=304, headers=headers)
    rng = parse_range(request.headers.get("Range"), entry.size)
    # errors before the first byte become a JSON error
    return await send_range(request, functools.partial(reads.read_range, resolved), entry.size, rng, headers)


async def delete_file(request: web.Request) -> web.Response:
    key = key_from_path(request)
    node = get_node(request)
    if "version" in request.query:
        return await versions.delete_version(request, node, key)
    w = int_param(request, "w", node.config.write_quorum, 1, node.config.replicas)
    result = await node.cluster.writes.delete(key, w)
    return web.json_response(
        {"key": key, "version": result.entry.version, "deleted": True, "replicas": result.replicas}
    )


def int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise BadRequest(f"query parameter {name} must be an integer") from exc
    if not lo <= value <= hi:
        raise BadRequest(f"query parameter {name} must be between {lo} and {hi}")
    return value


async def list_files(request: web.Request) -> web.Response:
    node = get_node(request)
    node.cluster.peers.check_joined()  # a node that has not found its cluster would list nothing
    limit = int_param(request, "limit", 1000, 1, MAX_LIST)
    prefix = request.query.get("prefix", "")
    after = request.query.get("after", "")
    delimiter = request.query.get("delimiter", "")
    body: dict = {}
    if delimiter:
        if len(delimiter) > MAX_DELIMITER:
            raise BadRequest(f"delimiter must be at most {MAX_DELIMITER} characters")
        entries, folders, nxt = folder_entries(node, prefix, delimiter, after, limit)
        body["prefixes"] = folders
        if prefix == "" and delimiter == "/":
            body["buckets"] = bucket_names(node)
    else:
        entries = visible_entries(node, prefix, after, limit)
        nxt = entries[-1].key if len(entries) == limit else None
    files = [entry_json(e) for e in entries]
    if request.query.get("long") in ("1", "true", "yes") and files:
        report = await node.cluster.admin.replica_report([f["key"] for f in files])
        for f in files:
            f["replicas"] = report[f["key"]]
    return web.json_response({"files": files, **body, "next": nxt})


async def health(request: web.Request) -> web.Response:
    node = get_node(request)
    # 200 while the process serves (a liveness check); "joined": false while a node started with
    # seeds has not found its cluster yet and answers file requests with 503
    gossip = node.cluster.gossip
    return web.json_response(
        {"ok": True, "node_id": node.node_id, "joined": gossip.joined(), "join_error": gossip.refused()}
    )


async def status(request: web.Request) -> web.Response:
    node = get_node(request)
    body = status_json(node)
    if request.query.get("files") in ("1", "true", "yes"):
        limit = int_param(request, "limit", 1000, 1, MAX_LIST)
        query = request.query
        entries = visible_entries(node, query.get("prefix", ""), query.get("after", ""), limit)
        report = await node.cluster.admin.replica_report([e.key for e in entries])
        body["files_detail"] = [{**entry_json(e), "replicas": report[e.key]} for e in entries]
    return web.json_response(body)


async def checkpoint(request: web.Request) -> web.Response:
    node = get_node(request)
    results = await node.checkpoint_all()
    ok = all(r.get("ok") for r in results)
    return web.json_response({"results": results}, status=200 if ok else 500)


async def recover(request: web.Request) -> web.Response:
    """Re-sync the named node (id or host:port) now and report what it copied."""
    report = await get_node(request).cluster.admin.recover(request.match_info["node"])
    return web.json_response(report)


async def remove_member(request: web.Request) -> web.Response:
    """Forget a dead member for good (a machine that will not come back, a wiped disk)."""
    gossip = get_node(request).cluster.gossip
    member_id = request.match_info["node"]
    state = gossip.membership.state_of(member_id)
    if state is None:
        raise NotFound(f"no member named {member_id}")
    if state not in ("dead", "left"):
        raise Conflict(f"member {member_id} is {state}; only dead or left members can be removed")
    gossip.membership.remove(member_id)
    return web.json_response({"removed": member_id})


async def metrics(request: web.Request) -> web.Response:
    return web.Response(text=render_metrics(get_node(request)), content_type="text/plain")


def add_routes(app: web.Application) -> None:
    app.router.add_put("/files/{key:.+}", put_file)
    app.router.add_get("/files/{key:.+}", get_file)  # also answers HEAD
    app.router.add_delete("/files/{key:.+}", delete_file)
    app.router.add_post("/files", post_file)
    app.router.add_get("/files", list_files)
    app.router.add_get("/health", health)
    app.router.add_get("/status", status)
    app.router.add_post("/checkpoint", checkpoint)
    app.router.add_post("/recover/{node}", recover)
    app.router.add_get("/metrics", metrics)
    app.router.add_delete("/members/{node}", remove_member)
    versions.add_routes(app, get_node, key_from_path)
