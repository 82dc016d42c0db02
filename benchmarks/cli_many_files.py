"""Many small files through the CLI: one recursive command against one `put` per file.

    python benchmarks/cli_many_files.py                         # 1,000 files of 4 KiB, 3 nodes
    python benchmarks/cli_many_files.py --separate 100 --jobs 8 # time 100 single puts, scale to N
    python benchmarks/cli_many_files.py --separate-checkout /work/main  # single puts, older CLI

Starts ``--nodes`` real node processes (fsync=always) from this checkout, writes ``--files``
files of ``--size`` bytes in a temp folder, then times, as real processes:
``p2pstore put DIR PREFIX/ -j N``, ``p2pstore get PREFIX/ DIR -j N`` (every byte compared
after) and ``--separate`` runs of ``p2pstore put FILE KEY``, one process per file (from
``--separate-checkout``, default this one), whose time is scaled to ``--files`` when fewer are
run. Prints seconds, files/s and how many times faster the one command is. A script that prints
figures, not a test; recorded results are in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.cli_startup import checkout_cli  # noqa: E402
from p2pstore.launcher import LocalNode, start_all, stop_all  # noqa: E402


def cli(checkout: Path, *args: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("P2PSTORE_")}
    env["PYTHONPATH"] = str(checkout)
    start = time.perf_counter()
    res = subprocess.run([*checkout_cli(checkout), *args], cwd=checkout, env=env,
                         capture_output=True, check=False)  # fmt: skip
    elapsed = time.perf_counter() - start
    if res.returncode != 0:
        raise SystemExit(f"p2pstore {' '.join(args[:4])} failed: {res.stderr.decode().strip()}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--separate", type=int, default=1000, help="single-put processes to time")
    ap.add_argument("--separate-checkout", type=Path, default=REPO_ROOT)
    ap.add_argument("--fsync", default="always")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        src = tmp / "src"
        for i in range(args.files):
            path = src / f"d{i % 10}" / f"f{i:05d}.bin"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(os.urandom(args.size))
        nodes = LocalNode.cluster(tmp / "nodes", args.nodes, {"fsync": args.fsync})
        start_all(nodes, 60)
        try:
            urls = ",".join(n.url for n in nodes)
            print(f"{args.files} files of {args.size} B, {args.nodes} nodes, "
                  f"fsync={args.fsync}, -j {args.jobs}")  # fmt: skip
            put_s = cli(REPO_ROOT, "--url", urls, "put", str(src), "many/", "-j", str(args.jobs))
            print(f"  put DIR PREFIX/ (one command)   {put_s:7.2f} s  {args.files / put_s:7.1f} files/s")
            dst = tmp / "dst"
            get_s = cli(REPO_ROOT, "--url", urls, "get", "many/", str(dst), "-j", str(args.jobs))
            print(f"  get PREFIX/ DIR (one command)   {get_s:7.2f} s  {args.files / get_s:7.1f} files/s")
            for path in src.rglob("*.bin"):
                if (dst / path.relative_to(src)).read_bytes() != path.read_bytes():
                    raise SystemExit(f"MISMATCH: {path.relative_to(src)}")
            files = sorted(src.rglob("*.bin"))[: args.separate]
            old = args.separate_checkout
            sep_s = sum(cli(old, "--url", urls, "put", str(p), f"s/{p.name}") for p in files)
            per_call = sep_s / len(files)
            scaled = per_call * args.files
            print(f"  {len(files)} separate put calls ({args.separate_checkout}): {sep_s:7.2f} s, "
                  f"{per_call * 1000:.0f} ms each -> {scaled:.1f} s for {args.files}")  # fmt: skip
            print(f"  one command is {scaled / put_s:.1f}x faster (put), "
                  f"{scaled / get_s:.1f}x (get vs single puts)")  # fmt: skip
        finally:
            stop_all(nodes)


if __name__ == "__main__":
    main()
