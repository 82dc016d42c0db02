"""Membership and election at 1,000 and 2,000 nodes, in the deterministic simulator.

    python benchmarks/sim_scale.py --sizes 1000 2000 --seeds 2

Per size and seed (tests/support/simscale.py): periods from a crash until every live node has the
crashed member dead; periods until an update reached 100 % of the nodes; membership messages
and msgpack bytes per node per period in steady state; dead events in 60 periods with 5 %
packet loss, and with one node stalled for 5 periods (both expected 0); periods until every
node follows one elected leader, terms that ever had two leaders (must be 0) and leader changes
in the 20 periods after. Prints a markdown table (docs/protocols.md). A script, not a test.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.simscale import (
    election_converges,
    failure_known_everywhere,
    false_deaths_with_a_stall,
    false_deaths_with_loss,
    update_reaches_all,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000])
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--periods", type=int, default=60, help="periods of the lossy and stalled runs")
    ap.add_argument("--no-wire", action="store_true",
                    help="skip the msgpack round trip of every message (faster; no byte counts)")
    args = ap.parse_args()
    print("| N | seed | crash → dead everywhere | update → 100 % | msgs / node / period | bytes / node / "
          "period | false dead, 5 % loss | false dead, one node stalled | election → one leader "
          "| terms with 2 leaders | leader changes after |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            f = failure_known_everywhere(n, seed, wire=not args.no_wire)
            spread = update_reaches_all(n, seed)
            lossy = false_deaths_with_loss(n, seed, periods=args.periods)
            stalled = false_deaths_with_a_stall(n, seed, periods=args.periods)
            e = election_converges(n, seed)
            dead = "not within 200" if f.periods is None else f"{f.periods:.1f}"
            elect = "no leader in 120" if e.periods is None else f"{e.periods:.1f}"
            size = "—" if args.no_wire else f"{f.bytes_per_node_period:.0f}"
            print(f"| {n} | {seed} | {dead} | {spread:.1f} | {f.msgs_per_node_period:.2f} "
                  f"| {size} | {lossy + f.wrong_deaths} | {stalled} | {elect} "
                  f"| {e.terms_with_two_leaders} | {e.leader_changes_after} |", flush=True)
            print(f"<!-- N={n} seed={seed}: {time.perf_counter() - t0:.0f}s -->", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
