"""CLI start-up time: wall-clock seconds of `p2pstore --help` and `p2pstore stat KEY`.

    python benchmarks/cli_startup.py                      # this checkout's CLI
    python benchmarks/cli_startup.py --checkout /work/main --runs 20   # another checkout's CLI

Starts one real node (fsync=never) from this checkout, stores one small key, then runs each
command ``--runs`` times as a fresh process (the checkout's CLI, with the checkout first on
PYTHONPATH and as the working directory; its ``cli/`` is loaded even where another p2pstore_cli
is installed) and prints min / median / max and the CPU time. ``--script PATH`` times an
installed console script instead.
What an import costs: ``python -X importtime -m p2pstore --help 2>&1 | sort -t'|' -k2 -n``.
A script that prints figures, not a test; recorded results are in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from p2pstore.launcher import LocalNode  # noqa: E402

# Runs the CLI of one checkout whatever is installed: its ``cli/`` is loaded as ``p2pstore_cli``
# and its root goes first on sys.path (an installed p2pstore_cli would otherwise win).
BOOT = """import importlib.util, sys
root = sys.argv.pop(1)
sys.path.insert(0, root)
spec = importlib.util.spec_from_file_location("p2pstore_cli", root + "/cli/__init__.py",
                                              submodule_search_locations=[root + "/cli"])
package = importlib.util.module_from_spec(spec)
sys.modules["p2pstore_cli"] = package
spec.loader.exec_module(package)
from p2pstore_cli.main import main
main(sys.argv[1:])
"""


def checkout_cli(checkout: Path) -> list[str]:
    """The command line that runs ``checkout``'s CLI (append the CLI's arguments)."""
    return [sys.executable, "-c", BOOT, str(checkout)]


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds user+sys) of one run; CPU time is what a busy machine distorts
    least."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, check=False)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.decode().strip()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkout", type=Path, default=REPO_ROOT, help="the checkout whose CLI is timed")
    ap.add_argument("--script", help="time this installed command instead of python -m p2pstore")
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    checkout = args.checkout.resolve()
    env = {k: v for k, v in os.environ.items() if not k.startswith("P2PSTORE_")}
    env["PYTHONPATH"] = str(checkout)
    base = [args.script] if args.script else checkout_cli(checkout)

    with tempfile.TemporaryDirectory() as tmp:
        node = LocalNode(Path(tmp) / "node0", args=["--fsync", "never"]).start()
        try:
            node.wait_ready(60)
            req = urllib.request.Request(node.url + "/files/bench/startup.txt", data=b"x" * 100, method="PUT")
            urllib.request.urlopen(req, timeout=10).read()
            commands = {
                "p2pstore --help": [*base, "--help"],
                "p2pstore stat KEY": [*base, "--url", node.url, "stat", "bench/startup.txt"],
                "p2pstore ls PREFIX": [*base, "--url", node.url, "ls", "bench/"],
            }
            print(f"CLI of {args.script or checkout}, {args.runs} runs each, seconds "
                  f"(load average {os.getloadavg()[0]:.1f}):")  # fmt: skip
            for name, cmd in commands.items():
                timed(cmd, checkout, env)  # warm the page cache
                runs = [timed(cmd, checkout, env) for _ in range(args.runs)]
                wall, cpu = [w for w, _ in runs], [c for _, c in runs]
                print(f"  {name:<20} wall min {min(wall):.3f}  median {statistics.median(wall):.3f}  "
                      f"max {max(wall):.3f}   CPU median {statistics.median(cpu):.3f}")  # fmt: skip
        finally:
            node.terminate()


if __name__ == "__main__":
    main()
