"""The S3 application: one middleware (authentication, S3 XML errors, counting) and one route
that dispatches by method, path shape (service, bucket, object) and subresource. Anything it
does not implement answers 501 NotImplemented in XML."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..api.metrics import REQUESTS
from ..node import Node
from . import buckets, multipart, objects, versioning
from . import xml as s3xml
from .auth import authenticate, sig_request
from .context import S3Call
from .errors import S3Error, s3_error
from .registry import Registry

log = logging.getLogger("p2pstore.s3")
CALL = web.RequestKey("s3_call", S3Call)
NODE = web.AppKey("s3_node", Node)
REGISTRY = web.AppKey("s3_registry", Registry)
REGION = web.AppKey("s3_region", str)
CLIENT_MAX_SIZE = 1024**2  # bodies read whole are XML documents; objects stream

Handler = Callable[[S3Call], Awaitable[web.StreamResponse]]

# Query parameters that are not subresources: listing arguments, response overrides, signing.
ALWAYS = {"x-id"}
LIST_PARAMS = {"prefix", "delimiter", "marker", "max-keys", "encoding-type", "list-type",
               "continuation-token", "start-after", "fetch-owner", "allow-unordered"}  # fmt: skip
SERVICE_PARAMS = {"max-buckets", "continuation-token", "prefix", "bucket-region"}
UPLOADS_PARAMS = {"uploads", "prefix", "delimiter", "key-marker", "upload-id-marker", "max-uploads",
                  "encoding-type"}  # fmt: skip
LIST_PARTS_PARAMS = {"uploadId", "max-parts", "part-number-marker", "encoding-type"}
GET_OBJECT_PARAMS = {"response-content-type", "response-content-language", "response-expires",
                     "response-cache-control", "response-content-disposition",
                     "response-content-encoding"}  # fmt: skip


def route(call: S3Call) -> Handler:
    """The handler for this request; NotImplemented for operations this server lacks."""
    method = call.request.method
    params = {k for k, _ in call.sig.query if not k.startswith("X-Amz-")} - ALWAYS
    if not call.bucket:
        if method == "GET" and params <= SERVICE_PARAMS:
            return buckets.list_buckets
        raise not_implemented(method, params, "the service")
    versioned = versioning.route(call, method, params)
    if versioned is not None:
        return versioned
    if not call.object_key:
        table: dict[tuple[str, frozenset[str]], Handler] = {
            ("PUT", frozenset()): buckets.create_bucket,
            ("DELETE", frozenset()): buckets.delete_bucket,
            ("HEAD", frozenset()): buckets.head_bucket,
            ("GET", frozenset({"location"})): buckets.get_location,
            ("POST", frozenset({"delete"})): objects.delete_objects,
        }
        handler = table.get((method, frozenset(params)))
        if handler is not None:
            return handler
        if method == "GET" and "uploads" in params and params <= UPLOADS_PARAMS:
            return multipart.list_uploads
        if method == "GET" and params <= LIST_PARAMS:
            return buckets.list_objects
        raise not_implemented(method, params, "a bucket")
    multipart_op = _multipart(call, method, params)
    if multipart_op is not None:
        return multipart_op
    if method in ("GET", "HEAD") and params <= GET_OBJECT_PARAMS:
        return objects.get_object
    if method == "PUT" and not params:
        return objects.copy_object if "x-amz-copy-source" in call.request.headers else objects.put_object
    if method == "DELETE" and not params:
        return objects.delete_object
    raise not_implemented(method, params, "an object")


def _multipart(call: S3Call, method: str, params: set[str]) -> Handler | None:
    """The multipart operation on an object this request is, if any."""
    if method == "POST" and params == {"uploads"}:
        return multipart.create_upload
    if method == "PUT" and params == {"partNumber", "uploadId"}:
        copy = "x-amz-copy-source" in call.request.headers
        return multipart.upload_part_copy if copy else multipart.upload_part
    if method == "POST" and params == {"uploadId"}:
        return multipart.complete_upload
    if method == "DELETE" and params == {"uploadId"}:
        return multipart.abort_upload
    if method == "GET" and "uploadId" in params and params <= LIST_PARTS_PARAMS:
        return multipart.list_parts
    return None


def not_implemented(method: str, params: set[str], target: str) -> S3Error:
    what = f"{method} on {target}" + (f" with ?{'&'.join(sorted(params))}" if params else "")
    if method not in ("GET", "HEAD", "PUT", "POST", "DELETE"):
        return S3Error("MethodNotAllowed", f"The specified method is not allowed: {what}")
    return S3Error("NotImplemented", f"A header or query you provided implies functionality that is "
                   f"not implemented: {what}")  # fmt: skip


def error_response(request: web.Request, err: S3Error, request_id: str) -> web.Response:
    headers = {"x-amz-request-id": request_id, **err.headers}
    if request.method == "HEAD":
        return web.Response(status=err.status, headers=headers)
    body = s3xml.error(err.code, err.message, err.resource or request.path, request_id, err.extra)
    return web.Response(status=err.status, body=body, content_type="application/xml", headers=headers)


@web.middleware
async def s3_gate(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    request_id = uuid.uuid4().hex[:16].upper()
    status = "5xx"
    try:
        try:
            node = request.app[NODE]
            node.activity.mark()
            sig = sig_request(request)
            key, verified = await authenticate(sig, request.app[REGISTRY], request.app[REGION])
            bucket, _, object_key = sig.path.removeprefix("/").partition("/")
            request[CALL] = S3Call(request, node, request.app[REGISTRY], request.app[REGION], sig, key,
                                   verified, bucket, object_key)  # fmt: skip
            response = await handler(request)
            response.headers["x-amz-request-id"] = request_id
        except Exception as exc:
            err = s3_error(exc)
            if err.code == "InternalError":
                if isinstance(exc, OSError) and (request.transport is None or request.transport.is_closing()):
                    err = S3Error("RequestTimeout", "the client closed the connection")
                else:
                    log.error("unexpected error serving S3 %s %s", request.method, request.path, exc_info=exc)
            elif err.code != "NoSuchKey":
                log.info("S3 %s %s: %s %s", request.method, request.path[:200], err.code, err.message[:200])
            response = error_response(request, err, request_id)
        status = f"{response.status // 100}xx"
        return response
    finally:
        REQUESTS[("s3", request.method, status)] += 1


async def dispatch(request: web.Request) -> web.StreamResponse:
    call = request[CALL]
    return await route(call)(call)


def build_s3_app(node: Node, registry: Registry) -> web.Application:
    app = web.Application(middlewares=[s3_gate], client_max_size=CLIENT_MAX_SIZE)
    app[NODE] = node
    app[REGISTRY] = registry
    app[REGION] = node.config.s3_region
    app.router.add_route("*", "/{tail:.*}", dispatch)
    return app
