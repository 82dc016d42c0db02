"""Peak memory of nodes under concurrent large transfers through one gateway.

    python benchmarks/bench_memory.py                          # 3 nodes, 4 PUTs, 8 PUTs, 4 GETs of 64 MiB
    python benchmarks/bench_memory.py --puts 4,8 --gets 4,8 --mib 64 --rounds 2
    python benchmarks/bench_memory.py --nodes 4                # gateway is not always a replica

Starts ``--nodes`` real node processes with every default setting (R=3, W=2, fsync=always),
then, for each phase, sends that many concurrent requests of ``--mib`` MiB to node 0 only
(the gateway) and prints every node's peak resident set (VmHWM, reset before each phase through
``/proc/<pid>/clear_refs``), its resident set at the end of the phase, the phase's MB/s and
the nodes' CPU per request. Every downloaded byte is verified against what was sent. The
last line is the peak over the whole run. A node's /proc/<pid>/smaps_rollup (anonymous memory
against file-backed) is printed for the gateway after the last phase.

A script that prints figures, not a test. MB means 10**6 bytes, MiB 2**20.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from p2pstore.bench.runner import Content, cpu_seconds, get_one, make_session, put_one, run_loop
from p2pstore.launcher import LocalNode, start_all, stop_all

MiB = 1 << 20
MB = 1_000_000


def status_kib(pid: int, field: str) -> int | None:
    """A ``kB`` line of /proc/<pid>/status (VmHWM, VmRSS), or None when unreadable."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak(pid: int) -> None:
    """Start a new VmHWM measurement for ``pid`` (Linux: write 5 to clear_refs)."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def rollup(pid: int) -> dict[str, int]:
    """/proc/<pid>/smaps_rollup's kB fields (Rss, Anonymous, Private_Dirty, ...)."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1])
    return out


async def phase(op: str, count: int, nodes: list[LocalNode], content: Content, keys: list[str],
                digests: list, token: str | None) -> tuple[float, list[str]]:  # fmt: skip
    """``count`` concurrent PUTs or GETs through node 0; (seconds, error messages)."""
    url = nodes[0].url
    async with make_session(count) as session:
        t0 = time.perf_counter()
        if op == "put":
            jobs = [put_one(session, url, k, content, i, digests[i].sha256, token)
                    for i, k in enumerate(keys)]
        else:
            jobs = [get_one(session, url, k, content.size, digests[i], token) for i, k in enumerate(keys)]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        seconds = time.perf_counter() - t0
    errors = [str(r) for r in results if r is not None]
    return seconds, errors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--mib", type=int, default=64, help="size of each object")
    ap.add_argument("--puts", default="4,8", help="concurrent PUT phases, e.g. 4,8")
    ap.add_argument("--gets", default="4", help="concurrent GET phases, e.g. 4,8")
    ap.add_argument("--rounds", type=int, default=1, help="run the phases this many times")
    ap.add_argument("--limit-mib", type=float, default=150.0, help="exit 1 when a node's peak is above")
    ap.add_argument("--keep", action="store_true", help="keep the nodes' data dirs")
    args = ap.parse_args()
    puts = [int(x) for x in args.puts.split(",") if x]
    gets = [int(x) for x in args.gets.split(",") if x]
    most = max([*puts, *gets, 1])
    content = Content(args.mib * MiB, seed=7)
    print(f"computing digests of {most} objects of {args.mib} MiB ...", flush=True)
    digests = [content.digests(i) for i in range(most)]
    tmp = Path(tempfile.mkdtemp(prefix="p2pstore-bench-mem-"))
    nodes = LocalNode.cluster(tmp, args.nodes)
    load = os.getloadavg()
    print(f"{args.nodes} nodes, defaults (R=3, W=2, fsync=always); load average {load[0]:.2f} {load[1]:.2f} "
          f"{load[2]:.2f}; every request through {nodes[0].url}", flush=True)  # fmt: skip
    worst = 0.0
    failed = 0
    try:
        start_all(nodes, timeout=60.0, converged=True)
        pids = [n.pid for n in nodes if n.pid is not None]
        base = [status_kib(p, "VmRSS") or 0 for p in pids]
        print("RSS when ready: " + ", ".join(f"{kb / 1024:.1f}" for kb in base) + " MiB")
        print(f"{'phase':<14} {'MB/s':>8} {'cpu ms/op':>10}  "
              "peak RSS (VmHWM) per node, MiB (gateway first) | RSS after")
        stored, keys = 0, []
        for _ in range(args.rounds):
            plan = [("put", n) for n in puts] + [("get", n) for n in gets]
            for op, count in plan:
                if op == "get" and stored < count:  # objects to read: written first
                    keys = [f"mem/{uuid.uuid4().hex[:8]}/{i}" for i in range(count)]
                    run_loop(phase("put", count, nodes, content, keys, digests, None))
                    stored = count
                if op == "put":
                    keys = [f"mem/{uuid.uuid4().hex[:8]}/{i}" for i in range(count)]
                    stored = count
                for p in pids:
                    reset_peak(p)
                cpu0 = [cpu_seconds(p) or 0.0 for p in pids]
                seconds, errors = run_loop(phase(op, count, nodes, content, keys, digests, None))
                cpu = sum((cpu_seconds(p) or 0.0) - c for p, c in zip(pids, cpu0, strict=True))
                peaks = [(status_kib(p, "VmHWM") or 0) / 1024 for p in pids]
                now = [(status_kib(p, "VmRSS") or 0) / 1024 for p in pids]
                worst = max(worst, *peaks)
                failed += len(errors)
                mbps = count * content.size / seconds / MB
                label = f"{op.upper()} {count}x{args.mib}MiB"
                print(f"{label:<14} {mbps:8.0f} {cpu * 1000 / count:10.0f}  "
                      + ", ".join(f"{v:.1f}" for v in peaks) + " | " + ", ".join(f"{v:.1f}" for v in now),
                      flush=True)  # fmt: skip
                for e in errors[:3]:
                    print(f"  ERROR {e}")
        r = rollup(pids[0])
        fields = ("Rss", "Anonymous", "Private_Dirty", "Shared_Clean")
        print("gateway smaps_rollup (MiB): " + ", ".join(f"{k} {r[k] / 1024:.1f}" for k in fields if k in r))
        verdict = "OK" if worst <= args.limit_mib else "OVER LIMIT"
        print(f"highest peak RSS of any node in any phase: {worst:.1f} MiB "
              f"(limit {args.limit_mib:g}): {verdict}")
    finally:
        stop_all(nodes)
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed or worst > args.limit_mib else 0


if __name__ == "__main__":
    sys.exit(main())
