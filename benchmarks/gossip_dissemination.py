"""Print the gossip dissemination curve of the membership core in the deterministic simulator.

One node bumps its incarnation in an idle, fully joined cluster; we record, per node, how many
probe periods pass until it has seen the update. Usage:

    python benchmarks/gossip_dissemination.py [--sizes 10 50 100 500] [--seeds 3]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.simnet import measure_dissemination


def quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile of sorted values."""
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def main() -> None:
    """Run the sweep and print a markdown table (periods of probe_interval)."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 50, 100, 500])
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    print("| N | log2 N | 50 % reached | 90 % reached | 99 % reached | 100 % reached (worst seed)"
          " | worst / log2 N |")
    print("|---|---|---|---|---|---|---|")
    for n in args.sizes:
        t0 = time.perf_counter()
        runs = [measure_dissemination(n, seed) for seed in range(args.seeds)]
        mean = {q: sum(quantile(r, q) for r in runs) / len(runs) for q in (0.5, 0.9, 0.99)}
        worst = max(r[-1] for r in runs)
        print(f"| {n} | {math.log2(n):.1f} | {mean[0.5]:.1f} | {mean[0.9]:.1f} | {mean[0.99]:.1f}"
              f" | {worst:.1f} | {worst / math.log2(n):.2f} |", flush=True)
        print(f"<!-- N={n}: {args.seeds} seeds in {time.perf_counter() - t0:.1f}s -->",
              file=sys.stderr)


if __name__ == "__main__":
    main()
