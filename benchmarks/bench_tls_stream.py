"""What TLS costs one streamed upload between two nodes, apart from everything else a PUT does.

    python benchmarks/bench_tls_stream.py --mib 512 --rounds 3

A server process (aiohttp on uvloop, like a node: the body read in 256 KiB pieces) and this
process as the client (an aiohttp PUT of a chunked body of 256 KiB pieces, like a gateway's
stream to a replica), in plain HTTP and over mutual TLS with certificates from
``p2pstore cluster certs``, alternated. Prints the CPU seconds per GiB of each side.
``--streams N`` sends N uploads at once on the session, as a gateway feeds several replicas.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PIECE = 256 * 1024


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def serve(port: int, certs: str) -> None:
    from aiohttp import web

    from p2pstore.cluster.tls import server_context

    async def put(request: web.Request) -> web.Response:
        n = 0
        async for piece in request.content.iter_chunked(PIECE):
            n += len(piece)
        return web.Response(text=f"{n} {cpu()}")

    app = web.Application()
    app.router.add_put("/x", put)
    runner = web.AppRunner(app, access_log=None, read_bufsize=1 << 20)
    await runner.setup()
    ctx = server_context(f"{certs}/ca.pem", f"{certs}/node0.pem", f"{certs}/node0-key.pem") if certs else None
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ctx).start()
    await asyncio.Event().wait()


async def upload(port: int, certs: str, mib: int, streams: int = 1) -> tuple[float, float, float]:
    """(seconds, client CPU, server CPU) for ``streams`` concurrent uploads of ``mib`` MiB each."""
    import aiohttp

    from p2pstore.cluster.tls import client_context

    ctx = client_context(f"{certs}/ca.pem", f"{certs}/node1.pem", f"{certs}/node1-key.pem") if certs else None
    piece = os.urandom(PIECE)

    async def body():  # type: ignore[no-untyped-def]
        for _ in range(mib * 1024 * 1024 // PIECE):
            yield piece

    url = f"{'https' if ctx else 'http'}://127.0.0.1:{port}/x"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx or True)) as s:
        for _ in range(50):  # the server is starting
            try:
                async with s.put(url, data=b"warm") as r:
                    server0 = float((await r.text()).split()[1])
                break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.1)
        c0, t0 = cpu(), time.monotonic()

        async def one() -> float:
            async with s.put(url, data=body()) as r:
                return float((await r.text()).split()[1])

        server1 = max(await asyncio.gather(*(one() for _ in range(streams))))  # the last to finish
        return time.monotonic() - t0, cpu() - c0, server1 - server0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--streams", type=int, default=1, help="concurrent uploads (a gateway's fan-out)")
    ap.add_argument("--serve", nargs=2, metavar=("PORT", "CERTS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    import uvloop

    uvloop.install()
    if args.serve:
        asyncio.run(serve(int(args.serve[0]), args.serve[1] if args.serve[1] != "-" else ""))
        return
    from p2pstore.cluster.tls import make_cluster_certs
    from p2pstore.launcher import free_port

    with tempfile.TemporaryDirectory() as tmp:
        certs = str(Path(tmp) / "certs")
        make_cluster_certs(Path(certs), 2)
        gib = args.mib * args.streams / 1024
        print("| mode | seconds | client CPU s/GiB | server CPU s/GiB |\n| --- | --- | --- | --- |")
        for _ in range(args.rounds):
            for mode, folder in (("plain", "-"), ("mutual TLS", certs)):
                port = free_port()
                server = subprocess.Popen([sys.executable, __file__, "--serve", str(port), folder])
                try:
                    took, client, srv = asyncio.run(
                        upload(port, "" if folder == "-" else folder, args.mib, args.streams)
                    )
                finally:
                    server.terminate()
                    server.wait(10)
                print(f"| {mode} | {took:.2f} | {client / gib:.2f} | {srv / gib:.2f} |")


if __name__ == "__main__":
    main()
