"""The benchmark's lean HTTP client against a real aiohttp server on loopback."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from p2pstore.bench.client import Client, ClientError

BIG = bytes(range(256)) * 20_000  # 5 MB


def make_app(peers: list[tuple[str, int]]) -> web.Application:
    async def small(request: web.Request) -> web.Response:
        assert request.transport is not None
        peers.append(request.transport.get_extra_info("peername"))
        return web.Response(body=b"hello", headers={"ETag": '"abc"'})

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(0, len(BIG), 70_000):
            await resp.write(BIG[i : i + 70_000])
        await resp.write_eof()
        return resp

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=BIG)

    async def echo(request: web.Request) -> web.Response:
        digest = hashlib.sha256()
        async for piece in request.content.iter_chunked(1 << 16):
            digest.update(piece)
        return web.json_response({"sha256": digest.hexdigest(), "chunked": "chunked" in
                                  request.headers.get("Transfer-Encoding", "")}, status=201)  # fmt: skip

    async def close(request: web.Request) -> web.Response:
        return web.json_response({"error": "nope"}, status=503, headers={"Connection": "close"})

    app = web.Application()
    app.router.add_get("/small", small)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/big", big)
    app.router.add_put("/echo", echo)
    app.router.add_get("/close", close)
    return app


@pytest.fixture
async def server() -> AsyncIterator[tuple[TestServer, list[tuple[str, int]]]]:
    peers: list[tuple[str, int]] = []
    srv = TestServer(make_app(peers), host="127.0.0.1")
    await srv.start_server()
    try:
        yield srv, peers
    finally:
        await srv.close()


async def pieces() -> AsyncIterator[bytes]:
    for i in range(0, len(BIG), 1 << 20):
        yield BIG[i : i + (1 << 20)]


async def test_keep_alive_bodies_uploads_and_errors(server) -> None:
    srv, peers = server
    base = str(srv.make_url("")).rstrip("/")
    async with Client(limit=4) as client:
        for _ in range(5):  # one connection, reused
            async with client.get(f"{base}/small") as resp:
                assert resp.status == 200 and await resp.read() == b"hello"
                assert resp.headers.get("etag") == '"abc"' and resp.headers["ETag"] == '"abc"'
        assert len(set(peers)) == 1

        async with client.get(f"{base}/chunked") as resp:
            assert b"".join([p async for p in resp.iter_chunked(1 << 16)]) == BIG
        async with client.get(f"{base}/big") as resp:
            assert await resp.read() == BIG

        want = hashlib.sha256(BIG).hexdigest()
        for headers, chunked in (({"Content-Length": str(len(BIG))}, False), ({}, True)):
            async with client.put(f"{base}/echo", data=pieces(), headers=headers) as resp:
                assert resp.status == 201
                assert (await resp.json()) == {"sha256": want, "chunked": chunked}
        async with client.put(f"{base}/echo", data=BIG) as resp:
            assert (await resp.json())["sha256"] == want

        async with client.get(f"{base}/close") as resp:
            assert resp.status == 503 and "nope" in await resp.text()
        async with client.get(f"{base}/small") as resp:  # a new connection after "close"
            assert await resp.read() == b"hello"


async def test_a_connection_the_server_closed_is_replaced(server) -> None:
    srv, peers = server
    base = str(srv.make_url("")).rstrip("/")
    async with Client(limit=4) as client:
        async with client.get(f"{base}/small") as resp:
            await resp.read()
        # The server drops its idle keep-alive connections (as after its keep-alive timeout).
        for proto in list(srv.runner.server.connections):  # type: ignore[union-attr]
            proto.force_close()
            if proto.transport is not None:
                proto.transport.close()
        async with client.get(f"{base}/small") as resp:
            assert await resp.read() == b"hello"
        assert len(set(peers)) == 2


async def test_refused_connection_is_a_client_error() -> None:
    async with Client(limit=1) as client:
        with pytest.raises(ClientError, match=r"GET http://127\.0\.0\.1:9/x"):
            async with client.get("http://127.0.0.1:9/x"):
                pass
