"""The node-to-node RPC stream on real node processes: calls, errors, authentication, a peer
that stops answering, a crashed peer, and plain HTTP for peers without the socket."""

from __future__ import annotations

import asyncio
import hashlib
import re
import socket
from typing import Any

import aiohttp
import msgpack
import pytest
from aiohttp import web

from p2pstore.cluster.codec import PROTOCOL_HEADER, PROTOCOL_VERSION, pack, unpack
from p2pstore.cluster.rpc import CORK_BYTES, FrameReader, Writer
from p2pstore.cluster.transport import PeerError, Transport
from tests.support.http import peer_headers
from tests.support.processes import wait_for

pytest_plugins = ["tests.support.fixtures"]

SECRET = "rpc-test-secret"


def address_of(node) -> str:
    return node.url.removeprefix("http://")


def upgrade_request(host: str, port: int) -> bytes:
    """A stream upgrade request by hand, signed afresh (nonce, timestamp)."""
    headers = peer_headers(SECRET, f"http://{host}:{port}/_internal/stream", "GET")
    lines = ["GET /_internal/stream HTTP/1.1", "Connection: Upgrade", "Upgrade: p2pstore-rpc/1",
             *(f"{k}: {v}" for k, v in headers.items())]  # fmt: skip
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def open_stream(
    host: str, port: int, sock: socket.socket | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw RPC stream to a node (or over ``sock``, connected to it): the upgrade request by
    hand, the 101 answer read."""
    if sock is None:
        reader, writer = await asyncio.open_connection(host, port)
    else:
        reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(
        upgrade_request(host, port)
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


@pytest.fixture
def one_node(node_factory):
    return node_factory(1, fsync="never", cluster_secret=SECRET)[0]


async def test_calls_answers_and_errors(one_node) -> None:
    transport = Transport(SECRET)
    addr = address_of(one_node)
    try:
        async with aiohttp.ClientSession() as s, s.put(f"{one_node.url}/files/a", data=b"hello") as r:
            assert r.status == 201
        views = await asyncio.gather(
            *(transport.call(addr, "/entries", {"keys": ["a", "b"]}) for _ in range(50))
        )
        for reply in views:  # fifty calls in flight on one connection, each answered
            a, b = reply["views"]
            assert a["complete"] and a["entry"]["sha256"] == hashlib.sha256(b"hello").hexdigest()
            assert b == {"entry": None, "complete": False}
        assert len(transport.rpc.channels) == 1
        # the same handlers as HTTP POSTs (tools, tests): the same answers
        url = f"{one_node.url}/_internal/entries"
        body = pack({"keys": ["a", "b"]})
        async with aiohttp.ClientSession(headers=peer_headers(SECRET, url, body=body)) as s, s.post(
            url, data=body
        ) as r:
            assert r.status == 200 and unpack(await r.read()) == views[0]
        with pytest.raises(PeerError) as bad:
            await transport.call(addr, "/commit", {"entry": {"key": ""}})
        assert bad.value.status == 400 and "malformed" in str(bad.value)
        with pytest.raises(PeerError) as unknown:
            await transport.call(addr, "/no-such-method", {})
        assert unknown.value.status == 404
        assert (await transport.call(addr, "/entries", {"keys": []})) == {"views": []}  # still usable
    finally:
        await transport.close()


async def test_the_socket_needs_the_secret_and_drops_garbage(one_node) -> None:
    wrong = Transport("wrong-secret")
    try:
        with pytest.raises(PeerError) as denied:
            await wrong.call(address_of(one_node), "/entries", {"keys": []})
        assert denied.value.status == 401
    finally:
        await wrong.close()
    host, port = address_of(one_node).split(":")
    reader, writer = await open_stream(host, int(port))
    writer.write(b"\xc1")  # not msgpack: the node ends the connection
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()
    reader, writer = await open_stream(host, int(port))
    writer.write(pack([7, "entries", {"keys": 5}]) + pack([8, "no-such-method", {}]))
    unpacker = msgpack.Unpacker(raw=False)
    answers: dict[int, tuple[int, str]] = {}
    while len(answers) < 2:
        unpacker.feed(await asyncio.wait_for(reader.read(65536), 10))
        answers.update({call_id: (status, message) for call_id, status, message in unpacker})
    assert answers[7][0] == 400 and "malformed" in answers[7][1]
    assert answers[8][0] == 404
    writer.close()
    url = f"{one_node.url}/_internal/stream"
    async with aiohttp.ClientSession(headers=peer_headers(SECRET, url, "GET")) as s, s.get(url) as resp:
        assert resp.status == 400 and "Upgrade" in (await resp.json())["error"]  # no Upgrade header
    assert one_node.health() is not None
    assert "rejected malformed message" in one_node.log_text()


async def test_a_silent_peer_is_given_up_and_reconnected_after(one_node) -> None:
    transport = Transport(SECRET)
    addr = address_of(one_node)
    try:
        await transport.call(addr, "/entries", {"keys": []})
        one_node.pause()  # SIGSTOP: the socket stays open, nothing answers
        try:
            patient = asyncio.ensure_future(transport.call(addr, "/entries", {"keys": []}, timeout=30))
            with pytest.raises(PeerError, match="no answer"):
                await transport.call(addr, "/entries", {"keys": []}, timeout=0.5)
            assert not transport.rpc.channels[addr].open  # retired, so the next call reconnects
        finally:
            one_node.resume()
        # the call already waiting on the retired connection still gets its answer
        assert await patient == {"views": []}
        assert (await transport.call(addr, "/entries", {"keys": []}, timeout=10)) == {"views": []}
    finally:
        await transport.close()


async def test_a_call_too_big_for_the_socket_buffers_still_keeps_its_deadline(one_node) -> None:
    """Sending to a stopped peer fills the kernel buffers: the call waits for room, but only
    until its deadline (then the connection is retired), and big messages arrive whole."""
    transport = Transport(SECRET)
    addr = address_of(one_node)
    keys = [f"key-{i:07d}-" + "x" * 40 for i in range(9_000)]  # ~500 KiB of keys, answered with 9,000 views
    try:
        views = (await transport.call(addr, "/entries", {"keys": keys}, timeout=30))["views"]
        assert len(views) == len(keys) and all(v == {"entry": None, "complete": False} for v in views)
        one_node.pause()
        try:
            started = asyncio.get_running_loop().time()
            big = {"keys": [], "padding": b"x" * (24 << 20)}  # far beyond what the socket buffers take
            with pytest.raises(PeerError, match="no answer"):
                await asyncio.wait_for(transport.call(addr, "/entries", big, timeout=1), 20)
            assert asyncio.get_running_loop().time() - started < 10
            assert not transport.rpc.channels[addr].open
        finally:
            one_node.resume()
        views = (await transport.call(addr, "/entries", {"keys": keys}, timeout=30))["views"]
        assert len(views) == len(keys)
    finally:
        await transport.close()


async def test_a_crashed_peer_refuses_and_is_remembered(one_node) -> None:
    transport = Transport(SECRET)
    addr = address_of(one_node)
    try:
        await transport.call(addr, "/entries", {"keys": []})
        assert not transport.refusing(addr)
        one_node.kill()
        with pytest.raises(PeerError):  # the open connection breaks, the reconnect is refused
            for _ in range(3):
                await transport.call(addr, "/entries", {"keys": []}, timeout=5)
        with pytest.raises(PeerError):
            await transport.call(addr, "/entries", {"keys": []}, timeout=5)
        assert transport.refusing(addr)
    finally:
        await transport.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_manifest_sync_speaks_only_the_merkle_exchange(one_node) -> None:
    """A node answers a Merkle opening, and refuses the former bucket-digest opening as
    malformed (400): every peer speaks this protocol version, so there is no fallback."""
    transport = Transport(SECRET)
    addr = address_of(one_node)
    try:
        async with aiohttp.ClientSession() as s, s.put(f"{one_node.url}/files/a", data=b"hello") as r:
            assert r.status == 201
        opening = {"type": "merkle-root", "shape": [16, 4], "root": b"\0" * 16}
        answer = await transport.call(addr, "/manifest-sync", opening)
        assert answer["type"] == "merkle-level" and answer["level"] == 0  # it holds "a": roots differ
        old = {"type": "manifest-digest", "nbuckets": 1024, "root": b"\0" * 16}
        with pytest.raises(PeerError) as refused:
            await transport.call(addr, "/manifest-sync", old)
        assert refused.value.status == 400 and "unknown sync message type" in str(refused.value)
    finally:
        await transport.close()


async def test_a_peer_speaking_another_protocol_version_is_refused(one_node) -> None:
    """Every internal request names the protocol version it speaks: a node refuses another
    version (426, saying which it speaks) on plain requests and on the stream's upgrade, and logs
    it once per peer; the calling side gets an error that says so, not a misread message."""
    url = f"{one_node.url}/_internal/entries"
    async with aiohttp.ClientSession() as s:
        for version in ("1", "", "999"):
            headers = {**peer_headers(SECRET, url, body=pack({"keys": []})), PROTOCOL_HEADER: version}
            async with s.post(url, data=pack({"keys": []}), headers=headers) as r:
                error = (await r.json())["error"]
                assert r.status == 426 and f"this node speaks {PROTOCOL_VERSION}" in error, error
        good = peer_headers(SECRET, url, body=pack({"keys": []}))
        async with s.post(url, data=pack({"keys": []}), headers=good) as r:
            assert r.status == 200
    wait_for(lambda: "refused peer" in one_node.log_text(), 5, message="the refusal logged")
    assert one_node.log_text().count("refused peer") == 1, "one line per peer"

    async def old_stream(request: web.Request) -> web.Response:
        return web.json_response({"error": "refused: protocol version 2; this node speaks 3"}, status=426)

    app = web.Application()
    app.router.add_get("/_internal/stream", old_stream)
    runner = web.AppRunner(app)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    transport = Transport(SECRET)
    try:
        with pytest.raises(PeerError) as refused:
            await transport.call(f"127.0.0.1:{port}", "/entries", {"keys": []})
        assert refused.value.status == 426 and "another protocol version" in str(refused.value)
    finally:
        await transport.close()
        await runner.cleanup()


async def test_a_call_keeps_its_deadline_while_another_caller_connects() -> None:
    """A peer that accepts TCP but never answers the upgrade: a short call queued behind a long
    one's connection attempt fails at its own deadline, not the other caller's."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    addr = f"127.0.0.1:{silent.getsockname()[1]}"
    transport = Transport(SECRET)
    try:
        slow = asyncio.ensure_future(transport.call(addr, "/entries", {"keys": []}, timeout=10))
        await asyncio.sleep(0)  # let it take the connection attempt
        t0 = asyncio.get_running_loop().time()
        with pytest.raises(PeerError, match="no connection"):
            await transport.call(addr, "/entries", {"keys": []}, timeout=0.5)
        assert asyncio.get_running_loop().time() - t0 < 2.0
        with pytest.raises(PeerError):
            await slow
        assert transport.refusing(addr)  # the attempt itself gave up: the peer is not answering
    finally:
        await transport.close()
        silent.close()


async def test_a_peer_gone_before_its_upgrade_is_answered_is_no_error(one_node) -> None:
    """Callers give up on a stopped node's upgrade after a few seconds; when it resumes it finds
    their requests with the connections already closed: nothing to answer, nothing to log."""
    host, port = address_of(one_node).split(":")
    one_node.pause()
    try:
        for _ in range(3):  # queued in the kernel: the request, then the close
            _, writer = await asyncio.open_connection(host, int(port))
            writer.write(
                upgrade_request(host, int(port))
            )
            await writer.drain()
            writer.close()
    finally:
        one_node.resume()
    transport = Transport(SECRET)
    try:
        answer = await transport.call(address_of(one_node), "/entries", {"keys": []}, timeout=10)
        assert answer == {"views": []}
    finally:
        await transport.close()
    log = one_node.log_text()
    assert "Traceback" not in log and "Error handling request" not in log, log[-3000:]


async def read_pauses(session: aiohttp.ClientSession, node) -> dict[str, int]:
    """The node's count of RPC read pauses by reason, from /metrics."""
    async with session.get(f"{node.url}/metrics") as resp:
        text = await resp.text()
    pauses = re.findall(r'^p2pstore_rpc_read_pauses_total\{.*reason="(\w+)"\} (\d+)$', text, re.M)
    return {reason: int(n) for reason, n in pauses}


async def read_answers(reader: asyncio.StreamReader, count: int) -> dict[int, tuple[int, Any]]:
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=64 << 20)
    answers: dict[int, tuple[int, Any]] = {}
    while len(answers) < count:
        data = await asyncio.wait_for(reader.read(1 << 20), 30)
        assert data, f"stream ended after {len(answers)} of {count} answers"
        unpacker.feed(data)
        answers.update({call_id: (status, body) for call_id, status, body in unpacker})
    return answers


async def test_a_peer_is_not_read_while_its_calls_or_unread_answers_pile_up(one_node) -> None:
    """Flow control on the serving end: reading a peer's stream pauses while more than 1,024 of
    its calls are running, and while more than 4 MiB of answers wait for it to read them; it
    resumes once they drain, and every call is answered (no deadlock, nothing dropped)."""
    host, port = address_of(one_node).split(":")
    async with aiohttp.ClientSession() as http:
        before = await read_pauses(http, one_node)
        assert set(before) == {"calls", "answers"}
        reader, writer = await open_stream(host, int(port))
        try:
            # 10,000 calls that each need a task (abort is async), sent at once
            writer.write(b"".join(pack([i, "abort", {"upload": f"u{i}"}]) for i in range(10_000)))
            answers = await read_answers(reader, 10_000)
            assert all(answers[i] == (200, {"ok": True}) for i in range(10_000))
            assert (await read_pauses(http, one_node))["calls"] > before["calls"]
        finally:
            writer.close()

        # a peer that sends lookups but reads none of the answers (~1.7 MiB each)
        key = "big-answers/" + "k" * 88
        async with http.put(f"{one_node.url}/files/{key}", data=b"x") as resp:
            assert resp.status == 201
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)  # little room in the kernel
        sock.connect((host, int(port)))
        sock.setblocking(False)
        reader, writer = await open_stream(host, int(port), sock=sock)
        try:
            keys = [key] * 5_000
            calls = 12
            writer.write(b"".join(pack([i, "entries", {"keys": keys}]) for i in range(calls)))
            deadline = asyncio.get_running_loop().time() + 60
            while (await read_pauses(http, one_node))["answers"] == before["answers"]:
                assert asyncio.get_running_loop().time() < deadline, "reading never paused for answers"
                await asyncio.sleep(0.1)
            assert one_node.health(timeout=5) is not None  # others are still served meanwhile
            answers = await read_answers(reader, calls)
            assert all(status == 200 and len(body["views"]) == len(keys) for status, body in answers.values())
        finally:
            writer.close()


class Received(asyncio.Protocol):
    """The far end of a socket pair: every ``data_received`` call, and the end of the stream."""

    def __init__(self) -> None:
        self.reads: list[bytes] = []
        self.closed = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.reads.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set_result(None)


class CountingTransport:
    """A real transport, with the calls that hand it bytes counted."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.real, self.handed = transport, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def write(self, data: bytes) -> None:
        self.handed += 1
        self.real.write(data)

    def writelines(self, data: list[bytes]) -> None:
        self.handed += 1
        self.real.writelines(data)


async def test_frames_written_in_one_turn_leave_together_and_in_order() -> None:
    loop = asyncio.get_running_loop()
    a, b = socket.socketpair()
    sender, _ = await loop.create_connection(asyncio.Protocol, sock=a)
    _, far = await loop.create_connection(Received, sock=b)
    writer = Writer()
    counting = CountingTransport(sender)  # type: ignore[arg-type]
    writer.transport = counting  # type: ignore[assignment]
    frames = [pack([i, 200, f"answer {i}"]) for i in range(5)]
    for frame in frames:
        writer.write(frame)
    assert counting.handed == 0 and writer.buffered() == sum(map(len, frames))
    await asyncio.sleep(0)  # the end of this turn of the loop
    assert counting.handed == 1  # one writev for all five
    big = pack([5, 200, b"x" * CORK_BYTES])
    writer.write(big)
    assert counting.handed == 2  # a big frame goes at once
    writer.write(pack([6, 200, "last"]))
    writer.close()  # what is corked is sent before the stream ends
    await asyncio.wait_for(far.closed, 5)
    got = FrameReader().feed(b"".join(far.reads))
    assert [f[0] for f in got] == [0, 1, 2, 3, 4, 5, 6] and got[6][2] == "last"
    b.close()
