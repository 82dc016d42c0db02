"""HTTP throughput and latency of p2pstore nodes: PUT and GET phases at 4 KiB, 1 MiB and 64 MiB.

    python benchmarks/bench_http.py --local 1
    python benchmarks/bench_http.py --local 3 --phases put-1m,get-1m
    python benchmarks/bench_http.py --url http://10.0.0.1:7000,http://10.0.0.2:7000 --pids 123,456
    python benchmarks/bench_http.py --local 1 --mem-1g

``--local N`` starts N real node processes (p2pstore/launcher.py) in a temp dir and stops
them at the end; ``--url`` targets running nodes. Requests are spread round-robin over the URLs;
a GET goes through the gateway after the one its PUT used. Every downloaded byte is checked
against the sha256 of what was sent; a mismatch counts as an error. MB means 10**6 bytes.

This is a script that prints figures, not a test. See docs/benchmarks.md for recorded results.
It runs ``p2pstore bench`` (cli/bench.py, the runner in p2pstore/bench/runner.py) from this
checkout, installed or not: same options (``--help``), same output, same exit codes.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from p2pstore.__main__ import load_cli_main

if __name__ == "__main__":
    load_cli_main()(["bench", *sys.argv[1:]])
