"""How many keys a join or a leave moves under rendezvous placement (core/placement.py).

    python benchmarks/placement_movement.py --keys 1000000 --sizes 100
    python benchmarks/placement_movement.py --keys 100000 --sizes 1000 2000

For each key the R+1 best-ranked of N nodes are computed once with placement.replicas (the
production function); a join of a new node moves the key iff the newcomer's score beats the R-th
replica's, a leave of one node moves it iff that node was among its R replicas. Prints the moved
fraction next to R/(N+1) and R/N, and the cost of placing one key at N nodes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from p2pstore.core.placement import replicas, score


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100])
    ap.add_argument("-r", type=int, default=3)
    args = ap.parse_args()
    r = args.r
    print("| N | keys | join moves | R/(N+1) | leave moves | R/N | ms to place a key |")
    print("|---|---|---|---|---|---|---|")
    for n in args.sizes:
        nodes = [f"n{i:011x}" for i in range(n)]
        newcomer, leaver = "nnewcomer000", nodes[n // 2]
        joined = left = 0
        t0 = time.perf_counter()
        for i in range(args.keys):
            key = f"bucket/dir{i % 997}/file-{i}.bin"
            top = replicas(key, nodes, r + 1)
            reps = top[:r]
            joined += score(key, newcomer) > score(key, reps[-1])
            left += leaver in reps
        per_key = (time.perf_counter() - t0) / args.keys * 1e3
        print(f"| {n} | {args.keys:,} | {joined / args.keys:.4%} | {r / (n + 1):.4%} "
              f"| {left / args.keys:.4%} | {r / n:.4%} | {per_key:.3f} |", flush=True)


if __name__ == "__main__":
    main()
