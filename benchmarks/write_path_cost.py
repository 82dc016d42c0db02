"""What a small-file write costs the metadata database, empty against 1,000,000 files.

    python benchmarks/write_path_cost.py --template /tmp/m1.sqlite         # bench_merkle's manifest
    python benchmarks/write_path_cost.py --template /tmp/m1.sqlite --rounds 5 --variants

Applies ``--writes`` new 4 KiB files (inline, like a PUT's replica commit) through
``MetadataDB.apply_batch``, ``--group`` per transaction, ``fsync=always``, to an empty database
and to a copy of ``--template``, interleaved ``--rounds`` times, and prints the process CPU per
write (the writer and the WAL checkpointer threads, up to a final checkpoint of what the
writes left) and its median. First it prints SQLite's query plan of every statement the write
path runs, to show each one seeks (no statement scans). ``--variants`` also times the copy with
each index that a write must update dropped (the index's share of the cost; not a
configuration the node runs) and with a 32 MiB page cache or memory-mapped I/O. No node
runs; a script that prints figures, not a test.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from p2pstore.core.hlc import make_version
from p2pstore.core.manifest import ManifestEntry
from p2pstore.storage import metadata
from p2pstore.storage.metadata import ENTRY_COLUMNS, IS_INLINE, MetadataDB

WRITE_STATEMENTS = {
    "look up the stored entry": f"SELECT {ENTRY_COLUMNS}, {IS_INLINE} FROM files WHERE key = ?",
    "insert or replace the row": f"INSERT OR REPLACE INTO files ({ENTRY_COLUMNS}, leaf, ehash, data)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
    "chunk reference count": "INSERT INTO chunk_refs (sha, refs) VALUES (?, ?) "
    "ON CONFLICT(sha) DO UPDATE SET refs = refs + excluded.refs",
    "read sum": "INSERT OR REPLACE INTO chunk_sums (sha, xxh) VALUES (?, ?)",
    "forget the saved tree": "DELETE FROM kv WHERE name = ?",
}
INDEXES = ("files_inline_by_sha", "files_by_leaf")
PRAGMAS = ("cache_size=-32768", "mmap_size=1073741824")  # a bigger page cache, memory-mapped reads


def plans(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        for what, sql in WRITE_STATEMENTS.items():
            rows = conn.execute(f"EXPLAIN QUERY PLAN {sql}", (None,) * sql.count("?")).fetchall()
            print(f"  {what}: {'; '.join(r[-1] for r in rows) or '(no table access: one seek by key)'}")
    finally:
        conn.close()


def run(path: Path, writes: int, group: int, pragma: str = "") -> float:
    """CPU ms per write of ``writes`` new 4 KiB files applied to the database at ``path``
    (``pragma``: run on the writer connection first)."""
    db = MetadataDB(path, fsync="always")
    if pragma:
        db._w.execute(pragma)
    wall, run_id = int(time.time() * 1000), os.urandom(4).hex()
    cpu = time.process_time()
    for g in range(0, writes, group):
        requests = []
        for i in range(g, min(g + group, writes)):
            body = os.urandom(4096)
            sha = hashlib.sha256(body).hexdigest()
            entry = ManifestEntry(
                key=f"bench/{run_id}/4k/{i:06d}", version=make_version(wall, i, "n1"), size=4096,
                sha256=sha, chunks=(sha,), content_type="application/octet-stream", deleted=False,
                modified=wall / 1000,
            )  # fmt: skip
            requests.append(([entry], {sha: body}))
        db.apply_batch(requests)
    db._closing.set()  # stop the checkpointer; then fold in what the writes left, counted too
    db._checkpointer.join()
    db._w.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    took = time.process_time() - cpu
    db.close(save_tree=False)
    return 1000 * took / writes


def fresh(tmp: Path, template: Path | None, drop: tuple[str, ...] = ()) -> Path:
    path = tmp / "meta.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    if template is not None:
        shutil.copyfile(template, path)
    for name in drop:  # a variant: the index gone, and not created again by MetadataDB
        conn = sqlite3.connect(path)
        conn.execute(f"DROP INDEX IF EXISTS {name}")
        conn.close()
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--template", required=True, help="a built manifest (bench_merkle.py --template)")
    ap.add_argument("--writes", type=int, default=8000)
    ap.add_argument("--group", type=int, default=8, help="writes per transaction (group commit)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--variants", action="store_true", help="also time the copy without each index")
    args = ap.parse_args()
    template = Path(args.template)
    print(f"load average {os.getloadavg()[0]:.1f}; query plans of the write path at {template}:")
    plans(template)
    results: dict[str, list[float]] = {}
    labels: list[tuple[str, Path | None, tuple[str, ...], str]] = [
        ("empty", None, (), ""),
        ("template", template, (), ""),
    ]
    if args.variants:
        labels += [(f"template without {name}", template, (name,), "") for name in INDEXES]
        labels += [("template without both", template, INDEXES, "")]
        labels += [(f"template, {p}", template, (), f"PRAGMA {p}") for p in PRAGMAS]
    with tempfile.TemporaryDirectory(prefix="p2pstore-writepath-") as tmp:
        for r in range(args.rounds):
            for label, source, drop, pragma in labels:
                path = fresh(Path(tmp), source, drop)
                saved = (metadata.INLINE_INDEX, metadata.LEAF_INDEX)
                if "files_inline_by_sha" in drop:
                    metadata.INLINE_INDEX = "SELECT 1"
                if "files_by_leaf" in drop:
                    metadata.LEAF_INDEX = "SELECT 1"
                try:
                    ms = run(path, args.writes, args.group, pragma)
                finally:
                    metadata.INLINE_INDEX, metadata.LEAF_INDEX = saved
                results.setdefault(label, []).append(ms)
                print(f"round {r + 1} {label:40s} {ms:.3f} ms CPU/write (load {os.getloadavg()[0]:.1f})")
    base = statistics.median(results["empty"])
    for label, values in results.items():
        med = statistics.median(values)
        print(f"median {label:40s} {med:.3f} ms CPU/write ({100 * (med / base - 1):+.0f} % vs empty)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
