"""Slow and greedy clients cannot take a node from everyone else (api/guard.py): uploads that
trickle do not exhaust the gateway's connections to its replicas, one client address runs a
bounded number of uploads at once, request heads and bodies that trickle are cut after a
bounded time, and a thousand idle sockets leave the node serving."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

import aiohttp

from tests.support.processes import metric, wait_for

TRICKLE_SIZE = 10_000_000  # what each slow upload declares
FAST_PART = 2 * 1024 * 1024  # sent at once, so the upload is streaming to its replicas


async def slow_upload(
    address: str, key: str, local: str, stop: asyncio.Event, path: str = "/files/"
) -> bytes:
    """A PUT that declares TRICKLE_SIZE bytes, sends FAST_PART, then 1 KiB every half second
    until ``stop`` (above the default least rate: it is slow, not stalled). Returns what the
    node answered, if anything."""
    host, port = address.split(":")
    reader, writer = await asyncio.open_connection(host, int(port), local_addr=(local, 0))
    try:
        head = f"PUT {path}{key} HTTP/1.1\r\nHost: {address}\r\nContent-Length: {TRICKLE_SIZE}\r\n\r\n"
        writer.write(head.encode() + os.urandom(FAST_PART))
        await writer.drain()
        while not stop.is_set():
            writer.write(b"x" * 1024)
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(reader.read(4096), 0.5)  # answered early: refused
        return b""
    except ConnectionError:
        return b""
    finally:
        writer.close()


async def test_trickling_uploads_do_not_starve_a_normal_put_through_the_same_gateway(node_factory) -> None:
    """70 uploads trickling through one gateway (from two addresses, 35 each: under the
    per-address cap) held one connection each to both other replicas; the shared pool of 64
    per peer was exhausted and a normal 2 MB PUT waited until it timed out."""
    gateway, *peers = node_factory(3, fsync="never")
    stop = asyncio.Event()
    slow = [asyncio.ensure_future(slow_upload(gateway.address, f"slow-{i}", f"127.0.0.{2 + i % 2}", stop))
            for i in range(70)]  # fmt: skip
    try:
        await asyncio.sleep(0)  # let them connect; then wait until all are streaming to replicas
        wait_until = time.monotonic() + 30
        async with aiohttp.ClientSession() as s:
            while time.monotonic() < wait_until:  # streaming to both replicas: 60+ staged on each
                if all(metric(peer, "p2pstore_staged_uploads") >= 60 for peer in peers):
                    break
                await asyncio.sleep(0.2)
            body = os.urandom(2 * 1000 * 1000)
            started = time.monotonic()
            async with s.put(f"{gateway.url}/files/normal", data=body,
                             timeout=aiohttp.ClientTimeout(total=20)) as r:  # fmt: skip
                assert r.status == 201, await r.text()
                assert len((await r.json())["replicas"]) >= 2
            took = time.monotonic() - started
            print(f"normal 2 MB PUT beside 70 trickling uploads: {took:.2f} s")
            async with s.get(f"{gateway.url}/files/normal") as r:
                assert r.status == 200 and await r.read() == body
        assert took < 10, f"the normal PUT took {took:.1f} s"
    finally:
        stop.set()
        await asyncio.gather(*slow, return_exceptions=True)
    assert "Traceback" not in gateway.log_text()


async def test_one_address_runs_a_bounded_number_of_uploads_others_are_served(node_factory) -> None:
    (node,) = node_factory(1, fsync="never", max_uploads_per_client=4)
    stop = asyncio.Event()
    held = [asyncio.ensure_future(slow_upload(node.address, f"held-{i}", "127.0.0.2", stop))
            for i in range(4)]  # fmt: skip
    try:
        async with aiohttp.ClientSession() as s:

            async def five_uploads_running() -> bool:
                host, port = node.address.split(":")
                reader, writer = await asyncio.open_connection(host, int(port), local_addr=("127.0.0.2", 0))
                try:
                    writer.write(f"PUT /files/fifth HTTP/1.1\r\nHost: {node.address}\r\n"
                                 f"Content-Length: 5\r\n\r\nfifth".encode())  # fmt: skip
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                    length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
                    return head + await asyncio.wait_for(reader.readexactly(length), 10)
                finally:
                    writer.close()

            deadline = time.monotonic() + 20
            while True:  # the four must have started first
                answer = await five_uploads_running()
                if b" 503 " in answer.split(b"\r\n", 1)[0] or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            assert answer.startswith(b"HTTP/1.1 503"), answer[:300]
            assert b"Retry-After: 1" in answer and b"too many uploads in progress" in answer
            async with s.put(f"{node.url}/files/other", data=b"from another address") as r:
                assert r.status == 201, await r.text()  # 127.0.0.1 is not capped by 127.0.0.2's uploads
    finally:
        stop.set()
        await asyncio.gather(*held, return_exceptions=True)
    log = node.log_text()
    assert log.count("refused an upload from 127.0.0.2") == 1, "one line per address a minute"
    assert "Traceback" not in log


async def closed_after(address: str, send: bytes, trickle: bytes, every: float, limit: float) -> float:
    """Seconds until the node closes a connection that sends ``send`` then ``trickle`` byte by
    byte every ``every`` seconds (``limit``: give up)."""
    host, port = address.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    started = time.monotonic()
    try:
        writer.write(send)
        for byte in trickle * 1000:
            if time.monotonic() - started > limit:
                raise AssertionError(f"still open after {limit} s")
            try:
                writer.write(bytes([byte]))
                await writer.drain()
                if await asyncio.wait_for(reader.read(1024), every) == b"":
                    break
            except TimeoutError:
                continue
            except ConnectionError:
                break
        return time.monotonic() - started
    finally:
        writer.close()


async def test_a_trickled_request_head_or_body_is_cut_in_bounded_time(node_factory) -> None:
    (node,) = node_factory(1, fsync="never", header_timeout=2, body_timeout=2, min_body_rate=1024)
    head_start = b"GET /health HTTP/1.1\r\nHost: x\r\n"
    took = await closed_after(node.address, head_start, b"X-Slow: y\r\n", 0.2, 20)
    assert 1.5 < took < 6, f"slow head cut after {took:.1f} s"

    host, port = node.address.split(":")  # a connection that says nothing is a slow head too
    reader, writer = await asyncio.open_connection(host, int(port))
    started = time.monotonic()
    assert await asyncio.wait_for(reader.read(), 10) == b""
    assert 1.5 < time.monotonic() - started < 6
    writer.close()

    put = f"PUT /files/trickled HTTP/1.1\r\nHost: {node.address}\r\nContent-Length: 1000000\r\n\r\n"
    took = await closed_after(node.address, put.encode() + b"x" * 100, b"x", 0.1, 20)
    assert 1.5 < took < 7, f"slow body cut after {took:.1f} s"
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{node.url}/files/trickled") as r:
            assert r.status == 404  # nothing of it was stored
        async with s.put(f"{node.url}/files/fine", data=b"a normal client") as r:
            assert r.status == 201
    wait_for(lambda: "request body at" in node.log_text(), 10)
    log = node.log_text()
    assert "no complete request head in 2 s" in log and "Traceback" not in log


async def test_a_thousand_idle_sockets_leave_the_node_serving(node_factory) -> None:
    (node,) = node_factory(1, fsync="never", header_timeout=3)
    host, port = node.address.split(":")
    conns = [await asyncio.open_connection(host, int(port)) for _ in range(1000)]
    try:
        async with aiohttp.ClientSession() as s:
            for i in range(5):
                async with s.put(f"{node.url}/files/k{i}", data=os.urandom(300_000)) as r:
                    assert r.status == 201, await r.text()
                async with s.get(f"{node.url}/files/k{i}") as r:
                    assert r.status == 200
        # the idle ones are cut once the head timeout passes
        closed = await asyncio.wait_for(asyncio.gather(*(r.read() for r, _ in conns)), 30)
        assert all(c == b"" for c in closed)
    finally:
        for _, w in conns:
            w.close()
    log = node.log_text()
    assert "Too many open files" not in log and "Traceback" not in log


async def test_the_s3_port_refuses_past_the_cap_in_s3_xml(node_factory) -> None:
    """One signed S3 upload trickling from 127.0.0.2 (the cap is 1): the next upload from that
    address gets S3's 503 ServiceUnavailable XML; the native port from another address is served."""
    boto3 = __import__("pytest").importorskip("boto3")
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    key_id, secret = "AKIDP2PSTORESLOW0001", "slow-secret-0123456789abcdef"
    (node,) = node_factory(1, fsync="never", max_uploads_per_client=1, s3=True)
    async with aiohttp.ClientSession() as s:
        new_key = {"access_key_id": key_id, "secret": secret, "name": "admin", "admin": True}
        async with s.post(f"{node.url}/s3/keys", json=new_key) as r:
            assert r.status == 201, await r.text()
    boto3.client("s3", endpoint_url=node.s3_url, aws_access_key_id=key_id, aws_secret_access_key=secret,
                 region_name="us-east-1").create_bucket(Bucket="bucket")  # fmt: skip
    headers = {"Content-Length": str(TRICKLE_SIZE), "x-amz-content-sha256": "UNSIGNED-PAYLOAD"}
    signed = AWSRequest("PUT", f"{node.s3_url}/bucket/held", headers=headers)
    S3SigV4Auth(Credentials(key_id, secret), "s3", "us-east-1").add_auth(signed)
    address = node.s3_url.removeprefix("http://")
    host, port = address.split(":")
    _, writer = await asyncio.open_connection(host, int(port), local_addr=("127.0.0.2", 0))
    try:
        head = "".join(f"{k}: {v}\r\n" for k, v in signed.headers.items())
        writer.write(f"PUT /bucket/held HTTP/1.1\r\nHost: {address}\r\n{head}\r\n".encode() + b"x" * 65536)
        await writer.drain()
        other = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        async with aiohttp.ClientSession(connector=other) as c:
            deadline = time.monotonic() + 20
            while True:
                writer.write(b"x" * 1024)  # the held upload keeps going
                async with c.put(f"{node.s3_url}/bucket/second", data=b"x") as r:
                    status, retry, body = r.status, r.headers.get("Retry-After", ""), await r.text()
                if status == 503 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
        assert status == 503 and retry == "1", (status, body)
        assert "<Code>ServiceUnavailable</Code>" in body and "too many uploads" in body
        async with aiohttp.ClientSession() as s, s.put(f"{node.url}/files/native", data=b"other") as r:
            assert r.status == 201
    finally:
        writer.close()
    assert "Traceback" not in node.log_text()
