"""The benchmark's lean HTTP client against a real aiohttp server on loopback."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import pytest
import uvloop
from aiohttp import web
from aiohttp.test_utils import TestServer

from p2pstore.bench import client as client_module
from p2pstore.bench.client import Client, ClientError
from p2pstore.bench.runner import Content, MiB, get_one

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


# The raw-socket tests run on both loops: the benchmark runs on uvloop, whose transports differ.
LOOPS = pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])


@LOOPS
@pytest.mark.parametrize("buffer", [8192, client_module.BUFFER])
def test_answers_split_anywhere_and_bigger_than_the_buffer(run, buffer: int, monkeypatch) -> None:
    """Headers in 7-byte dribbles, a body four times the receive buffer, then a second answer
    on the same connection: the bytes that arrive together with the end of one answer must
    move to the buffer's start intact and be parsed as the next answer (with the small buffer
    unread bytes move to its start on nearly every receive)."""
    monkeypatch.setattr(client_module, "BUFFER", buffer)
    body = bytes(range(251)) * 17_000  # 4.3 MB: fills, pauses and resumes the buffer
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nX-Long: {'y' * 3000}\r\n\r\n".encode()
    second = b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope"

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        for i in range(0, len(head), 7):
            writer.write(head[i : i + 7])
            await writer.drain()
        writer.write(body + second[:20])  # the next answer's start rides with this body's end
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")
        writer.write(second[20:])
        await writer.drain()
        await reader.read()  # until the client closes
        writer.close()

    async def main() -> None:
        srv = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        try:
            await fetch_both(port)
        finally:
            srv.close()
            await srv.wait_closed()

    async def fetch_both(port: int) -> None:
        async with Client(limit=1) as client:
            async with client.get(f"http://127.0.0.1:{port}/a") as resp:
                assert resp.status == 200 and resp.headers["x-long"] == "y" * 3000
                digest, sizes = hashlib.sha256(), []
                async for view in resp.iter_views(1 << 20):
                    digest.update(view)
                    sizes.append(len(view))
                assert digest.hexdigest() == hashlib.sha256(body).hexdigest()
                assert max(sizes) <= buffer and sum(sizes) == len(body)
            async with client.get(f"http://127.0.0.1:{port}/b") as resp:
                assert resp.status == 404 and await resp.read() == b"nope"

    run(main())


@LOOPS
def test_a_body_cut_short_is_a_client_error(run) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 5000)
        await writer.drain()
        writer.close()

    async def main() -> None:
        srv = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        try:
            async with Client(limit=1) as client:
                with pytest.raises(ClientError, match="95000 body bytes missing"):
                    async with client.get(f"http://127.0.0.1:{port}/a") as resp:
                        await resp.read()
        finally:
            srv.close()
            await srv.wait_closed()

    run(main())


async def test_the_benchmark_counts_any_byte_not_as_sent_as_an_error() -> None:
    """``get_one`` checks every byte against what was sent: one flipped byte, a body cut short
    or an ETag that is not the sha256 of what was sent is an error, the right answer is not."""
    content = Content(MiB)
    expected = content.digests(3)
    sent = b"".join(content.pieces(3))
    flipped = bytearray(sent)
    flipped[MiB // 2] ^= 0x01
    etag = f'"{expected.sha256}"'
    answers = {
        "/good": (sent, etag),
        "/flipped": (bytes(flipped), etag),
        "/short": (sent[:-1], etag),
        "/etag": (sent, '"' + "0" * 64 + '"'),
    }

    async def serve(request: web.Request) -> web.Response:
        body, tag = answers[request.path.removeprefix("/files")]
        return web.Response(body=body, headers={"ETag": tag})

    app = web.Application()
    app.router.add_get("/files/{name}", serve)
    srv = TestServer(app, host="127.0.0.1")
    await srv.start_server()
    try:
        base = str(srv.make_url("")).rstrip("/")
        async with Client(limit=1) as client:
            results = {name: await get_one(client, base, name.lstrip("/"), MiB, expected, None)
                       for name in answers}  # fmt: skip
    finally:
        await srv.close()
    assert results["/good"] is None
    assert "not the 1048576 bytes sent" in (results["/flipped"] or "")
    assert "not the 1048576 bytes sent" in (results["/short"] or "")
    assert "ETag" in (results["/etag"] or "")
