"""Small HTTP helpers shared by handlers: Range parsing, dates, ETags, byte bodies."""

from __future__ import annotations

import email.utils
import functools
import re
from collections.abc import Mapping

from aiohttp import web

from ..cluster.transport import COALESCE_LIMIT
from ..errors import RangeNotSatisfiable

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


async def send_bytes(
    request: web.Request, body: bytes, status: int = 200, headers: Mapping[str, str] | None = None,
    content_type: str | None = None,
) -> web.StreamResponse:
    """Answer with ``body`` without copying it when it is large.

    ``web.Response`` sends headers and body in one write, which aiohttp does by joining them
    into a new bytes object on Python < 3.12.9 (it avoids ``writelines`` there): a full copy and
    a fresh allocation per MiB served. Large bodies therefore go out as headers, then the body
    object itself.
    """  # fmt: skip
    if len(body) <= COALESCE_LIMIT:
        return web.Response(status=status, headers=headers, body=body, content_type=content_type)
    resp = web.StreamResponse(status=status, headers=headers)
    if content_type is not None:
        resp.content_type = content_type
    resp.content_length = len(body)
    await resp.prepare(request)
    await resp.write(body)
    await resp.write_eof()
    return resp
