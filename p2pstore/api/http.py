"""Small HTTP helpers shared by handlers (the native API's and S3's): Range parsing, dates,
ETags, sending verified bytes."""

from __future__ import annotations

import email.utils
import functools
import re
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from ..errors import RangeNotSatisfiable, StoreError

RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """Return [start, end) for a single satisfiable byte range, None to serve the whole body.

    Malformed or multi-range headers are ignored (RFC 9110 allows serving 200); a well-formed
    range beyond the end raises RangeNotSatisfiable (416).
    """
    if not header:
        return None
    m = RANGE_RE.match(header.strip())
    if not m or (m.group(1) == "" and m.group(2) == ""):
        return None
    first, last = m.group(1), m.group(2)
    if first == "":
        suffix = int(last)
        if suffix == 0:
            raise RangeNotSatisfiable("range not satisfiable", {"size": size})
        return max(0, size - suffix), size
    start = int(first)
    end = size if last == "" else min(size, int(last) + 1)
    if last != "" and int(last) < start:
        return None
    if start >= size:
        raise RangeNotSatisfiable("range not satisfiable", {"size": size})
    return start, end


@functools.lru_cache(maxsize=4096)
def _http_date(second: int) -> str:
    return email.utils.formatdate(second, usegmt=True)


def http_date(ts: float) -> str:
    """RFC 7231 date of a timestamp (whole seconds; cached: formatdate is slow per request)."""
    return _http_date(int(ts))


def etag_of(sha256: str) -> str:
    return f'"{sha256}"'


def etag_matches(header: str | None, sha256: str) -> bool:
    """If-None-Match: true when any listed tag (weak or strong) or '*' matches."""
    if not header:
        return False
    tags = [t.strip() for t in header.split(",")]
    return any(t == "*" or t.removeprefix("W/") == etag_of(sha256) for t in tags)



async def send_range(
    request: web.Request,
    read_range: Callable[[int, int], AsyncIterator[bytes]],
    size: int,
    rng: tuple[int, int] | None,
    headers: dict[str, str],
) -> web.StreamResponse:
    """Answer a GET or HEAD of a file of ``size`` bytes: the range ``rng`` (206) or all of it
    (200), the verified bytes coming from ``read_range(start, end)``. An error before the first
    byte propagates (the caller's middleware answers it as JSON or XML); one after the headers
    are gone cuts the connection, so the client sees a short body, never bad bytes (the error
    was logged and counted where it was found). A body that comes in one piece is sent as one
    response (one writev on uvloop)."""
    start, end = rng if rng else (0, size)
    status, length = (206 if rng else 200), end - start
    if rng:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    if request.method == "HEAD":
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = length
        await resp.prepare(request)
        return resp
    body = read_range(start, end)
    first = await anext(body, None)
    if first is not None and len(first) == length:
        await body.aclose()
        return web.Response(status=status, headers=headers, body=first)
    resp = web.StreamResponse(status=status, headers=headers)
    resp.content_length = length
    await resp.prepare(request)
    try:
        if first is not None:
            await resp.write(first)
            async for piece in body:
                await resp.write(piece)
    except StoreError:
        if request.transport is not None:
            request.transport.abort()
        return resp
    await resp.write_eof()
    return resp
