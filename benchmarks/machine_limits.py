"""Print this machine's ceilings, measured the same way every time, to compare node figures with.

    python benchmarks/machine_limits.py [--dir DIR] [--write-mib 1024] [--files 1000]
                                        [--parallel-mib 384] [--cache-mib 256] [--no-http]

- sha256 on one core: hashlib over 4 MiB buffers (1 GiB in total).
- page cache: CPU per MiB of writing new data into a file (no fsync), then the same again into
  the pages that deleting the file just freed. On a virtual machine whose host backs memory
  lazily (and takes freed memory back: free page reporting) the first write to each page of
  memory costs a trip to the host: every new MiB a node writes pays it while its page cache
  grows, and R=3 writes every byte three times. Measured first, before the other tests touch
  memory.
- sequential write: 1 GiB in 4 MiB blocks to a temp file in DIR, one fsync at the end; then the
  same with an fsync after every 4 MiB block (what a node does per chunk with fsync=always).
- small durable files: 4 KiB create + write + fsync + rename + directory fsync, 1000 times
  (the per-chunk cost of a small upload).
- 1 MiB durable files from 12 threads at once (three nodes' four I/O threads each), the same
  steps, 384 files: MB/s and the CPU it took per MiB (what R=3 replicas of 1 MiB PUTs need:
  100 MB/s of PUTs is 300 MB/s of these).
- loopback HTTP (optional): an aiohttp server in a child process and an aiohttp client with 16
  connections: 4 KiB GETs per second and one streamed 1 GiB GET in MB/s.

MB means 10**6 bytes. DIR defaults to the system temp dir (where ``bench_http.py --local`` puts
its nodes' data).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import multiprocessing
import os
import random
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

BLOCK = 4 * 1024 * 1024
MB = 1_000_000


def _buffer(size: int = BLOCK, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def sha256_mb_s(total: int = 1 << 30) -> float:
    """hashlib.sha256 throughput on one core over 4 MiB buffers."""
    buf = _buffer()
    digest = hashlib.sha256()
    t0 = time.perf_counter()
    for _ in range(total // BLOCK):
        digest.update(buf)
    digest.hexdigest()
    return total / (time.perf_counter() - t0) / MB


def _write_all(fd: int, buf: bytes) -> None:
    view = memoryview(buf)
    while view:
        view = view[os.write(fd, view) :]


def write_mb_s(directory: Path, total: int, fsync_each: bool) -> float:
    """Sequential write of ``total`` bytes in 4 MiB blocks, fsync at the end (or after each block)."""
    buf = _buffer(seed=2)
    fd, name = tempfile.mkstemp(prefix="machine-limits-", dir=directory)
    try:
        t0 = time.perf_counter()
        for _ in range(total // BLOCK):
            _write_all(fd, buf)
            if fsync_each:
                os.fsync(fd)
        os.fsync(fd)
        elapsed = time.perf_counter() - t0
    finally:
        os.close(fd)
        os.unlink(name)
    return total / elapsed / MB


def page_cache_ms_per_mib(directory: Path, mib: int) -> tuple[float, float]:
    """CPU ms per MiB written into the page cache: into new memory, then into just-freed pages."""
    buf = _buffer(1 << 20, seed=3)
    costs = []
    for _ in range(2):
        fd, name = tempfile.mkstemp(prefix="machine-limits-", dir=directory)
        try:
            t0 = time.thread_time()
            for _ in range(mib):
                _write_all(fd, buf)
            costs.append((time.thread_time() - t0) * 1000 / mib)
        finally:
            os.close(fd)
            os.unlink(name)
    return costs[0], costs[1]


def _durable_files(folder: str, names: Iterable[int], buf: bytes) -> None:
    """Write ``buf`` as a file per name the way a node stores a chunk: create a temp file,
    write, fsync, rename it into place, fsync the directory."""
    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in names:
            tmp_path = os.path.join(folder, f"{i}.tmp")
            fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                _write_all(fd, buf)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp_path, os.path.join(folder, f"{i}.chunk"))
            os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def small_files_per_s(directory: Path, count: int) -> float:
    """4 KiB create + fsync + rename + directory fsync, ``count`` times; returns files/s."""
    buf = _buffer(4096, seed=3)
    with tempfile.TemporaryDirectory(prefix="machine-limits-", dir=directory) as tmp:
        t0 = time.perf_counter()
        _durable_files(tmp, range(count), buf)
        elapsed = time.perf_counter() - t0
    return count / elapsed


def parallel_files(
    directory: Path, writers: int = 12, files: int = 384, size: int = 1 << 20
) -> tuple[float, float]:
    """``files`` files of ``size`` bytes written durably (create, write, fsync, rename,
    directory fsync) by ``writers`` threads at once; returns (MB/s, CPU ms per MiB written)."""
    buf = _buffer(size, seed=4)
    with tempfile.TemporaryDirectory(prefix="machine-limits-", dir=directory) as tmp:
        threads = [
            threading.Thread(target=_durable_files, args=(tmp, range(i, files, writers), buf))
            for i in range(writers)
        ]
        cpu0, t0 = time.process_time(), time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return files * size / elapsed / MB, cpu * 1000 / (files * size / (1 << 20))


# ---- loopback HTTP ceiling ----
def _serve(port: int) -> None:
    """Child process: a minimal aiohttp server (4 KiB GET, 1 GiB streamed GET)."""
    from aiohttp import web

    small = _buffer(4096, seed=4)
    big = _buffer(1 << 20, seed=5)

    async def get_small(_: web.Request) -> web.Response:
        return web.Response(body=small)

    async def get_big(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Length": str(1 << 30)})
        await resp.prepare(request)
        for _ in range(1024):
            await resp.write(big)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/small", get_small)
    app.router.add_get("/big", get_big)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(app, host="127.0.0.1", port=port, print=None, handle_signals=True)


async def _http_client(port: int, seconds: float, concurrency: int) -> tuple[float, float]:
    import aiohttp

    base = f"http://127.0.0.1:{port}"
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(200):  # wait for the server
            try:
                async with session.get(base + "/small") as r:
                    await r.read()
                break
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
        done = 0
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                async with session.get(base + "/small") as r:
                    await r.read()
                done += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        rps = done / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        got = 0
        async with session.get(base + "/big") as r:
            async for piece in r.content.iter_chunked(1 << 20):
                got += len(piece)
        mbs = got / (time.perf_counter() - t0) / MB
    return rps, mbs


def http_ceiling(seconds: float = 5.0, concurrency: int = 16) -> tuple[float, float]:
    """(4 KiB GETs/s, MB/s of one streamed 1 GiB GET) over loopback, server in a child process."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = multiprocessing.get_context("spawn").Process(target=_serve, args=(port,), daemon=True)
    proc.start()
    try:
        try:
            import uvloop

            return uvloop.run(_http_client(port, seconds, concurrency))
        except ImportError:
            return asyncio.run(_http_client(port, seconds, concurrency))
    finally:
        proc.terminate()
        proc.join(5)
        if proc.is_alive():
            proc.kill()


def _timed(label: str, fn: Callable[[], float], unit: str) -> tuple[str, float, str]:
    value = fn()
    print(f"{label:<58} {value:>10.1f} {unit}", flush=True)
    return label, value, unit


def main() -> None:
    """Measure and print each ceiling, then a markdown table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="filesystem to test")
    ap.add_argument("--write-mib", type=int, default=1024, help="MiB written per write test")
    ap.add_argument("--files", type=int, default=1000, help="small durable files to create")
    ap.add_argument("--parallel-mib", type=int, default=384, help="1 MiB files the 12 writers write")
    ap.add_argument("--cache-mib", type=int, default=256, help="MiB written per page-cache test")
    ap.add_argument("--no-http", action="store_true", help="skip the loopback HTTP ceiling")
    args = ap.parse_args()
    total = args.write_mib * 1024 * 1024
    print(f"cores: {os.cpu_count()}  dir: {args.dir}", flush=True)
    first, again = page_cache_ms_per_mib(args.dir, args.cache_mib)
    rows = [
        ("page cache: write new data, CPU per MiB", first, "ms"),
        ("page cache: the same into just-freed pages, CPU per MiB", again, "ms"),
    ]
    for label, value, unit in rows:
        print(f"{label:<58} {value:>10.2f} {unit}", flush=True)
    rows += [
        _timed("sha256, one core, 4 MiB buffers", sha256_mb_s, "MB/s"),
        _timed(f"write {args.write_mib} MiB in 4 MiB blocks, fsync at end",
               lambda: write_mb_s(args.dir, total, False), "MB/s"),
        _timed(f"write {args.write_mib} MiB in 4 MiB blocks, fsync per block",
               lambda: write_mb_s(args.dir, total, True), "MB/s"),
        _timed("4 KiB create+fsync+rename+dir fsync", lambda: small_files_per_s(args.dir, args.files),
               "files/s"),
    ]  # fmt: skip
    mbs, cpu_per_mib = parallel_files(args.dir, files=args.parallel_mib)
    rows.append(("1 MiB create+fsync+rename+dir fsync, 12 writers", mbs, "MB/s"))
    rows.append(("  CPU per MiB written (all writers)", cpu_per_mib, "ms"))
    for label, value, unit in rows[-2:]:
        print(f"{label:<58} {value:>10.2f} {unit}", flush=True)
    if not args.no_http:
        rps, mbs = http_ceiling()
        rows.append(("loopback HTTP, aiohttp, 16 conns, 4 KiB GET", rps, "req/s"))
        rows.append(("loopback HTTP, aiohttp, one streamed 1 GiB GET", mbs, "MB/s"))
        for label, value, unit in rows[-2:]:
            print(f"{label:<58} {value:>10.1f} {unit}")
    print()
    print("| measurement | value |")
    print("| --- | --- |")
    for label, value, unit in rows:
        print(f"| {label} | {value:,.2f} {unit} |" if value < 10 else f"| {label} | {value:,.0f} {unit} |")


if __name__ == "__main__":
    main()
