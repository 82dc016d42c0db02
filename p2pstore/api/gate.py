"""The one middleware every request passes: credentials, JSON errors, counting.

One layer, not one per concern: each aiohttp middleware costs a coroutine frame per request,
which shows in profiles of small requests.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from .errors import json_error
from .internal import check_peer
from .metrics import BYTES_IN, CLIENT_REQUESTS, REQUESTS
from .public import check_api_token, get_node

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def gate(request: web.Request, handler: Handler) -> web.StreamResponse:
    internal = request.path.startswith("/_internal/")
    api = "internal" if internal else "public"
    if request.content_length:
        BYTES_IN[api] += request.content_length
    status = "5xx"
    try:
        try:
            if internal:
                check_peer(request)
            else:
                if request.path.startswith("/files") and "local" not in request.query:
                    # client traffic through the cluster (not status polls or ?local=1 checks)
                    get_node(request).activity.mark()
                check_api_token(request)
            response = await handler(request)
        except Exception as exc:
            response = json_error(request, exc)
        status = f"{response.status // 100}xx"
        return response
    finally:
        REQUESTS[(api, request.method, status)] += 1
        if not internal and request.path.startswith("/files"):
            CLIENT_REQUESTS[api] += 1  # the status page's requests/s
