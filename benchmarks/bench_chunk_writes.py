"""What writing a chunk costs a node's CPU: a file per chunk against a record in a segment.

    python benchmarks/bench_chunk_writes.py                       # 600 chunks of 1 MiB, 6 writers
    python benchmarks/bench_chunk_writes.py --count 800 --writers 1 --rounds 3

Writes ``--count`` chunks of ``--size`` bytes from ``--writers`` threads, durably
(``fsync=always``), the way a replica writes a copy it does not keep cached, three ways in
turn, ``--rounds`` times each:

* ``file``: ``ChunkStore.write_file`` (tmp -> fsync -> drop from the cache -> rename -> dir fsync);
* ``record, buffered``: a segment record written through the page cache, fdatasynced and its
  pages dropped (what a file system without O_DIRECT gets);
* ``record, O_DIRECT``: ``SegmentStore.append(cached=False)`` as a node runs it.

Prints the process CPU (user + system) per MiB and the rate. Each round writes into a new temp
dir under ``--dir`` that is removed afterwards. No node runs; a script that prints figures.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from p2pstore.storage.chunks import ChunkStore, read_sum
from p2pstore.storage.segments import SegmentStore


class BufferedOnly(SegmentStore):
    """Segments as on a file system that refuses O_DIRECT: buffered writes, pages dropped."""

    @staticmethod
    def _open(path: str, flags: int) -> int:
        return os.open(path, flags & ~os.O_DIRECT, 0o644)


def run(kind: str, root: Path, chunks: list[tuple[bytes, str, bytes]], writers: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) for writing every chunk one way."""
    write: Callable[[bytes, str, bytes], object]
    closers: list[Callable[[], None]] = []
    if kind == "file":
        store = ChunkStore(root)
        write = lambda data, sha, fast: store.write_file(data, sha, cached=False)  # noqa: E731
        closers.append(store.close)
    else:
        segments = (SegmentStore if kind == "record, O_DIRECT" else BufferedOnly)(root / "segments")
        write = lambda data, sha, fast: segments.append(sha, [data], fast, cached=False)  # noqa: E731
        closers.append(segments.close)

    def worker(k: int) -> None:
        for data, sha, fast in chunks[k::writers]:
            write(data, sha, fast)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(writers)]
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - start
    for close in closers:
        close()
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=600)
    parser.add_argument("--size", type=int, default=1 << 20)
    parser.add_argument("--writers", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    base = os.urandom(args.size)
    chunks = []
    for i in range(args.count):  # distinct chunks; hashing is not what is measured
        data = base[:-8] + i.to_bytes(8, "big")
        chunks.append((data, hashlib.sha256(data).hexdigest(), read_sum(data)))
    mib = args.count * args.size / (1 << 20)
    print(f"{args.count} chunks of {args.size} bytes, {args.writers} writers, fsync=always, in {args.dir}")
    print(f"{'way':<20} {'CPU ms/MiB':>11} {'MiB/s':>8}")
    for _ in range(args.rounds):
        for kind in ("file", "record, buffered", "record, O_DIRECT"):
            root = Path(tempfile.mkdtemp(prefix="bench-chunks-", dir=args.dir))
            try:
                cpu, wall = run(kind, root, chunks, args.writers)
            finally:
                shutil.rmtree(root, ignore_errors=True)
            print(f"{kind:<20} {cpu / mib * 1000:>11.3f} {mib / wall:>8.0f}")
            time.sleep(2)  # let the deletes' discards pass before the next way writes


if __name__ == "__main__":
    main()
