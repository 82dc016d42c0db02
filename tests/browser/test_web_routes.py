"""The page's HTTP routes without a browser: assets, headers, path traversal."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pstore.web.routes import resolve_static
from tests.support.processes import NodeProcess, start_nodes


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """One node shared by this module's tests."""
    pytest.importorskip("p2pstore.server")
    (n,) = start_nodes(tmp_path_factory.mktemp("web"), 1, fsync="never")
    try:
        yield n
    finally:
        n.terminate()


def raw_get(node: NodeProcess, path: str) -> tuple[int, dict[str, str], bytes]:
    """GET with the path sent exactly as given (no client-side normalisation)."""
    conn = http.client.HTTPConnection(node.host, node.port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_page_and_assets_are_served(node: NodeProcess) -> None:
    status, headers, body = raw_get(node, "/")
    assert status == 200
    assert headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["cache-control"] == "no-cache"
    assert b"/static/vendor/bootstrap.min.css" in body and b"cdn" not in body.lower()

    status, headers, body = raw_get(node, "/static/vendor/bootstrap.min.css")
    assert status == 200
    assert headers["content-type"].startswith("text/css")
    assert "max-age=" in headers["cache-control"]
    assert b"Bootstrap  v5.3.3" in body[:200]

    status, headers, body = raw_get(node, "/static/vendor/bootstrap.bundle.min.js")
    assert status == 200 and headers["content-type"].startswith("text/javascript")
    assert b"Licensed under MIT" in body[:400]

    status, headers, _ = raw_get(node, "/static/app.js")
    assert status == 200 and headers["cache-control"] == "no-cache"
    assert headers["x-content-type-options"] == "nosniff"


TRAVERSALS = [
    "/static/../routes.py",
    "/static/%2e%2e/routes.py",
    "/static/vendor/../../routes.py",
    "/static/vendor/%2e%2e/%2e%2e/routes.py",
    "/static/..%2froutes.py",
    "/static/%2fetc/passwd",
    "/static/..%5croutes.py",
    "/static/nope.js",
    "/static/vendor/",
    "/static/index.html",
]


def test_static_rejects_traversal_and_missing(node: NodeProcess) -> None:
    for path in TRAVERSALS:
        status, _headers, body = raw_get(node, path)
        assert status == 404, (path, status, body[:200])
        assert b"add_web_routes" not in body and b"root:" not in body


def test_resolve_static_unit() -> None:
    assert resolve_static("app.js") is not None
    assert isinstance(resolve_static("vendor/bootstrap.min.css"), Path)
    for bad in ("", "/etc/passwd", "../routes.py", "vendor/../../routes.py", "a\\b", ".hidden", "vendor//x"):
        assert resolve_static(bad) is None, bad
