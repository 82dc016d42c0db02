"""Touch the machine's free memory once, as a server that has run for a while has.

    python benchmarks/warm_memory.py [--leave-gib 2]

On a freshly booted virtual machine the host backs guest memory lazily: the first write to each
page costs a trip to the hypervisor. The page cache of a node grows into such pages as it writes
new data, and on this VM that made writing new data into the page cache cost 2.2-2.4 ms of CPU
per MiB instead of 0.2-0.3 (``machine_limits.py`` measures both): a third of a fresh machine's
PUT 1 MiB CPU at R=3. A server whose memory has filled once (with page cache, as any does
after writing more than its RAM) no longer pays it. This maps anonymous memory with
MAP_POPULATE, 1 GiB at a time, up to all but ``--leave-gib`` of MemAvailable, and frees it:
the pages the kernel hands out next have been backed once. The host may take freed memory
back again (free page reporting), so the effect can fade: ``machine_limits.py``'s page-cache
row tells which state a run was in. Linux only; a script, not a test.
"""

from __future__ import annotations

import argparse
import mmap
import time

GIB = 1 << 30


def available_bytes() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise SystemExit("no MemAvailable in /proc/meminfo")


def touch(total: int) -> float:
    """Populate ``total`` bytes of anonymous memory (held all at once, so each piece is new
    memory), then free it; returns seconds."""
    t0 = time.perf_counter()
    held = []
    try:
        for _ in range(total // GIB):
            flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_POPULATE
            held.append(mmap.mmap(-1, GIB, flags=flags))
    finally:
        for m in held:
            m.close()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--leave-gib", type=float, default=2.0, help="memory left untouched for the rest")
    args = ap.parse_args()
    total = max(0, available_bytes() - int(args.leave_gib * GIB))
    seconds = touch(total)
    per_mib = seconds * 1000 / max(1, total >> 20)
    print(f"touched {total // GIB} GiB of memory once in {seconds:.1f} s ({per_mib:.2f} ms/MiB)")


if __name__ == "__main__":
    main()
