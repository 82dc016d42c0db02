"""Internal requests in plain HTTP (``--insecure-plain``) are signed: what an eavesdropper
captures cannot be replayed, altered, sent late or sent to another node, and the secret itself
never travels. The node warns at start and /status says traffic is plain."""

from __future__ import annotations

import asyncio
import hashlib
import time

import aiohttp
import msgpack

from p2pstore.cluster.signing import body_digest, sign
from tests.support.http import peer_headers

SECRET = "signed-secret"


def entry(key: str, data: bytes, wall: int = 1795926025997) -> dict:
    sha = hashlib.sha256(data).hexdigest()
    return {"key": key, "version": f"{wall:013d}.000000.nabcdef", "size": len(data), "sha256": sha,
            "chunks": [sha], "content_type": "x/y", "deleted": False, "modified": 1.0}  # fmt: skip


async def test_a_captured_request_cannot_be_replayed_altered_delayed_or_redirected(node_factory) -> None:
    a, b = node_factory(2, fsync="never", cluster_secret=SECRET)
    url = f"{a.url}/_internal/write"
    body = msgpack.packb({"entry": entry("k", b"first"), "data": b"first"})
    captured = peer_headers(SECRET, url, body=body)
    assert SECRET not in repr(captured)  # the secret never travels
    async with aiohttp.ClientSession() as s:
        async with s.post(url, data=body, headers=captured) as r:
            assert r.status == 200, await r.text()
        async with s.post(url, data=body, headers=captured) as r:  # replayed as captured
            assert r.status == 401 and "replayed" in (await r.json())["error"]
        fresh = peer_headers(SECRET, url, body=body)
        forged = msgpack.packb({"entry": entry("k", b"evil!", wall=9999999999999), "data": b"evil!"})
        async with s.post(url, data=forged, headers=fresh) as r:  # the body altered in transit
            assert r.status == 401 and "does not match" in (await r.json())["error"]
        stale = {**peer_headers(SECRET, url, body=body)}
        old = sign(SECRET, "POST", a.address, "/_internal/write", body_digest(body), now=0)  # signed in 1970
        async with s.post(url, data=body, headers={**stale, **old}) as r:
            assert r.status == 401 and "window" in (await r.json())["error"]
        late = sign(SECRET, "POST", a.address, "/_internal/write", body_digest(body), now=time.time() - 120)
        async with s.post(url, data=body, headers={**stale, **late}) as r:
            assert r.status == 401 and "window" in (await r.json())["error"]
        for_b = peer_headers(SECRET, f"{b.url}/_internal/write", body=body)  # meant for b, sent to a
        async with s.post(url, data=body, headers={**for_b, "Host": b.address}) as r:
            assert r.status == 401 and "signed for" in (await r.json())["error"]
        async with s.get(f"{a.url}/files/k?local=1") as r:
            assert r.status == 200 and await r.read() == b"first"  # nothing forged was applied
    assert "Traceback" not in a.log_text()


async def test_a_captured_stream_upgrade_cannot_be_replayed(node_factory) -> None:
    (node,) = node_factory(1, fsync="never", cluster_secret=SECRET)
    host, port = node.address.split(":")
    headers = peer_headers(SECRET, f"{node.url}/_internal/stream", "GET")
    lines = ["GET /_internal/stream HTTP/1.1", "Connection: Upgrade", "Upgrade: p2pstore-rpc/1",
             *(f"{k}: {v}" for k, v in headers.items())]  # fmt: skip
    upgrade = ("\r\n".join(lines) + "\r\n\r\n").encode()
    heads = []
    for _ in range(2):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(upgrade)
        heads.append(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10))
        writer.close()
    assert heads[0].startswith(b"HTTP/1.1 101"), heads[0]
    assert heads[1].startswith(b"HTTP/1.1 401"), heads[1]


async def test_plain_traffic_is_announced_in_the_log_and_status(node_factory) -> None:
    (node,) = node_factory(1, fsync="never", cluster_secret=SECRET)
    status = node.get_json("/status")
    assert status["security"]["internal"] == "plain HTTP, signed"
    assert "plain HTTP" in status["security"]["warning"]
    assert "WARNING" in node.log_text() and "--insecure-plain" in node.log_text()


async def test_a_node_of_the_previous_protocol_hears_which_version_it_lacks(node_factory) -> None:
    """A node of protocol 2 sends the bearer secret and no signature: it is told its protocol
    version is wrong (426), not that its secret is (the version is checked first)."""
    (node,) = node_factory(1, fsync="never", cluster_secret=SECRET)
    headers = {"Authorization": f"Bearer {SECRET}", "X-P2PStore-Protocol": "2"}
    url, body = f"{node.url}/_internal/entries", msgpack.packb({"keys": []})
    async with aiohttp.ClientSession() as s, s.post(url, data=body, headers=headers) as r:
        assert r.status == 426 and "protocol version 2" in (await r.json())["error"]
