"""The native API's endpoints for S3 access keys (guarded like the rest of the native API: the
API token when one is set). A secret is shown once, in the answer that creates the key.

``GET /s3/keys``, ``POST /s3/keys`` {name, admin, access_key_id?, secret?},
``GET|DELETE /s3/keys/{id or name}``,
``PUT|DELETE /s3/keys/{id or name}/buckets/{bucket}`` {read, write}, and ``GET /s3/buckets``.
"""

from __future__ import annotations

import dataclasses
import re
import time
from typing import Any

from aiohttp import web

from ..errors import BadRequest, Conflict, NotFound
from .names import bucket_name_problem
from .registry import PERMISSIONS, AccessKey, Registry, new_key_id, new_secret

ADMIN_REGISTRY = web.AppKey("s3_admin_registry", Registry)
KEY_ID = re.compile(r"[A-Za-z0-9]{16,128}")
SECRET = re.compile(r"[\x21-\x7e]{16,128}")
NAME = re.compile(r"[\w.@+-]{1,64}")


def registry_of(request: web.Request) -> Registry:
    return request.app[ADMIN_REGISTRY]


async def json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise BadRequest("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


async def key_named(request: web.Request) -> AccessKey:
    ref = request.match_info["key"]
    key = await registry_of(request).find_key(ref)
    if key is None:
        raise NotFound(f"no access key with id or name {ref}")
    return key


async def list_keys(request: web.Request) -> web.Response:
    keys = await registry_of(request).list_keys()
    return web.json_response({"keys": [k.public() for k in sorted(keys, key=lambda k: k.name)]})


async def create_key(request: web.Request) -> web.Response:
    """A new key (or an imported one: access_key_id and secret given); answers the secret once."""
    body = await json_body(request)
    name = body.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise BadRequest("name: 1-64 letters, digits or . _ @ + -")
    key_id = body.get("access_key_id") or new_key_id()
    secret = body.get("secret") or new_secret()
    if not isinstance(key_id, str) or not KEY_ID.fullmatch(key_id):
        raise BadRequest("access_key_id: 16-128 letters and digits")
    if not isinstance(secret, str) or not SECRET.fullmatch(secret):
        raise BadRequest("secret: 16-128 printable ASCII characters without spaces")
    registry = registry_of(request)
    existing = await registry.list_keys()
    if any(k.key_id == key_id for k in existing):
        raise Conflict(f"access key {key_id} exists already")
    if any(k.name == name for k in existing):
        raise Conflict(f"a key named {name} exists already")
    key = AccessKey(key_id, name, secret, admin=bool(body.get("admin")), created=time.time())
    await registry.put_key(key)
    return web.json_response({**key.public(), "secret": secret}, status=201)


async def get_key(request: web.Request) -> web.Response:
    return web.json_response((await key_named(request)).public())


async def delete_key(request: web.Request) -> web.Response:
    key = await key_named(request)
    await registry_of(request).delete_key(key.key_id)
    return web.json_response({"deleted": key.key_id, "name": key.name})


async def allow(request: web.Request) -> web.Response:
    """Set what a key may do in a bucket: {"read": bool, "write": bool} (both false: nothing)."""
    key = await key_named(request)
    bucket = request.match_info["bucket"]
    if bucket_name_problem(bucket) is not None:
        raise BadRequest(f"invalid bucket name {bucket}")
    body = await json_body(request)
    granted = [p for p in PERMISSIONS if body.get(p)]
    key = dataclasses.replace(key, buckets=dict(key.buckets))  # records read are shared: change a copy
    if granted:
        key.buckets[bucket] = granted
    else:
        key.buckets.pop(bucket, None)
    await registry_of(request).put_key(key)
    return web.json_response(key.public())


async def deny(request: web.Request) -> web.Response:
    key = await key_named(request)
    key = dataclasses.replace(key, buckets=dict(key.buckets))  # records read are shared: change a copy
    key.buckets.pop(request.match_info["bucket"], None)
    await registry_of(request).put_key(key)
    return web.json_response(key.public())


async def list_buckets(request: web.Request) -> web.Response:
    buckets = await registry_of(request).list_buckets()
    return web.json_response({"buckets": [
        {"name": b.name, "owner": b.owner, "created": b.created}
        for b in sorted(buckets, key=lambda b: b.name)
    ]})  # fmt: skip


def add_admin_routes(app: web.Application, registry: Registry) -> None:
    app[ADMIN_REGISTRY] = registry
    app.router.add_get("/s3/keys", list_keys)
    app.router.add_post("/s3/keys", create_key)
    app.router.add_get("/s3/keys/{key}", get_key)
    app.router.add_delete("/s3/keys/{key}", delete_key)
    app.router.add_put("/s3/keys/{key}/buckets/{bucket}", allow)
    app.router.add_delete("/s3/keys/{key}/buckets/{bucket}", deny)
    app.router.add_get("/s3/buckets", list_buckets)
