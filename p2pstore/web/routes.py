"""The built-in status page: ``GET /`` (the page) and ``GET /static/{path}`` (its assets).

Everything is served from ``p2pstore/web/static`` inside the package (Bootstrap is vendored,
no CDN), so a node needs no network access to show its dashboard.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC_DIR = Path(__file__).resolve().parent / "static"
INDEX = STATIC_DIR / "index.html"

# Vendored files never change within a release; our own page assets may, so they revalidate.
VENDOR_CACHE = "public, max-age=86400"
APP_CACHE = "no-cache"

# The page only talks to its own node; no inline script, so an injected tag cannot run.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)

CONTENT_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".map": "application/json",
}


def _security_headers(cache: str) -> dict[str, str]:
    return {
        "Cache-Control": cache,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }


def resolve_static(rel: str) -> Path | None:
    """The file under STATIC_DIR named by ``rel``, or None if it is missing or escapes the folder."""
    if not rel or "\\" in rel or "\x00" in rel or rel.startswith("/"):
        return None
    parts = rel.split("/")
    if any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        return None
    path = (STATIC_DIR / rel).resolve()
    try:
        path.relative_to(STATIC_DIR)
    except ValueError:
        return None
    if path.name == "index.html" or not path.is_file():
        return None
    return path


async def index(request: web.Request) -> web.StreamResponse:
    """The dashboard page."""
    headers = _security_headers(APP_CACHE)
    headers["Content-Security-Policy"] = CSP
    headers["X-Frame-Options"] = "DENY"
    return web.FileResponse(INDEX, headers={**headers, "Content-Type": CONTENT_TYPES[".html"]})


async def static(request: web.Request) -> web.StreamResponse:
    """One asset from the static folder; 404 for anything outside it."""
    path = resolve_static(request.match_info["path"])
    if path is None:
        raise web.HTTPNotFound(reason="no such static file")
    cache = VENDOR_CACHE if path.parent.name == "vendor" else APP_CACHE
    headers = _security_headers(cache)
    ctype = CONTENT_TYPES.get(path.suffix)
    if ctype:
        headers["Content-Type"] = ctype
    return web.FileResponse(path, headers=headers)


def add_web_routes(app: web.Application) -> None:
    """Register ``GET /`` and ``GET /static/{path}`` (HEAD is answered too)."""
    app.router.add_get("/", index)
    app.router.add_get("/static/{path:.+}", static)
