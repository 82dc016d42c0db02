"""How many database pages does one small-file write dirty, with many files already stored?

    python benchmarks/small_write_pages.py                   # 100,000 files, 3,000 writes of 4 KiB
    PYTHONPATH=<other checkout> python benchmarks/small_write_pages.py   # the same for other code

With many files stored, each page a write dirties sits at its own place in the database file:
the WAL commit writes it, and a checkpoint later writes it into the database file (random
writes, fsynced), which is what slows small PUTs with 100,000 files. This fills a metadata
database with ``--files`` entries (bench_scale's pre-fill), then applies ``--writes`` new small
files through ``MetadataDB.apply_batch`` (the node's own group-commit path, ``--group`` writes
per transaction), and reads the WAL after every ``--window`` writes (what one checkpoint would
copy): WAL frames per write (what the commits wrote) and distinct pages per write (what the
checkpoint writes). No node runs; a script that prints figures, not a test.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))  # appended: PYTHONPATH picks the code
sys.path.append(str(Path(__file__).resolve().parent))

from p2pstore.core.hlc import make_version
from p2pstore.core.manifest import ManifestEntry
from p2pstore.storage import metadata

WAL_HEADER, FRAME_HEADER = 32, 24


def wal_pages(wal: Path, page_size: int) -> tuple[int, int]:
    """(frames, distinct page numbers) in a WAL file (each frame header starts with its page)."""
    data = wal.read_bytes() if wal.exists() else b""
    pages, frames, off = set(), 0, WAL_HEADER
    while off + FRAME_HEADER <= len(data):
        pages.add(struct.unpack(">I", data[off : off + 4])[0])
        frames += 1
        off += FRAME_HEADER + page_size
    return frames, len(pages)


def small_write(i: int, run: str, body_bytes: int) -> tuple[ManifestEntry, dict[str, bytes]]:
    body = os.urandom(body_bytes)
    sha = hashlib.sha256(body).hexdigest()
    wall = int(time.time() * 1000)
    entry = ManifestEntry(
        f"bench/{run}/put-4k/{i:06d}", make_version(wall, i, "writer"), len(body), sha, (sha,),
        "application/octet-stream", False, wall / 1000,
    )  # fmt: skip
    return entry, {sha: body}


def measure(path: Path, writes: int, window: int, group: int, body_bytes: int) -> dict[str, float]:
    metadata.CHECKPOINT_INTERVAL = 1e9  # this script decides when the WAL is checkpointed
    db = metadata.MetadataDB(path, fsync="never")
    try:
        page_size = db._w.execute("PRAGMA page_size").fetchone()[0]
        wal = Path(f"{path}-wal")
        run = os.urandom(4).hex()
        # One write first, not counted: the first write after a node opens its database drops
        # the Merkle tree saved at the last clean close (a one-time ~1 MiB delete).
        entry, small = small_write(writes, run, body_bytes)
        db.apply_batch([([entry], small)])
        db._w.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        frames = pages = done = 0
        while done < writes:
            for start in range(done, min(done + window, writes), group):
                batch = [small_write(i, run, body_bytes) for i in range(start, min(start + group, writes))]
                db.apply_batch([([entry], small) for entry, small in batch])
            done = min(done + window, writes)
            f, p = wal_pages(wal, page_size)
            frames, pages = frames + f, pages + p
            db._w.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return {"frames_per_write": frames / writes, "pages_per_write": pages / writes, "page": page_size}
    finally:
        db.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=100_000, help="files already stored")
    ap.add_argument("--fill-bytes", type=int, default=256, help="body size of pre-filled files")
    ap.add_argument("--writes", type=int, default=3000, help="small files written and counted")
    ap.add_argument("--body", type=int, default=4096, help="bytes per written file")
    ap.add_argument("--window", type=int, default=300, help="writes between checkpoints")
    ap.add_argument("--group", type=int, default=16, help="writes per transaction (group commit)")
    ap.add_argument("--dir", type=Path, help="where the temp database goes (default: the system temp dir)")
    args = ap.parse_args()
    import bench_scale  # only now: it puts its own checkout first on sys.path, after p2pstore is in

    with tempfile.TemporaryDirectory(prefix="p2pstore-pages-", dir=args.dir) as tmp:
        path = Path(tmp) / "meta.sqlite"
        seconds = bench_scale.build_db(path, args.files, args.fill_bytes)
        figures = measure(path, args.writes, args.window, args.group, args.body)
    print(f"pre-filled {args.files} files of {args.fill_bytes} B in {seconds:.1f} s")
    print(f"code: {metadata.__file__}")
    print(
        f"{args.writes} writes of {args.body} B, {args.group} per transaction, a checkpoint every "
        f"{args.window}: WAL frames per write {figures['frames_per_write']:.2f}, distinct pages per "
        f"write {figures['pages_per_write']:.2f} ({figures['page']:.0f} B pages)"
    )


if __name__ == "__main__":
    main()
