"""Every node-to-node message is bounded before it is decoded: a 60 MB msgpack message, sent as
an internal POST (with or without a Content-Length) or as a frame on the RPC stream, is refused
while the node's peak RSS grows by a few MB at most; a small message of millions of tiny items
is refused too. The node keeps serving."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import msgpack

from p2pstore.cluster.codec import MAX_MESSAGE_BYTES
from tests.support.http import peer_headers

SECRET = "limits-secret"
BIG = 60 * 1000 * 1000
GROWTH_LIMIT = MAX_MESSAGE_BYTES + 8 * 1024 * 1024  # what one bounded message may cost, at most


def peak_rss(pid: int) -> int:
    """The process's peak resident set (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def big_message() -> bytes:
    """A 60 MB gossip message: one huge string field (what an attacker's frame looks like)."""
    return msgpack.packb({"type": "sync", "members": [], "pad": "x" * BIG})


async def test_a_60_mb_message_is_refused_before_it_is_decoded(node_factory) -> None:
    (node,) = node_factory(1, fsync="never", cluster_secret=SECRET)
    assert node.pid is not None
    body = big_message()
    url = f"{node.url}/_internal/gossip"
    before = peak_rss(node.pid)
    async with aiohttp.ClientSession() as s:
        async with s.post(url, data=body, headers=peer_headers(SECRET, url, body=body)) as r:
            assert r.status == 413, await r.text()
            assert "exceeds" in (await r.json())["error"]

        async def chunked():  # no Content-Length: refused once the limit is passed
            for at in range(0, len(body), 1 << 20):
                yield body[at : at + (1 << 20)]

        try:
            async with s.post(url, data=chunked(), headers=peer_headers(SECRET, url, body=body)) as r:
                assert r.status == 413, await r.text()
        except aiohttp.ClientError:
            pass  # the node may hang up on the rest of the body once it has answered
        async with s.get(f"{node.url}/health") as r:
            assert r.status == 200
    growth = peak_rss(node.pid) - before
    print(f"peak RSS growth: {growth / 2**20:.1f} MiB")
    assert growth < GROWTH_LIMIT, f"peak RSS grew by {growth / 2**20:.1f} MiB"
    assert "Traceback" not in node.log_text()


async def test_a_60_mb_stream_frame_ends_the_stream_unbuffered(node_factory) -> None:
    (node,) = node_factory(1, fsync="never", cluster_secret=SECRET)
    assert node.pid is not None
    host, port = node.address.split(":")
    headers = peer_headers(SECRET, f"{node.url}/_internal/stream", "GET")
    lines = ["GET /_internal/stream HTTP/1.1", "Connection: Upgrade", "Upgrade: p2pstore-rpc/1",
             *(f"{k}: {v}" for k, v in headers.items())]  # fmt: skip
    frame = msgpack.packb([1, "gossip", {"type": "sync", "pad": b"x" * BIG}])
    before = peak_rss(node.pid)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 101"), head
        sent = 0
        try:
            for at in range(0, len(frame), 1 << 20):
                writer.write(frame[at : at + (1 << 20)])
                await asyncio.wait_for(writer.drain(), 10)
                sent += 1 << 20
        except (ConnectionError, TimeoutError):
            pass
        try:
            rest = await asyncio.wait_for(reader.read(), 10)
        except ConnectionResetError:
            rest = b""
        assert rest == b"", "the node closes the stream without answering"
        assert sent < len(frame), "the node stopped reading before the whole frame was sent"
    finally:
        writer.close()
    growth = peak_rss(node.pid) - before
    print(f"peak RSS growth: {growth / 2**20:.1f} MiB")
    assert growth < GROWTH_LIMIT, f"peak RSS grew by {growth / 2**20:.1f} MiB"
    assert "undecodable frame" in node.log_text() or "malformed" in node.log_text()
    assert node.health() is not None, "and keeps serving"


async def test_a_small_message_of_millions_of_items_is_refused(node_factory) -> None:
    """1.5 MB on the wire, 1.5 million empty maps decoded (~100 MB): refused by the item count
    (a few hundred thousand decoded at most)."""
    (node,) = node_factory(1, fsync="never", cluster_secret=SECRET)
    assert node.pid is not None
    body = msgpack.packb({"type": "sync", "members": [[{}] * 150_000 for _ in range(10)]})
    assert len(body) < 2 * 1024 * 1024
    url = f"{node.url}/_internal/gossip"
    before = peak_rss(node.pid)
    headers = peer_headers(SECRET, url, body=body)
    async with aiohttp.ClientSession() as s, s.post(url, data=body, headers=headers) as r:
        assert r.status == 400, await r.text()
        assert "items" in (await r.json())["error"]
    growth = peak_rss(node.pid) - before
    print(f"peak RSS growth: {growth / 2**20:.1f} MiB")
    assert growth < 2 * GROWTH_LIMIT, f"peak RSS grew by {growth / 2**20:.1f} MiB"
