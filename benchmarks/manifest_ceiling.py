"""The ceiling of "every node holds the whole manifest": bytes per entry, and where it stops fitting.

    python benchmarks/manifest_ceiling.py --entries 200000

Builds one node's metadata database (storage/metadata.py, through MetadataDB.apply_batch, the
node's own write path) with ``--entries`` entries of files this node does not hold (the common
case at N >> R: an entry without bytes, one 4 MiB chunk each, keys of ~50 bytes), then measures:

* bytes per entry on disk: the database file, and per table/index (SQLite's dbstat);
* bytes per entry in memory: the index pages a node needs hot to look keys up without a disk
  read (the key B-tree's interior pages, the Merkle leaf index), and the RSS growth of a process
  that reads every entry (a repair pass);
* seconds per million entries: the Merkle tree rebuilt from the stored hashes (build_merkle: a
  start after a crash; a clean stop saves the tree instead) and a full scan (iter_all: a repair
  or handoff pass).

Then extrapolates to the file count where one node's metadata passes 1 GiB of RAM for hot
indexes, 100 GB of disk, 60 s of start-up rebuild. A script that prints figures, not a test.
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from p2pstore.core.hlc import make_version
from p2pstore.core.manifest import ManifestEntry
from p2pstore.storage.metadata import MetadataDB

BATCH = 5000
RAM_BUDGET = 1 << 30  # bytes of index pages one node may keep hot
DISK_BUDGET = 100e9
START_BUDGET = 60.0  # seconds


def entries(n: int) -> list[ManifestEntry]:
    wall = int(time.time() * 1000)
    out = []
    for i in range(n):
        sha = hashlib.sha256(i.to_bytes(8, "big")).hexdigest()
        key = f"photos/{2000 + i % 27}/{i % 12:02d}/user-{i % 99991:08d}/IMG_{i:09d}.jpg"
        out.append(ManifestEntry(key=key, version=make_version(wall, i % 1_000_000, "n0123456789a"),
                                 size=4 << 20, sha256=sha, chunks=(sha,), content_type="image/jpeg",
                                 deleted=False, modified=wall / 1000))  # fmt: skip
    return out


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=200_000)
    args = ap.parse_args()
    n = args.entries
    with tempfile.TemporaryDirectory(prefix="p2pstore-ceiling-") as tmp:
        path = Path(tmp) / "meta.db"
        db = MetadataDB(path, fsync="never")
        t0 = time.perf_counter()
        all_entries = entries(n)
        for i in range(0, n, BATCH):
            db.apply_batch([(all_entries[i:i + BATCH], {})])
        fill = time.perf_counter() - t0
        del all_entries
        db.close()
        import sqlite3

        conn = sqlite3.connect(path)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        disk = path.stat().st_size
        objects = conn.execute("SELECT name, sum(pgsize), sum(pagetype = 'internal') * max(pgsize) "
                               "FROM dbstat GROUP BY name ORDER BY 2 DESC").fetchall()  # fmt: skip
        conn.close()
        print(f"{n:,} entries written in {fill:.1f}s; database file {disk / 1e6:.1f} MB "
              f"= {disk / n:.0f} bytes per entry")
        print("| table / index | bytes per entry | of which interior pages |")
        print("|---|---|---|")
        hot = 0
        for name, size, interior in objects:
            if size / n >= 0.5:
                print(f"| {name} | {size / n:.1f} | {interior / n:.1f} |")
        for name, size, interior in objects:
            if name == "files":
                hot += interior  # the key B-tree's interior pages: a lookup is then one leaf read
            elif name == "files_by_leaf":
                hot += size  # anti-entropy reads leaves of it, the tree rebuild all of it
        db = MetadataDB(path, fsync="never")
        before = rss_kib()
        t1 = time.perf_counter()
        db.build_merkle()
        rebuild = time.perf_counter() - t1
        t2 = time.perf_counter()
        scanned = sum(1 for _ in db.iter_all())
        scan = time.perf_counter() - t2
        grown = (rss_kib() - before) * 1024
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        db.close()
        assert scanned == n
        per_m = 1e6 / n
        print(f"hot index pages: {hot / n:.1f} bytes per entry; RSS growth reading every entry "
              f"{grown / n:.1f} bytes per entry (peak RSS {peak / 2**20:.0f} MiB)")
        print(f"Merkle tree rebuild (a start after a crash) {rebuild * per_m:.1f} s per million entries; "
              f"full scan "
              f"{scan * per_m:.1f} s per million")
        print("| limit | budget | files per node (= per cluster today) |")
        print("|---|---|---|")
        print(f"| hot index RAM | {RAM_BUDGET / 2**30:.0f} GiB | {RAM_BUDGET / (hot / n):,.0f} |")
        print(f"| metadata disk | {DISK_BUDGET / 1e9:.0f} GB | {DISK_BUDGET / (disk / n):,.0f} |")
        print(f"| start-up rebuild | {START_BUDGET:.0f} s | {START_BUDGET / (rebuild / n):,.0f} |")
        print(f"| full scan (repair pass) | {START_BUDGET:.0f} s | {START_BUDGET / (scan / n):,.0f} |")



if __name__ == "__main__":
    main()
