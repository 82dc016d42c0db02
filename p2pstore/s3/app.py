"""The S3 application: one route whose handler authenticates, answers S3 XML errors, counts, and
dispatches by method, path shape (service, bucket, object) and subresource. Anything it
does not implement answers 501 NotImplemented in XML."""

from __future__ import annotations

import itertools
import logging
import uuid
from collections.abc import Awaitable, Callable
from urllib.parse import unquote

from aiohttp import HttpVersion11, web

from ..api.metrics import REQUESTS
from ..errors import StoreError
from ..node import Node
from . import buckets, cors, multipart, objects, versioning
from . import xml as s3xml
from .auth import authenticate, sig_request
from .context import S3Call
from .errors import S3Error, s3_error
from .registry import Registry
from .vhost import split_target

log = logging.getLogger("p2pstore.s3")
NODE = web.AppKey("s3_node", Node)
REGISTRY = web.AppKey("s3_registry", Registry)
REGION = web.AppKey("s3_region", str)
DOMAINS = web.AppKey("s3_domains", tuple)
CLIENT_MAX_SIZE = 1024**2
# Request ids: unique per process start and request, without a urandom call per request.
_ID_PREFIX = uuid.uuid4().hex[:8].upper()
_ids = itertools.count()  # bodies read whole are XML documents; objects stream

Handler = Callable[[S3Call], Awaitable[web.StreamResponse]]
DIRECT = web.AppKey("s3_direct", Callable[[web.Request], Awaitable[web.StreamResponse]])

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
GET_OBJECT_PARAMS_WITH_PART = GET_OBJECT_PARAMS | {"partNumber"}
# Object operations without a query string, looked up without building the parameter set.
_SIMPLE_OBJECT_OPS: dict[str, Handler] = {
    "GET": objects.get_object, "HEAD": objects.get_object, "PUT": objects.put_object,
    "DELETE": objects.delete_object,
}  # fmt: skip


def route(call: S3Call) -> Handler:
    """The handler for this request; NotImplemented for operations this server lacks."""
    method = call.request.method
    if not call.sig.query and call.bucket and call.object_key:  # Put/Get/Head/DeleteObject
        simple = _SIMPLE_OBJECT_OPS.get(method)
        if simple is not None:
            copy = method == "PUT" and "x-amz-copy-source" in call.request.headers
            return objects.copy_object if copy else simple
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
            ("PUT", frozenset({"cors"})): buckets.put_cors,
            ("GET", frozenset({"cors"})): buckets.get_cors,
            ("DELETE", frozenset({"cors"})): buckets.delete_cors,
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
    if method in ("GET", "HEAD") and params <= GET_OBJECT_PARAMS_WITH_PART:
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


def s3_handler(node: Node, registry: Registry, region: str, domains: tuple[str, ...], *,
               direct: bool = False) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:  # fmt: skip
    """The one handler of every S3 request: authentication, dispatch, S3 XML errors, counting.
    A route handler rather than a middleware: aiohttp wraps each middleware in one more
    coroutine per request, and this app has only the one route. ``direct``: called by the
    server without the application's router (see :func:`direct_handler`), so it answers
    ``Expect: 100-continue`` itself once the request's signature holds (a request refused
    before its body is answered without inviting the body)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        request_id = f"{_ID_PREFIX}{next(_ids):08X}"
        status = "5xx"
        extra: dict[str, str] = {"x-amz-request-id": request_id}
        try:
            try:
                node.activity.mark()
                if request.method == "OPTIONS":
                    response = await preflight(request, registry, domains)
                    status = f"{response.status // 100}xx"
                    return response
                sig = sig_request(request)
                origin = request.headers.get("Origin")
                if origin is not None:  # a browser's request: the bucket's CORS rules say what it may see
                    extra.update(await cors_headers(request, sig.path, origin, registry, domains))
                key, verified = await authenticate(sig, registry, region)
                if direct and "Expect" in request.headers:  # signed: now the body may come
                    await answer_expect(request)
                if domains:
                    bucket, object_key = split_target(sig.path, request.headers.get("Host"), domains)
                else:  # path style only: /bucket/key
                    bucket, _, object_key = sig.path.removeprefix("/").partition("/")
                call = S3Call(request, node, registry, region, sig, key, verified, bucket, object_key, extra)
                response = await route(call)(call)
                # a streamed answer sent them with its head (call.extra); GetObject's carries them
                if not response.prepared and "x-amz-request-id" not in response.headers:
                    response.headers.update(extra)
            except Exception as exc:
                response = error_response(request, logged_error(request, exc), request_id)
                response.headers.update(extra)
            status = f"{response.status // 100}xx"
            return response
        finally:
            REQUESTS[("s3", request.method, status)] += 1

    return handle


def logged_error(request: web.Request, exc: Exception) -> S3Error:
    """The S3 error answering ``exc``, logged (a traceback only for what no handler expected)."""
    err = s3_error(exc)
    if err.code == "InternalError":
        if isinstance(exc, OSError) and (request.transport is None or request.transport.is_closing()):
            err = S3Error("RequestTimeout", "the client closed the connection")
        else:
            log.error("unexpected error serving S3 %s %s", request.method, request.path, exc_info=exc)
    elif err.code != "NoSuchKey":
        log.debug("S3 %s %s: %s %s", request.method, request.path[:200], err.code, err.message[:200])
    return err


async def answer_expect(request: web.Request) -> None:
    """``Expect: 100-continue``: tell the client to send its body (what aiohttp's router does
    for a routed handler); any other expectation fails before the body is read."""
    value = request.headers.get("Expect", "")
    if request.version != HttpVersion11:
        return
    if value.lower() != "100-continue":
        raise S3Error("ExpectationFailed", f"Unknown Expect: {value[:100]}")
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the answer's head and body are still to come


async def _bucket_rules(
    request: web.Request, path: str, registry: Registry, domains: tuple[str, ...]
) -> tuple[str, str, tuple[cors.Rule, ...]]:
    """(bucket, key, the bucket's CORS rules) of a request path; no rules when it has none."""
    bucket_name, key = split_target(path, request.headers.get("Host"), domains)
    if not bucket_name:
        return bucket_name, key, ()
    try:
        bucket = await registry.get_bucket(bucket_name)
    except StoreError:
        return bucket_name, key, ()
    return bucket_name, key, cors.rules_from_record(bucket.cors) if bucket is not None else ()


async def cors_headers(
    request: web.Request, path: str, origin: str, registry: Registry, domains: tuple[str, ...]
) -> dict[str, str]:
    """The CORS headers of this request's answer, errors included (none when no rule matches)."""
    _, _, rules = await _bucket_rules(request, path, registry, domains)
    rule = cors.find(rules, origin, request.method)
    return cors.response_headers(rule, origin) if rule is not None else {}


async def preflight(request: web.Request, registry: Registry, domains: tuple[str, ...]) -> web.Response:
    """A browser's OPTIONS before a cross-origin request: unauthenticated, as on S3; 200 with the
    matching rule's headers, else 403 AccessForbidden."""
    origin = request.headers.get("Origin")
    method = request.headers.get("Access-Control-Request-Method")
    if origin is None or method is None:
        what = "Origin" if origin is None else "Access-Control-Request-Method"
        raise S3Error("BadRequest", f"Insufficient information. {what} request header needed.")
    wanted = request.headers.get("Access-Control-Request-Headers", "").split(",")
    path = unquote(request.raw_path.partition("?")[0])
    bucket, _, rules = await _bucket_rules(request, path, registry, domains)
    if not rules:
        raise S3Error("AccessForbidden", "CORSResponse: CORS is not enabled for this bucket.", Method=method,
                      ResourceType="BUCKET" if bucket else "SERVICE")  # fmt: skip
    rule = cors.find(rules, origin, method, wanted)
    if rule is None:
        raise S3Error("AccessForbidden", "CORSResponse: This CORS request is not allowed. This is usually "
                      "because the evaluation of Origin, request method / Access-Control-Request-Method or "
                      "Access-Control-Request-Headers are not whitelisted by the resource's CORS spec.",
                      Method=method, ResourceType="OBJECT")  # fmt: skip
    return web.Response(status=200, headers=cors.response_headers(rule, origin, wanted))


def build_s3_app(node: Node, registry: Registry) -> web.Application:
    """The S3 application: one catch-all route. The server calls :func:`direct_handler` of it
    instead of the application's own entry, which saves the router on every request."""
    # No middleware and no on_response_prepare hook: either costs every request a coroutine.
    app = web.Application(client_max_size=CLIENT_MAX_SIZE)
    app[NODE] = node
    app[REGISTRY] = registry
    app[REGION] = node.config.s3_region
    app[DOMAINS] = tuple(node.config.s3_domain)
    app[DIRECT] = s3_handler(node, registry, app[REGION], app[DOMAINS], direct=True)
    app.router.add_route("*", "/{tail:.*}", s3_handler(node, registry, app[REGION], app[DOMAINS]))
    return app


def direct_handler(app: web.Application) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The S3 handler for the server to call in place of the application's router: every S3
    request goes to the one handler, so matching its path against the catch-all route (a
    regular expression, a match-info object, the router's own coroutine: about 3 µs of CPU per
    request) decides nothing. Its requests carry no match info (``request.app`` is unset); the
    handler gets what it needs from the application when it is built."""
    return app[DIRECT]
