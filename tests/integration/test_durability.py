"""Crash, corruption and restore: what one node promises about its disk."""

from __future__ import annotations

import asyncio
import hashlib
import random
import socket
import sqlite3

import aiohttp
import pytest

from tests.support.chunks import flip_byte, stored_chunks
from tests.support.http import generated_body, generated_sha256
from tests.support.processes import NodeProcess, metric, wait_for

MiB = 1 << 20


async def put(s: aiohttp.ClientSession, node: NodeProcess, key: str, data) -> dict:
    async with s.put(f"{node.url}/files/{key}", data=data) as r:
        assert r.status == 201, await r.text()
        return await r.json()


async def test_kill9_during_large_upload_leaves_nothing_half_written(node_factory) -> None:
    (node,) = node_factory(1)  # fsync=always, the default
    async with aiohttp.ClientSession() as s:
        await put(s, node, "before", b"committed before the crash")
    total = 200 * MiB
    sock = socket.create_connection((node.host, node.port))
    sock.sendall(f"PUT /files/big HTTP/1.1\r\nHost: x\r\nContent-Length: {total}\r\n\r\n".encode())
    block = b"q" * MiB
    for _ in range(60):  # 60 MiB of 200: well into the upload, chunks already on disk
        sock.sendall(block)
    wait_for(lambda: any((node.data_dir / "tmp").rglob("*")), 10, message="upload staged")
    node.kill()
    sock.close()
    node.start()
    node.wait_ready()
    assert not any((node.data_dir / "tmp").iterdir()), "temp files must be cleaned at start"
    conn = sqlite3.connect(node.data_dir / "meta.sqlite")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{node.url}/files/big") as r:
            assert r.status == 404
        async with s.get(f"{node.url}/files/before") as r:
            assert await r.read() == b"committed before the crash"


async def test_acknowledged_small_writes_survive_kill9(node_factory) -> None:
    """Group commit: concurrent small writes share an fsync, and every acknowledged one is kept."""
    (node,) = node_factory(1)  # fsync=always
    bodies = {f"small/{i}": hashlib.sha256(b"%d" % i).digest() * (i + 1) for i in range(64)}
    async with aiohttp.ClientSession() as s:
        results = await asyncio.gather(*(put(s, node, k, v) for k, v in bodies.items()))
    assert all(r["size"] == len(bodies[r["key"]]) for r in results)
    node.kill()
    node.start()
    node.wait_ready()
    async with aiohttp.ClientSession() as s:
        for key, body in bodies.items():
            async with s.get(f"{node.url}/files/{key}") as r:
                assert r.status == 200 and await r.read() == body


async def test_acknowledged_whole_writes_survive_kill9_and_a_lost_segment_index(node_factory) -> None:
    """Bodies sent whole (64 KiB-1 MiB, with their length) are records appended to one segment
    file with a shared fdatasync: every acknowledged one is read back after kill -9, and again
    after the segment index is deleted (the segment files are the truth: start-up indexes them
    again)."""
    (node,) = node_factory(1)  # fsync=always
    rng = random.Random(3)
    bodies = {f"whole/{i}": rng.randbytes(rng.randint(70_000, MiB)) for i in range(24)}
    async with aiohttp.ClientSession() as s:
        await asyncio.gather(*(put(s, node, k, v) for k, v in bodies.items()))
    shas = {hashlib.sha256(v).hexdigest() for v in bodies.values()}
    stored = stored_chunks(node.data_dir)
    assert shas <= stored.keys() and all(stored[sha].in_segment for sha in shas)

    async def all_read_back() -> None:
        async with aiohttp.ClientSession() as s:
            for key, body in bodies.items():
                async with s.get(f"{node.url}/files/{key}") as r:
                    assert r.status == 200 and await r.read() == body, key

    node.kill()
    node.start()
    node.wait_ready()
    await all_read_back()
    node.terminate()
    for index in (node.data_dir / "segments").glob("index.sqlite3*"):
        index.unlink()
    node.start()
    node.wait_ready()
    assert shas <= stored_chunks(node.data_dir).keys()  # indexed again from the segment files
    assert "chunk records again" in node.log_text()
    await all_read_back()


async def test_flipped_byte_is_never_served(node_factory) -> None:
    (node,) = node_factory(1, fsync="never", chunk_size=64 * 1024)
    size = 256 * 1024  # 4 chunks
    async with aiohttp.ClientSession() as s:
        await put(s, node, "first", generated_body(size, seed=1))
        await put(s, node, "later", generated_body(size, seed=2))
        async with s.get(f"{node.url}/files/first") as r:
            good_first = await r.read()
        async with s.get(f"{node.url}/files/later") as r:
            good_later = await r.read()

    def flip(data: bytes, offset: int) -> None:
        sha = hashlib.sha256(data[offset : offset + 64 * 1024]).hexdigest()
        flip_byte(node.data_dir, sha, at=100)  # in its chunk file or its segment record

    flip(good_first, 0)  # first chunk: detected before any byte is sent -> JSON error
    flip(good_later, 128 * 1024)  # third chunk: detected mid-stream -> connection cut short
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{node.url}/files/first") as r:
            assert r.status >= 500
            assert "corrupt" in (await r.json())["error"]
        with pytest.raises(aiohttp.ClientPayloadError):
            async with s.get(f"{node.url}/files/later") as r:
                assert r.status == 200
                await r.read()
        async with s.get(f"{node.url}/status") as r:
            assert (await r.json())["storage"]["corrupt_chunks_found"] >= 2


async def test_checkpoint_then_lost_database_is_restored(node_factory) -> None:
    (node,) = node_factory(1)
    async with aiohttp.ClientSession() as s:
        for i in range(20):
            await put(s, node, f"cp/{i}", generated_body(10_000 + i, seed=i))
        async with s.post(f"{node.url}/checkpoint") as r:
            result = await r.json()
            assert r.status == 200 and result["results"][0]["ok"], result
    node.terminate()
    for name in ("meta.sqlite", "meta.sqlite-wal", "meta.sqlite-shm"):
        (node.data_dir / name).unlink(missing_ok=True)
    node.start()
    node.wait_ready()
    assert "restored" in node.log_text()
    async with aiohttp.ClientSession() as s:
        for i in range(20):
            async with s.get(f"{node.url}/files/cp/{i}") as r:
                assert r.status == 200
                assert hashlib.sha256(await r.read()).hexdigest() == generated_sha256(10_000 + i, seed=i)
        async with s.get(f"{node.url}/status") as r:
            assert (await r.json())["storage"]["restored_from_checkpoint"]


async def test_corrupt_database_is_detected_and_restored(node_factory) -> None:
    (node,) = node_factory(1)
    async with aiohttp.ClientSession() as s:
        await put(s, node, "keep", b"precious")
        async with s.post(f"{node.url}/checkpoint") as r:
            assert r.status == 200
    node.terminate()
    db = node.data_dir / "meta.sqlite"
    db.write_bytes(b"this is not a database" * 100)
    node.start()
    node.wait_ready()
    assert "corrupt" in node.log_text()
    async with aiohttp.ClientSession() as s, s.get(f"{node.url}/files/keep") as r:
        assert await r.read() == b"precious"


def test_restore_command_picks_a_checkpoint(node_factory) -> None:
    from tests.support.processes import run_cli

    (node,) = node_factory(1)
    node.get_json("/status")
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{node.url}/files/a", data=b"1", method="PUT"))
    urllib.request.urlopen(urllib.request.Request(f"{node.url}/checkpoint", data=b"", method="POST"))
    urllib.request.urlopen(urllib.request.Request(f"{node.url}/files/b", data=b"2", method="PUT"))
    node.terminate()
    done = run_cli("node", "restore", "--data-dir", str(node.data_dir))
    assert done.returncode == 0, done.stderr
    node.start()
    node.wait_ready()
    assert node.get_json("/files?prefix=")["files"][0]["key"] == "a"
    assert [f["key"] for f in node.get_json("/files")["files"]] == ["a"]
    bad = run_cli("node", "restore", "--data-dir", str(node.data_dir), "--checkpoint", "nope")
    assert bad.returncode != 0 and b"Traceback" not in bad.stderr


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


async def test_memory_stays_bounded_for_large_files(node_factory) -> None:
    (node,) = node_factory(1, fsync="never")
    size = 300 * MiB
    async with aiohttp.ClientSession() as s:
        await put(s, node, "huge", generated_body(size, seed=7))
        digest = hashlib.sha256()
        async with s.get(f"{node.url}/files/huge") as r:
            async for piece in r.content.iter_chunked(MiB):
                digest.update(piece)
    assert digest.hexdigest() == generated_sha256(size, seed=7)
    assert peak_rss_mib(node.proc.pid) < 150


def rss_kib(pid: int, field: str) -> int:
    """A ``kB`` line of /proc/<pid>/status: VmRSS (now) or VmHWM (peak since start or reset)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field}")


def unique_piece(seed: int, i: int, block: bytes) -> bytes:
    """1 MiB piece ``i`` of file ``seed``: stamped, so no two chunks are equal (no dedup)."""
    return f"{seed:08x}{i:08x}".encode() + block[16:]


async def unique_body(size: int, seed: int):
    block = random.Random(seed).randbytes(MiB)
    for i in range(size // MiB):
        yield unique_piece(seed, i, block)


def unique_sha256(size: int, seed: int) -> str:
    block, digest = random.Random(seed).randbytes(MiB), hashlib.sha256()
    for i in range(size // MiB):
        digest.update(unique_piece(seed, i, block))
    return digest.hexdigest()


async def test_concurrent_large_transfers_through_one_node_keep_its_memory_bounded(node_factory) -> None:
    """Four 32 MiB PUTs at once, then eight 32 MiB GETs at once, all through node 0: its peak
    resident set grows by a bounded amount, not by a chunk buffer or two per transfer (the
    node-wide read budget, 1 MiB read pieces and glibc's arenas kept few: server.tune_malloc).
    Before those, the same GETs grew it by ~110 MiB."""
    nodes = node_factory(3, fsync="never")
    gateway = nodes[0]
    size, files, readers = 32 * MiB, 4, 8
    async with aiohttp.ClientSession() as s:
        await put(s, gateway, "warm", unique_body(4 * MiB, seed=99))  # first-use allocations
        async with s.get(f"{gateway.url}/files/warm") as r:
            assert r.status == 200 and len(await r.read()) == 4 * MiB
        ready_kib = rss_kib(gateway.proc.pid, "VmRSS")
        with open(f"/proc/{gateway.proc.pid}/clear_refs", "w") as fh:
            fh.write("5")  # VmHWM now measures from here
        await asyncio.gather(*(put(s, gateway, f"big{i}", unique_body(size, seed=i)) for i in range(files)))
        put_peak = rss_kib(gateway.proc.pid, "VmHWM")

        async def get(i: int) -> str:
            digest = hashlib.sha256()
            async with s.get(f"{gateway.url}/files/big{i % files}") as r:
                assert r.status == 200
                async for piece in r.content.iter_chunked(MiB):
                    digest.update(piece)
            return digest.hexdigest()

        before_gets = rss_kib(gateway.proc.pid, "VmRSS")
        with open(f"/proc/{gateway.proc.pid}/clear_refs", "w") as fh:
            fh.write("5")
        got = await asyncio.gather(*(get(i) for i in range(readers)))
        get_peak = rss_kib(gateway.proc.pid, "VmHWM")
    assert got == [unique_sha256(size, i % files) for i in range(readers)]

    def buffers_returned() -> dict | None:
        buffers = gateway.get_json("/status")["replication"]["read_buffers"]
        return buffers if buffers["held"] == 0 else None

    budget = wait_for(buffers_returned, 10, message="every read buffer given back")
    assert 0 < budget["peak"] <= budget["limit"] and budget["overdrafts"] == 0, budget
    assert metric(gateway, "p2pstore_read_buffer_bytes") == 0
    grown = {"put": (put_peak - ready_kib) / 1024, "get": (get_peak - before_gets) / 1024}
    print(f"gateway RSS {ready_kib / 1024:.1f} MiB when warm, {before_gets / 1024:.1f} before the GETs; "
          f"peak growth {grown} MiB")
    assert grown["get"] < 48, grown  # 32 MiB of read buffers (the budget) plus their slack
    assert grown["put"] < 64, grown
