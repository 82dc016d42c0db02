"""What keeping a version costs one replica's manifest store: 4 KiB overwrites applied to a
real MetadataDB (fsync=always, group commits of 8), unversioned against versioned (each
overwrite then keeps the old entry as a row of its own, docs/versions.md).

    python benchmarks/bench_version_apply.py --count 3000 --rounds 3

Prints the process's CPU (user+sys, the WAL checkpointer thread included) per applied entry,
for new keys and for overwrites, median of ``--rounds`` alternated runs. A script that prints
figures, not a test.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import statistics
import tempfile
from pathlib import Path

from p2pstore.core.manifest import ManifestEntry
from p2pstore.core.versions import KEEP
from p2pstore.storage.metadata import MetadataDB


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def one_run(versioned: bool, count: int, batch: int) -> tuple[float, float]:
    """(new keys, overwrites): CPU ms per applied entry."""
    meta = ((KEEP, "1"),) if versioned else ()
    figures = []
    with tempfile.TemporaryDirectory() as tmp:
        db = MetadataDB(Path(tmp) / "m.sqlite", "always")
        try:
            for version in (1, 2):
                work = []
                for i in range(count):
                    data = os.urandom(4096)
                    sha = hashlib.sha256(data).hexdigest()
                    key, stamp = f"bench/k{i:06d}", f"{version:013d}.000000.n"
                    entry = ManifestEntry(key, stamp, 4096, sha, (sha,), "t", False, 1.0, meta)
                    work.append(([entry], {sha: data}))
                start = cpu_seconds()
                for j in range(0, count, batch):
                    db.apply_batch(work[j : j + batch])
                figures.append((cpu_seconds() - start) / count * 1000)
        finally:
            db.close()
    return figures[0], figures[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=3000, help="keys written, then overwritten")
    parser.add_argument("--batch", type=int, default=8, help="entries per group commit")
    parser.add_argument("--rounds", type=int, default=3, help="alternated runs of each")
    args = parser.parse_args()
    runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for _ in range(args.rounds):
        for versioned in (False, True):
            runs[versioned].append(one_run(versioned, args.count, args.batch))
    print(f"load average {os.getloadavg()[0]:.2f}; CPU ms per applied 4 KiB entry, median of {args.rounds}")
    for versioned, figures in runs.items():
        new = statistics.median(f[0] for f in figures)
        over = statistics.median(f[1] for f in figures)
        name = "versioned  " if versioned else "unversioned"
        each = [round(f[1], 3) for f in figures]
        print(f"{name}  new keys {new:.3f}  overwrites {over:.3f}  (overwrites: {each})")


if __name__ == "__main__":
    main()
