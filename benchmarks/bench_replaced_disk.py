"""A replaced disk: wipe one node's data dir, start it again, time until it holds everything.

    python benchmarks/bench_replaced_disk.py --mib 1024 --file-mib 8

Starts 3 real node processes (R=3, fsync=always by default) in a temp dir, writes ``--mib`` MiB
as ``--file-mib`` MiB files, kills node 2 with SIGKILL, deletes its data dir and starts it at
the same address: it takes its old id (core/identity.py) and repair refills every file. Polls
until it holds a verified copy of each and prints seconds and MB/s (from the restart, so the
figure includes start-up and the manifest sync). A script that prints figures, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.bench_resync import MiB, verified_on, write_all  # noqa: E402
from tests.support.processes import start_nodes, wait_for  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mib", type=int, default=1024, help="total MiB stored before the disk is replaced")
    ap.add_argument("--file-mib", type=int, default=8, help="size of each file in MiB")
    ap.add_argument("--fsync", default="always", choices=["always", "batch", "never"])
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    files = max(1, args.mib // args.file_mib)
    size = args.file_mib * MiB
    with tempfile.TemporaryDirectory(prefix="p2pstore-replaced-") as tmp:
        nodes = start_nodes(Path(tmp), 3, fsync=args.fsync, gossip_interval=0.5)
        try:
            wait_for(lambda: all(len(n.get_json("/status")["members"]) == 3 for n in nodes), 30)
            asyncio.run(write_all([nodes[0].url, nodes[1].url], files, size, args.concurrency))
            wiped = nodes[2]
            old_id = wiped.health()["node_id"]
            wait_for(lambda: verified_on(nodes[0], old_id) == files, 600, interval=0.5, message="writes")
            wiped.kill()
            shutil.rmtree(wiped.data_dir)
            t0 = time.monotonic()
            wiped.start()
            new_id = wiped.wait_ready(60)["node_id"]
            ready = time.monotonic() - t0
            if new_id != old_id:
                raise SystemExit(f"the wiped node came back as {new_id}, not {old_id}")
            wait_for(lambda: verified_on(wiped, old_id) == files, 3600, interval=0.25, message="refill")
            took = time.monotonic() - t0
            mb = files * size / 1e6
            copied = wiped.get_json("/status")["repair"]["bytes_copied"] / 1e6
            print(f"wiped node back as {old_id} after {ready:.1f}s; holds all {files} files "
                  f"after {took:.1f}s")
            print(f"refill: {mb:.0f} MB in {took:.1f}s = {mb / took:.1f} MB/s "
                  f"(repair copied {copied:.0f} MB)")
        finally:
            for n in nodes:
                n.terminate()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
