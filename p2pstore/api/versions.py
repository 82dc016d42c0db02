"""The native API's versions (docs/versions.md): list a file's versions, read, remove or
restore one, and turn a folder's versioning on. The work is in cluster/versioning.py, shared
with the S3 API."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable

from aiohttp import web

from ..cluster import versioning
from ..core.keys import InvalidKey, validate_key
from ..core.versions import version_id
from ..errors import BadRequest, NotFound
from ..node import Node
from .http import file_headers, parse_range, send_range

MAX_BODY = 64 * 1024


def list_json(node: Node, key: str) -> dict:
    versions = versioning.versions_of(node.store, key)
    if not versions:
        raise NotFound(f"no file and no versions under {key[:200]!r}", {"key": key})
    return {
        "key": key,
        "versioning": versioning.status(node.store, key),
        "versions": [versioning.describe(e, i == 0) for i, e in enumerate(versions)],
    }


async def get_versions(request: web.Request, node: Node, key: str) -> web.StreamResponse:
    """``GET /files/{key}?versions=1`` (the list) or ``?version=V`` (that version's bytes)."""
    if "version" not in request.query:
        return web.json_response(list_json(node, key))
    vid = request.query["version"]
    resolved = await node.cluster.versions.resolve(key, vid)
    entry = resolved.entry
    headers = file_headers(entry, version_id(entry))
    rng = parse_range(request.headers.get("Range"), entry.size)
    reads = node.cluster.reads
    return await send_range(request, functools.partial(reads.read_range, resolved), entry.size, rng, headers)


async def delete_version(request: web.Request, node: Node, key: str) -> web.Response:
    """``DELETE /files/{key}?version=V``: that version is gone for good."""
    removed = await node.cluster.versions.remove(key, request.query["version"])
    return web.json_response({"key": key, "version": version_id(removed), "removed": True})


async def restore(request: web.Request, node: Node, key: str) -> web.Response:
    """``POST /restore/{key}?version=V``: that version is the current one again."""
    vid = request.query.get("version")
    if not vid:
        raise BadRequest("restore needs ?version=V (see GET /files/{key}?versions=1)")
    entry = await node.cluster.versions.restore(key, vid)
    return web.json_response({"key": key, "version": version_id(entry), "restored": True})


def folder_of(request: web.Request) -> str:
    folder = request.match_info["folder"]
    try:
        validate_key(folder)
    except InvalidKey as exc:
        raise BadRequest(exc.message) from None
    if "/" in folder or folder.startswith("."):
        raise BadRequest("versioning is set per top-level folder: a name without '/' or a leading '.'")
    return folder


async def get_folder(request: web.Request, node: Node) -> web.Response:
    """``GET /versioning/{folder}``: Off, Enabled or Suspended."""
    folder = folder_of(request)
    state = versioning.settings(node.store, folder)
    return web.json_response({"folder": folder, "status": state.get("status", "Off")})


async def put_folder(request: web.Request, node: Node) -> web.Response:
    """``PUT /versioning/{folder}`` with ``{"status": "Enabled" | "Suspended"}``."""
    folder = folder_of(request)
    try:
        body = json.loads(await request.content.read(MAX_BODY) or b"null")
    except ValueError:
        raise BadRequest("the body must be JSON: {\"status\": \"Enabled\" | \"Suspended\"}") from None
    status = body.get("status") if isinstance(body, dict) else None
    if status not in versioning.STATUSES:
        raise BadRequest("status must be Enabled or Suspended (versioning is never turned off again)")
    await node.cluster.versions.set_settings(folder, status=status)
    return web.json_response({"folder": folder, "status": status})


def add_routes(
    app: web.Application, node_of: Callable[[web.Request], Node], key_of: Callable[[web.Request], str]
) -> None:
    """Routes of their own (the public API's ``/files/{key}`` hands ``version(s)`` queries here)."""

    async def restore_route(request: web.Request) -> web.Response:
        return await restore(request, node_of(request), key_of(request))

    async def get_folder_route(request: web.Request) -> web.Response:
        return await get_folder(request, node_of(request))

    async def put_folder_route(request: web.Request) -> web.Response:
        return await put_folder(request, node_of(request))

    app.router.add_post("/restore/{key:.+}", restore_route)
    app.router.add_get("/versioning/{folder}", get_folder_route)
    app.router.add_put("/versioning/{folder}", put_folder_route)
