"""Fill the page cache, as on a server that has written more than its RAM, for benchmarks.

    python benchmarks/fill_page_cache.py [--path /tmp/p2pstore-fill.bin] [--leave-gib 2]
    ... run the benchmarks ...
    python benchmarks/fill_page_cache.py --remove

On a freshly booted virtual machine whose host backs guest memory lazily (and takes freed
memory back: free page reporting), the first write to each page of memory costs a trip to the
hypervisor. A node's page cache grows into such pages as it writes new data: on such a VM,
writing new data into the page cache costs 2.2-2.7 ms of CPU per MiB instead of 0.2-0.3
(``machine_limits.py`` prints both), a third of a PUT 1 MiB's CPU at R=3.
A server that has run for a while has its page cache full, and new writes reuse pages the
kernel reclaims from it. This writes a file of all but ``--leave-gib`` of MemAvailable (never
more than the disk can spare), fsyncs it and leaves it there, so the page cache is full of it
while the benchmarks run; ``--remove`` deletes it afterwards. The effect lasts only minutes
where a DAMON thread in the guest reclaims idle memory and the host takes it back. Linux only;
a script, not a test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

GIB = 1 << 30
BLOCK = 4 << 20
DISK_MARGIN = 10 * GIB  # left free on the disk whatever the memory


def available_memory() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise SystemExit("error: no MemAvailable in /proc/meminfo")


def fill(path: Path, total: int) -> float:
    """Write ``total`` bytes of zeros to ``path`` and fsync them; seconds. Without the fsync the
    benchmarks that follow would run while gigabytes of dirty pages are written back (the disk
    busy, reclaim waiting for it: PUT 1 MiB fell from ~125 to 70-100 MB/s in such runs)."""
    block = bytes(BLOCK)
    t0 = time.perf_counter()
    with open(path, "wb") as fh:
        for _ in range(total // BLOCK):
            fh.write(block)
        fh.flush()
        os.fsync(fh.fileno())
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--path", type=Path, default=Path("/tmp/p2pstore-fill.bin"), help="the file to write")
    ap.add_argument("--leave-gib", type=float, default=2.0, help="memory left for the benchmark itself")
    ap.add_argument("--gib", type=float, help="write this much instead (default: the memory to spare)")
    ap.add_argument("--remove", action="store_true", help="delete the file written before, and stop")
    args = ap.parse_args()
    if args.remove:
        args.path.unlink(missing_ok=True)
        print(f"removed {args.path}")
        return
    spare = shutil.disk_usage(args.path.parent).free - DISK_MARGIN
    wanted = int(args.gib * GIB) if args.gib is not None else available_memory() - int(args.leave_gib * GIB)
    total = max(0, min(wanted, spare)) // BLOCK * BLOCK
    if not total:
        raise SystemExit("error: no memory or disk to spare")
    seconds = fill(args.path, total)
    print(
        f"wrote {total / GIB:.1f} GiB to {args.path} in {seconds:.1f} s "
        f"({seconds * 1000 / (total >> 20):.2f} ms/MiB); remove it with --remove"
    )


if __name__ == "__main__":
    main()
