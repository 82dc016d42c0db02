"""Every error leaves the node as JSON ``{"error": ..., "detail": ...}`` with a fitting status."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..errors import StoreError

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(status: int, message: str, detail: object = None) -> web.Response:
    return web.json_response({"error": message, "detail": detail}, status=status)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn StoreError and aiohttp's own HTTP errors into JSON; never leak a traceback."""
    try:
        return await handler(request)
    except StoreError as exc:
        return error_response(exc.status, exc.message, exc.detail)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "content-range")}
        resp = error_response(exc.status, exc.reason or "error", exc.text if exc.text else None)
        resp.headers.update(headers)
        return resp
    except (ConnectionResetError, OSError) as exc:
        if request.transport is None or request.transport.is_closing():
            raise  # the client went away; nothing to answer
        log.exception("I/O error serving %s %s", request.method, request.path)
        return error_response(500, f"I/O error: {exc}")
    except Exception as exc:
        log.exception("unexpected error serving %s %s", request.method, request.path)
        return error_response(500, f"internal error: {type(exc).__name__}")
