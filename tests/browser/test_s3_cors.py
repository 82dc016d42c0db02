"""Bucket CORS with a real browser: a page served from another origin uploads through a presigned
PUT URL and reads the object back (Chromium makes the preflight and checks every answer's CORS
headers); a page from an origin the rules do not list is refused by the browser."""

from __future__ import annotations

import hashlib
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.integration.test_s3 import ADMIN_ID, ADMIN_SECRET, client, code_of, import_key, no_tracebacks
from tests.support.processes import NodeProcess, wait_for

boto3 = pytest.importorskip("boto3")
from botocore.exceptions import ClientError  # noqa: E402

PAGE = b"""<!doctype html><html><body><script>
async function roundTrip(putUrl, getUrl, text) {
  const put = await fetch(putUrl, {method: "PUT", body: text, headers: {"x-amz-meta-from": "browser"}});
  const back = await fetch(getUrl);
  return {put: put.status, etag: put.headers.get("ETag"), get: back.status, body: await back.text(),
          meta: back.headers.get("x-amz-meta-from")};
}
</script></body></html>"""


class PageHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def page_server() -> Iterator[int]:
    """The page's own web server (another origin than the S3 port): its port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), PageHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def preflight(
    node: NodeProcess, path: str, origin: str | None, method: str, headers: str = ""
) -> tuple[int, Any]:
    req = urllib.request.Request(node.s3_url + path, method="OPTIONS")
    if origin is not None:
        req.add_header("Origin", origin)
    req.add_header("Access-Control-Request-Method", method)
    if headers:
        req.add_header("Access-Control-Request-Headers", headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_presigned_upload_from_another_origin(node_factory, page_server: int, page: Any) -> None:
    nodes = node_factory(3, s3=True, fsync="never", gossip_interval=0.2)
    import_key(nodes[0], ADMIN_ID, ADMIN_SECRET, "admin", admin=True)
    s3 = client(nodes[0])
    s3.create_bucket(Bucket="web")
    with pytest.raises(ClientError) as info:
        s3.get_bucket_cors(Bucket="web")
    assert code_of(info.value) == "NoSuchCORSConfiguration"
    allowed = f"http://127.0.0.1:{page_server}"
    rules = {"CORSRules": [{"AllowedOrigins": [allowed], "AllowedMethods": ["GET", "PUT"],
                            "AllowedHeaders": ["x-amz-meta-*", "content-type"],
                            "ExposeHeaders": ["ETag", "x-amz-meta-from"], "MaxAgeSeconds": 60}]}  # fmt: skip
    s3.put_bucket_cors(Bucket="web", CORSConfiguration=rules)
    got = client(nodes[2]).get_bucket_cors(Bucket="web")["CORSRules"]  # cluster-wide: another node
    assert got == rules["CORSRules"]
    with pytest.raises(ClientError) as info:
        s3.put_bucket_cors(Bucket="web", CORSConfiguration={"CORSRules": [
            {"AllowedOrigins": ["*"], "AllowedMethods": ["PATCH"]}]})  # fmt: skip
    assert code_of(info.value) == "InvalidRequest"
    assert client(nodes[1]).get_bucket_cors(Bucket="web")["CORSRules"] == rules["CORSRules"]  # unchanged

    # preflights by hand: allowed, another origin, a header the rule does not list, no Origin
    status, headers = preflight(nodes[1], "/web/x.txt", allowed, "PUT", "x-amz-meta-from, content-type")
    assert status == 200 and headers["Access-Control-Allow-Origin"] == allowed
    assert headers["Access-Control-Max-Age"] == "60" and "PUT" in headers["Access-Control-Allow-Methods"]
    assert preflight(nodes[1], "/web/x.txt", "http://evil.test", "PUT")[0] == 403
    status, body = preflight(nodes[1], "/web/x.txt", allowed, "PUT", "x-forbidden")
    assert status == 403 and "AccessForbidden" in body
    assert preflight(nodes[1], "/web/x.txt", allowed, "DELETE")[0] == 403
    assert preflight(nodes[1], "/web/x.txt", None, "PUT")[0] == 400

    # the browser: a page from the allowed origin uploads with a presigned PUT and reads it back
    target = {"Bucket": "web", "Key": "from-page.txt"}
    put_url = client(nodes[1]).generate_presigned_url("put_object", Params=target, ExpiresIn=600)
    get_url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": "web", "Key": "from-page.txt"}, ExpiresIn=600
    )
    page.goto(f"{allowed}/")
    result = page.evaluate("([p, g]) => roundTrip(p, g, 'hello from the page')", [put_url, get_url])
    assert result["put"] == 200 and result["get"] == 200, result
    assert result["body"] == "hello from the page" and result["meta"] == "browser", result
    assert result["etag"] == f'"{hashlib.md5(b"hello from the page").hexdigest()}"', result  # exposed
    stored = s3.get_object(Bucket="web", Key="from-page.txt")
    assert stored["Body"].read() == b"hello from the page" and stored["Metadata"] == {"from": "browser"}

    # the same page from another origin (localhost is not 127.0.0.1 to a browser): refused
    page.goto(f"http://localhost:{page_server}/")
    refused = page.evaluate(
        "async (g) => { try { await fetch(g); return 'read'; } catch (e) { return 'refused'; } }", get_url
    )
    assert refused == "refused"

    # DeleteBucketCors: the allowed origin is refused too afterwards
    s3.delete_bucket_cors(Bucket="web")
    assert preflight(nodes[0], "/web/x.txt", allowed, "PUT")[0] == 403
    # another node trusts the record it read for up to 5 s (docs/s3.md)
    wait_for(lambda: preflight(nodes[1], "/web/x.txt", allowed, "PUT")[0] == 403, timeout=15)
    no_tracebacks(nodes)
