"""Listing a file's versions: ``GET /files/{key}?versions=1`` on a key with 1,000 kept
versions, on one real node (docs/versions.md).

    python benchmarks/bench_versions.py --versions 1000 --rounds 20

Starts one node (fsync=never: the writes are set-up, not measured), turns
versioning on for the folder ``v``, writes ``--versions`` + 1 small versions of ``v/k`` and
100 other keys, then times the listing ``--rounds`` times each and prints the median and the
slowest. A script that prints figures, not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from p2pstore.launcher import LocalNode, start_all, stop_all  # noqa: E402


def request(url: str, method: str = "GET", body: bytes | None = None) -> bytes:
    with urllib.request.urlopen(urllib.request.Request(url, data=body, method=method), timeout=60) as resp:
        return resp.read()


def timed(fn: Callable[[], object], rounds: int) -> tuple[float, float]:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000, max(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--versions", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="p2pstore-bench-versions-") as tmp:
        (node,) = nodes = LocalNode.cluster(Path(tmp), 1, {"fsync": "never"})
        start_all(nodes)
        try:
            request(f"{node.url}/versioning/v", "PUT", json.dumps({"status": "Enabled"}).encode())
            with ThreadPoolExecutor(8) as pool:  # the other keys first, then the versions in order
                list(pool.map(lambda i: request(f"{node.url}/files/v/other-{i}", "PUT", b"x"), range(100)))
            for i in range(args.versions + 1):
                request(f"{node.url}/files/v/k", "PUT", b"version %d" % i)
            listed = json.loads(request(f"{node.url}/files/v/k?versions=1"))["versions"]
            assert len(listed) == args.versions + 1, len(listed)
            median, worst = timed(lambda: request(f"{node.url}/files/v/k?versions=1"), args.rounds)
            what = f"GET /files/v/k?versions=1, {len(listed)} versions"
            print(f"{what}: median {median:.1f} ms, max {worst:.1f} ms")
        finally:
            stop_all(nodes)


if __name__ == "__main__":
    main()
