"""Every error leaves the node as JSON ``{"error": ..., "detail": ...}`` with a fitting status."""

from __future__ import annotations

import logging

from aiohttp import web

from ..errors import (
    BadRequest,
    Conflict,
    CorruptData,
    Forbidden,
    InsufficientStorage,
    LengthRequired,
    NotFound,
    PayloadTooLarge,
    RangeNotSatisfiable,
    StoreError,
    Unauthorized,
    Unavailable,
    WrongProtocol,
    disk_full,
)

log = logging.getLogger(__name__)
CLIENT_GONE = 499  # counted in metrics as 4xx, as nginx does: the answer cannot be delivered

# Each domain error's HTTP status (also its code on the internal RPC stream); others are 500.
STATUS: dict[type[StoreError], int] = {
    BadRequest: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    LengthRequired: 411,
    PayloadTooLarge: 413,
    RangeNotSatisfiable: 416,
    WrongProtocol: 426,
    CorruptData: 500,
    Unavailable: 503,
    InsufficientStorage: 507,
}


def status_of(exc: StoreError) -> int:
    """The HTTP status of a domain error (its nearest mapped class; 500 for the base)."""
    for cls in type(exc).__mro__:
        status = STATUS.get(cls)  # type: ignore[call-overload]
        if status is not None:
            return status
    return 500


def error_response(status: int, message: str, detail: object = None) -> web.Response:
    return web.json_response({"error": message, "detail": detail}, status=status)


def json_error(request: web.Request, exc: Exception) -> web.Response:
    """The JSON answer for an error a handler raised (a redirect is re-raised). Never leaks a
    traceback; a client that went away is no error to log (aiohttp drops the answer quietly)."""
    exc = disk_full(exc) or exc
    if isinstance(exc, StoreError):
        return error_response(status_of(exc), exc.message, exc.detail)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "content-range")}
        resp = error_response(exc.status, exc.reason or "error", exc.text if exc.text else None)
        resp.headers.update(headers)
        return resp
    if isinstance(exc, OSError):
        if request.transport is None or request.transport.is_closing():
            return error_response(CLIENT_GONE, "the client closed the connection")  # never sent
        log.error("I/O error serving %s %s", request.method, request.path, exc_info=exc)
        return error_response(500, f"I/O error: {exc}")
    log.error("unexpected error serving %s %s", request.method, request.path, exc_info=exc)
    return error_response(500, f"internal error: {type(exc).__name__}")
