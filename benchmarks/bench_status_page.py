"""The status page's requests against a cluster holding 100,000 files: does the page stay fast?

    python benchmarks/bench_status_page.py              # 100,000 files, 3 nodes
    python benchmarks/bench_status_page.py --files 10000

Pre-fills one metadata database through MetadataDB.apply_batch (bench_scale.py's fill: keys
``scale/0000000`` ..., all in one folder) and copies it into 3 nodes' data dirs, starts them
(fsync never), waits for their first repair pass, then times each request the page makes
(``--rounds`` times, sequentially, one keep-alive client): the per-second ``/status``, the
2-second ``/status/cluster`` (asks both peers) and folder pages (``/files?delimiter=/`` with
``long=1``: each file's replica report). Prints the median and 95th percentile in ms and the
answer's size. A script that prints figures, not a test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_scale import build_db, first_repair_pass_done, wait

from p2pstore.launcher import LocalNode, start_all
from p2pstore.storage.checkpoint import DB_NAME


def timed(url: str, rounds: int) -> tuple[float, float, int]:
    """Median and p95 milliseconds of ``rounds`` GETs of ``url``, and the answer's bytes."""
    times: list[float] = []
    size = 0
    for _ in range(rounds):
        t0 = time.perf_counter()
        with urllib.request.urlopen(url, timeout=60) as resp:
            size = len(resp.read())
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))], size


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="p2pstore-page-") as tmp:
        parent = Path(tmp)
        template = parent / "template.db"
        took = build_db(template, args.files, 64)
        print(f"pre-filled {args.files} files in {took:.1f}s", flush=True)
        nodes = LocalNode.cluster(parent, 3, {"fsync": "never", "gossip_interval": 0.5})
        for node in nodes:
            node.data_dir.mkdir(parents=True, exist_ok=True)
            (node.data_dir / DB_NAME).write_bytes(template.read_bytes())
        try:
            start_all(nodes, timeout=300)
            wait(lambda: all(first_repair_pass_done(n) for n in nodes), 600, "the first repair pass")
            wait(lambda: all(s["ok"] for s in nodes[0].get_json("/status/cluster")["nodes"]), 60, "summaries")
            url = nodes[0].url
            mid = urllib.parse.quote(f"scale/{args.files // 2:07d}")
            folder = "/files?delimiter=/&prefix=scale/&limit=50&long=1"
            requests = [
                ("GET /status", "/status"),
                ("GET /status/cluster", "/status/cluster"),
                ("GET /status/series", "/status/series"),
                ("root folder (1 sub-folder of N files)", "/files?delimiter=/&limit=50&long=1"),
                ("folder scale/, first 50, long=1", folder),
                ("folder scale/, 50 from the middle", f"{folder}&after={mid}"),
                ("search scale/00999, flat", "/files?prefix=scale/00999&limit=50&long=1"),
            ]  # fmt: skip
            print(f"\n{args.files} files on 3 nodes; {args.rounds} sequential requests each, one client\n")
            print(f"{'request':44} {'median ms':>10} {'p95 ms':>8} {'bytes':>8}")
            for label, path in requests:
                med, p95, size = timed(url + path, args.rounds)
                print(f"{label:44} {med:10.1f} {p95:8.1f} {size:8d}", flush=True)
        finally:
            for node in nodes:
                node.terminate()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
