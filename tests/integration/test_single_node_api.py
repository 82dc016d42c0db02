"""The public HTTP API of one real node process: round trips, ranges, errors, auth."""

from __future__ import annotations

import asyncio
import hashlib
import socket
from pathlib import Path

import aiohttp
import pytest

from tests.support.chunks import stored_chunks
from tests.support.http import generated_body, generated_sha256
from tests.support.processes import NodeProcess, metric

MiB = 1 << 20


def files_url(node: NodeProcess, key: str) -> str:
    return f"{node.url}/files/{key}"


def chunk_names(data_dir: Path) -> list[str]:
    """Chunks stored on disk: chunk files and segment records."""
    return sorted(stored_chunks(data_dir))


def tmp_files(data_dir: Path) -> list[Path]:
    return list((data_dir / "tmp").iterdir())


@pytest.mark.parametrize("size", [0, 1, 4 * MiB - 1, 4 * MiB, 4 * MiB + 1, 100 * MiB])
async def test_round_trip_sizes(node: NodeProcess, size: int) -> None:
    sha = generated_sha256(size, seed=size)
    async with aiohttp.ClientSession() as s:
        async with s.put(
            files_url(node, f"sizes/{size}"),
            data=generated_body(size, seed=size),
            headers={"X-Content-SHA256": sha, "Content-Type": "application/x-test"},
        ) as r:
            assert r.status == 201, await r.text()
            meta = await r.json()
        assert meta["size"] == size and meta["sha256"] == sha
        async with s.get(files_url(node, f"sizes/{size}")) as r:
            assert r.status == 200
            assert r.headers["ETag"] == f'"{sha}"'
            assert int(r.headers["Content-Length"]) == size
            assert r.headers["Content-Type"] == "application/x-test"
            assert "Last-Modified" in r.headers
            digest = hashlib.sha256()
            async for piece in r.content.iter_chunked(MiB):
                digest.update(piece)
        assert digest.hexdigest() == sha


async def test_range_head_and_conditional(node_factory) -> None:
    (node,) = node_factory(1, fsync="never", chunk_size=4096)
    body = bytes(range(256)) * 64  # 16 KiB = 4 chunks of 4 KiB
    async with aiohttp.ClientSession() as s:
        await (await s.put(files_url(node, "r"), data=body)).release()
        for header, expect in [
            ("bytes=0-0", body[0:1]),
            ("bytes=4090-4200", body[4090:4201]),  # across a chunk boundary
            ("bytes=12000-", body[12000:]),
            ("bytes=-5", body[-5:]),
            ("bytes=10000-99999", body[10000:]),
        ]:
            async with s.get(files_url(node, "r"), headers={"Range": header}) as r:
                assert r.status == 206, header
                assert await r.read() == expect, header
                assert r.headers["Content-Range"].endswith(f"/{len(body)}")
        async with s.get(files_url(node, "r"), headers={"Range": "bytes=16384-"}) as r:
            assert r.status == 416
            assert "error" in await r.json()
        async with s.head(files_url(node, "r")) as r:
            assert r.status == 200
            assert int(r.headers["Content-Length"]) == len(body)
            assert await r.read() == b""
            etag = r.headers["ETag"]
        async with s.get(files_url(node, "r"), headers={"If-None-Match": etag}) as r:
            assert r.status == 304


async def test_overwrite_delete_and_listing(node: NodeProcess) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.put(files_url(node, "k"), data=b"old") as r:
            v1 = (await r.json())["version"]
        async with s.put(files_url(node, "k"), data=b"new!") as r:
            v2 = (await r.json())["version"]
        assert v2 > v1
        async with s.get(files_url(node, "k")) as r:
            assert await r.read() == b"new!"
            assert r.headers["X-P2PStore-Version"] == v2
        async with s.delete(files_url(node, "k")) as r:
            assert r.status == 200 and (await r.json())["deleted"] is True
        async with s.get(files_url(node, "k")) as r:
            assert r.status == 404 and (await r.json())["error"].startswith("key not found")
        async with s.delete(files_url(node, "k")) as r:
            assert r.status == 404

        for i in range(7):
            await (await s.put(files_url(node, f"list/{i}"), data=b"x" * i)).release()
        await (await s.put(files_url(node, "other"), data=b"y")).release()
        seen, after = [], ""
        while True:
            async with s.get(
                f"{node.url}/files", params={"prefix": "list/", "limit": 3, "after": after}
            ) as r:
                page = await r.json()
            seen += [f["key"] for f in page["files"]]
            if page["next"] is None:
                break
            after = page["next"]
        assert seen == [f"list/{i}" for i in range(7)]
        async with s.get(f"{node.url}/files", params={"limit": "0"}) as r:
            assert r.status == 400


async def test_multipart_upload(node: NodeProcess) -> None:
    async with aiohttp.ClientSession() as s:
        form = aiohttp.FormData()
        form.add_field("key", "forms/named.txt")  # before the file: it is streamed as it arrives
        form.add_field("file", b"form bytes", filename="hello.txt", content_type="text/plain")
        async with s.post(f"{node.url}/files", data=form) as r:
            assert r.status == 201, await r.text()
            assert (await r.json())["key"] == "forms/named.txt"
        form = aiohttp.FormData()
        form.add_field("file", b"by filename", filename="fromname.txt")
        async with s.post(f"{node.url}/files", data=form) as r:
            assert (await r.json())["key"] == "fromname.txt"
        async with s.get(files_url(node, "forms/named.txt")) as r:
            assert await r.read() == b"form bytes"
            assert r.headers["Content-Type"] == "text/plain"
        form = aiohttp.FormData()
        form.add_field("key", "nofile")
        async with s.post(f"{node.url}/files", data=form) as r:
            assert r.status == 400


BAD_KEYS = ["a//b", "a/%2E%2E/b", "a/./b", "%2E%2E", "a%00b", "a%01b", "a%5Cb", "x" * 1025, "a/"]


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_bad_keys_rejected(node: NodeProcess, key: str) -> None:
    async with aiohttp.ClientSession() as s:
        url = aiohttp.client.URL(f"{node.url}/files/{key}", encoded=True)
        async with s.put(url, data=b"x") as r:
            assert r.status == 400, key
            body = await r.json()
            assert body["error"].startswith("invalid key")
        async with s.get(f"{node.url}/files") as r:
            assert (await r.json())["files"] == []


async def test_wrong_checksum_stores_nothing(node: NodeProcess) -> None:
    async with aiohttp.ClientSession() as s:
        wrong = hashlib.sha256(b"something else").hexdigest()
        for body in (b"payload" * 1000, b"payload" * 100_000):  # inline; whole, a segment record
            async with s.put(files_url(node, "c"), data=body, headers={"X-Content-SHA256": wrong}) as r:
                assert r.status == 400
                assert "does not match" in (await r.json())["error"]
        async with s.put(files_url(node, "c"), data=b"x", headers={"X-Content-SHA256": "zz"}) as r:
            assert r.status == 400
        async with s.get(files_url(node, "c")) as r:
            assert r.status == 404
    assert chunk_names(node.data_dir) == []
    assert tmp_files(node.data_dir) == []


def raw_request(node: NodeProcess, data: bytes) -> bytes:
    with socket.create_connection((node.host, node.port), timeout=10) as sock:
        sock.sendall(data)
        return sock.recv(65536)


def test_length_required_and_json_errors(node: NodeProcess) -> None:
    reply = raw_request(node, b"PUT /files/nolen HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 411"), reply
    assert b'"error"' in reply
    reply = raw_request(node, b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 404") and b'"error"' in reply


async def test_truncated_upload_leaves_nothing(node: NodeProcess) -> None:
    from tests.support.processes import wait_for

    with socket.create_connection((node.host, node.port)) as sock:
        sock.sendall(
            b"PUT /files/trunc HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n\r\n" + b"z" * 9_000_000
        )
    wait_for(lambda: tmp_files(node.data_dir) == [], 10, message="temp data cleaned")
    async with aiohttp.ClientSession() as s, s.get(files_url(node, "trunc")) as r:
        assert r.status == 404
    assert chunk_names(node.data_dir) == []


async def test_api_token(node_factory) -> None:
    (node,) = node_factory(1, fsync="never", api_token="s3cret")
    async with aiohttp.ClientSession() as s:
        async with s.put(files_url(node, "t"), data=b"x") as r:
            assert r.status == 401 and "error" in await r.json()
        async with s.get(f"{node.url}/health") as r:
            assert r.status == 200
        auth = {"Authorization": "Bearer s3cret"}
        async with s.put(files_url(node, "t"), data=b"x", headers=auth) as r:
            assert r.status == 201
        async with s.get(f"{node.url}/status", headers={"Authorization": "Bearer nope"}) as r:
            assert r.status == 401


async def test_limits_413_and_507(node_factory) -> None:
    small, full = (
        node_factory(1, fsync="never", max_upload_bytes=1000)[0],
        node_factory(1, fsync="never", min_free_bytes=1 << 60)[0],
    )
    async with aiohttp.ClientSession() as s:
        async with s.put(files_url(small, "big"), data=b"x" * 5000) as r:
            assert r.status == 413
        async with s.put(files_url(full, "any"), data=b"x") as r:
            assert r.status == 507 and "disk" in (await r.json())["error"]
        for n in (small, full):
            async with s.get(f"{n.url}/files") as r:
                assert (await r.json())["files"] == []


async def test_status_and_health(node: NodeProcess) -> None:
    async with aiohttp.ClientSession() as s:
        await (await s.put(files_url(node, "s"), data=b"abc")).release()
        async with s.get(f"{node.url}/status") as r:
            st = await r.json()
        async with s.get(f"{node.url}/health") as r:
            health = await r.json()
    assert st["node_id"] == health["node_id"]
    assert st["files"] == 1 and st["bytes"] == 3
    assert st["disk"]["free"] > 0
    assert st["address"] == node.address


async def test_long_lived_objects_are_kept_out_of_full_gc_passes(node: NodeProcess) -> None:
    """Start-up objects are frozen (gc.freeze): full cyclic-GC passes, which stall every request
    in flight, then walk only what was created since. /metrics shows it."""

    async def frozen_and_passes() -> tuple[int, int]:
        frozen = await asyncio.to_thread(metric, node, "p2pstore_gc_frozen_objects{")
        full = await asyncio.to_thread(metric, node, "p2pstore_gc_collections_total{", 'generation="2"')
        return frozen, full

    deadline = asyncio.get_running_loop().time() + 10
    while (got := await frozen_and_passes())[0] < 10_000:  # modules, the app, the store: many more
        assert asyncio.get_running_loop().time() < deadline, f"nothing frozen: {got}"
        await asyncio.sleep(0.05)
    assert got[1] >= 1  # the pass that ran just before freezing
