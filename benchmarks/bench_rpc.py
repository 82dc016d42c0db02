"""CPU per node-to-node call: the version lookup every read makes, on the real transport.

    python benchmarks/bench_rpc.py --calls 20000 --concurrency 8 --rounds 3

Starts one real node process (fsync=never: no disk in the way) and calls its ``entries``
method (one key per call, as a read's quorum lookup does) through ``p2pstore``'s own
``Transport`` from this process, ``--concurrency`` calls in flight. Prints calls/s and the CPU
microseconds per call of the node (``/proc/<pid>/stat``) and of the caller (``getrusage``):
the figure that decides how much a quorum read costs over a local one. A script that prints
figures, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from p2pstore.bench.runner import run_loop  # noqa: E402
from p2pstore.cluster.transport import Transport  # noqa: E402
from p2pstore.launcher import LocalNode, start_all  # noqa: E402


def node_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(address: str, secret: str, pid: int, calls: int, concurrency: int, rounds: int) -> None:
    transport = Transport(secret)
    try:
        await transport.call(address, "/entries", {"keys": ["warm-up"]})
        for _ in range(rounds):
            todo = iter(range(calls))

            async def caller(todo: Iterator[int] = todo) -> None:
                for i in todo:
                    await transport.call(address, "/entries", {"keys": [f"key-{i % 100}"]})

            node0, own0, t0 = node_cpu_seconds(pid), own_cpu_seconds(), time.perf_counter()
            await asyncio.gather(*(caller() for _ in range(concurrency)))
            seconds = time.perf_counter() - t0
            node_us = (node_cpu_seconds(pid) - node0) / calls * 1e6
            own_us = (own_cpu_seconds() - own0) / calls * 1e6
            print(
                f"{calls / seconds:8.0f} calls/s   cpu per call: node {node_us:5.0f} µs, "
                f"caller {own_us:5.0f} µs, total {node_us + own_us:5.0f} µs",
                flush=True,
            )
    finally:
        await transport.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=20_000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        (node,) = LocalNode.cluster(Path(tmp), 1, {"fsync": "never", "replicas": 1, "write_quorum": 1})
        start_all([node])
        try:
            secret = node.args[node.args.index("--cluster-secret") + 1]
            print(f"node {node.url} (pid {node.pid}); {args.concurrency} calls in flight")
            address = f"127.0.0.1:{node.port}"
            run_loop(measure(address, secret, node.pid, args.calls, args.concurrency, args.rounds))
        finally:
            node.terminate()


if __name__ == "__main__":
    main()
