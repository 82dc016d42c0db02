"""Every error leaves the node as JSON ``{"error": ..., "detail": ...}`` with a fitting status."""

from __future__ import annotations

import logging

from aiohttp import web

from ..errors import StoreError

log = logging.getLogger(__name__)


def error_response(status: int, message: str, detail: object = None) -> web.Response:
    return web.json_response({"error": message, "detail": detail}, status=status)


def json_error(request: web.Request, exc: Exception) -> web.Response:
    """The JSON answer for an error a handler raised; re-raised when there is nothing to
    answer (a redirect, a client that went away). Never leaks a traceback."""
    if isinstance(exc, StoreError):
        return error_response(exc.status, exc.message, exc.detail)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "content-range")}
        resp = error_response(exc.status, exc.reason or "error", exc.text if exc.text else None)
        resp.headers.update(headers)
        return resp
    if isinstance(exc, OSError):
        if request.transport is None or request.transport.is_closing():
            raise exc  # the client went away; nothing to answer
        log.error("I/O error serving %s %s", request.method, request.path, exc_info=exc)
        return error_response(500, f"I/O error: {exc}")
    log.error("unexpected error serving %s %s", request.method, request.path, exc_info=exc)
    return error_response(500, f"internal error: {type(exc).__name__}")
