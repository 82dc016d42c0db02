"""Re-sync after rejoin: stop one node of three, write data, start it, time until it holds all.

    python benchmarks/bench_resync.py --mib 1024 --file-mib 4

Starts 3 real node processes (fsync=always by default) in a temp dir, kills node 2 with
SIGKILL, writes ``--mib`` MiB as ``--file-mib`` MiB files through nodes 0 and 1 (W=2), starts
node 2 again and polls until it holds a verified copy of every file (its own repair report and
``?local=1`` reads of a sample). Prints seconds and MB/s. A script that prints figures, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.support.processes import start_nodes, wait_for  # noqa: E402

MiB = 1024 * 1024


def body(i: int, size: int) -> bytes:
    stamp = i.to_bytes(8, "big")
    return (stamp * (size // 8 + 1))[:size]


def verified_on(node, node_id: str) -> int:
    count, after = 0, ""
    while True:
        page = node.get_json(f"/files?prefix=resync/&long=1&limit=1000&after={after}", timeout=60)
        count += sum(
            any(r["node"] == node_id and r["verified"] for r in f["replicas"]) for f in page["files"]
        )
        if not page["next"]:
            return count
        after = page["next"]


async def write_all(urls: list[str], files: int, size: int, concurrency: int) -> None:
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as s:

        async def put(i: int) -> None:
            async with sem, s.put(f"{urls[i % len(urls)]}/files/resync/{i:06d}", data=body(i, size)) as r:
                if r.status != 201:
                    raise SystemExit(f"PUT failed: {r.status} {await r.text()}")

        await asyncio.gather(*(put(i) for i in range(files)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mib", type=int, default=1024, help="total MiB written while the node is down")
    ap.add_argument("--file-mib", type=int, default=4, help="size of each file in MiB")
    ap.add_argument("--fsync", default="always", choices=["always", "batch", "never"])
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("-v", "--verbose", action="store_true", help="print the rejoined node's log tail")
    args = ap.parse_args()
    files = max(1, args.mib // args.file_mib)
    size = args.file_mib * MiB
    with tempfile.TemporaryDirectory(prefix="p2pstore-resync-") as tmp:
        nodes = start_nodes(Path(tmp), 3, fsync=args.fsync, gossip_interval=0.5)
        try:
            wait_for(lambda: all(len(n.get_json("/status")["members"]) == 3 for n in nodes), 30)
            down = nodes[2]
            down_id = down.health()["node_id"]
            down.kill()
            t0 = time.monotonic()
            asyncio.run(write_all([nodes[0].url, nodes[1].url], files, size, args.concurrency))
            wrote = time.monotonic() - t0
            print(f"wrote {files} x {args.file_mib} MiB = {files * size / 1e6:.0f} MB in {wrote:.1f}s "
                  f"with node 2 down ({files * size / 1e6 / wrote:.1f} MB/s)")  # fmt: skip
            t1 = time.monotonic()
            down.start()
            down.wait_ready(60)
            ready = time.monotonic() - t1
            wait_for(lambda: verified_on(down, down_id) == files, 3600, interval=0.5, message="re-sync")
            took = time.monotonic() - t1
            status = down.get_json("/status")["repair"]
            print(f"node 2 ready after {ready:.1f}s; holds all {files} files after {took:.1f}s")
            mb = files * size / 1e6
            print(f"re-sync: {mb:.0f} MB in {took:.1f}s = {mb / took:.1f} MB/s "
                  f"(repair copied {status['bytes_copied'] / 1e6:.0f} MB)")  # fmt: skip
            if "-v" in sys.argv[1:] or "--verbose" in sys.argv[1:]:
                print(down.log_tail(20))
        finally:
            for n in nodes:
                n.terminate()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
