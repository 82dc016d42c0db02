"""Today's design (every node holds the whole manifest) next to a manifest partitioned by key
hash, for 100 nodes and 100,000,000 entries: traffic per write, per listing, per rejoin, and
metadata per node.

    python benchmarks/partition_sim.py --nodes 100 --entries 100000000 --sample 1000000

A sampling simulation, not a model with free parameters: ``--sample`` keys are placed with the
production placement (core/placement.py) over ``--nodes`` node ids, each key's entry is encoded
as on the wire (ManifestEntry.to_wire, msgpack), and every count is scaled by
entries / sample. Partitioned design: key -> partition (blake2b of the key mod ``--partitions``)
-> the partition's R replicas by rendezvous over the partition id, so a write touches only them;
a listing asks one replica of every partition (grouped per node); a rejoining node exchanges the
Merkle trees of its partitions only and receives the entries of its partitions only. Per-entry bytes
on disk and of hot index pages come from benchmarks/manifest_ceiling.py (pass them with
``--disk-bytes`` and ``--hot-bytes``). Prints a markdown table (docs/scaling.md).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
import time
from collections import Counter
from pathlib import Path

import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from p2pstore.core.hlc import make_version
from p2pstore.core.manifest import ManifestEntry
from p2pstore.core.placement import replicas

R = 3
HASH = 16  # bytes of one tree node hash (a partition's root, a Merkle node)
REQUEST = 200  # bytes of a request's framing and headers, each way


def key_of(i: int) -> str:
    return f"photos/{2000 + i % 27}/{i % 12:02d}/user-{i % 99991:08d}/IMG_{i:09d}.jpg"


def partition_of(key: str, partitions: int) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") % partitions


def human(b: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if b < 1000:
            return f"{b:.1f} {unit}"
        b /= 1000
    return f"{b:.1f} PB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--entries", type=int, default=100_000_000)
    ap.add_argument("--sample", type=int, default=1_000_000)
    ap.add_argument("--partitions", type=int, default=4096)
    ap.add_argument("--listing", type=int, default=10_000, help="keys a prefix listing returns")
    ap.add_argument("--missed", type=int, default=10_000, help="writes a rejoining node missed")
    ap.add_argument("--disk-bytes", type=float, default=424.0)
    ap.add_argument("--hot-bytes", type=float, default=97.2)
    args = ap.parse_args()
    n, total, sample, parts = args.nodes, args.entries, args.sample, args.partitions
    scale = total / sample
    nodes = [f"n{i:011x}" for i in range(n)]
    t0 = time.perf_counter()
    part_replicas = [replicas(f"partition/{p}", nodes, R) for p in range(parts)]
    held_part: Counter[str] = Counter()
    wire_bytes = 0
    wall = int(time.time() * 1000)
    for i in range(sample):
        key = key_of(i)
        p = partition_of(key, parts)
        for node in part_replicas[p]:
            held_part[node] += 1
        if i % 100 == 0:  # the wire size of an entry, sampled
            sha = hashlib.sha256(key.encode()).hexdigest()
            e = ManifestEntry(key, make_version(wall, i, nodes[0]), 4 << 20, sha, (sha,), "image/jpeg",
                              False, wall / 1000)  # fmt: skip
            wire_bytes += len(msgpack.packb(e.to_wire()))
    entry_wire = wire_bytes / (sample // 100)
    per_node_today = total
    per_node_part_max = max(held_part.values()) * scale
    per_node_part_mean = total * R / n
    parts_per_node = Counter(node for reps in part_replicas for node in reps)
    # a write: today the R replicas get the entry with the data, and the gateway announces it
    # to the N - R others (cluster/announce.py); partitioned: the R replicas only
    write_today = (n - R) * (entry_wire + REQUEST / 8)  # announcements are batched, ~8 per message
    write_part = 0.0
    # a listing of L keys: today answered from the local manifest; partitioned: every partition
    # holds a slice of any prefix, so one replica of each is asked, grouped into one call per node
    asked_nodes = len({reps[0] for reps in part_replicas})
    listing_today = 0.0
    listing_part = args.listing * entry_wire + asked_nodes * 2 * REQUEST
    # a rejoin after missing M writes. Today, the Merkle tree over the whole manifest: about
    # M * log2(entries) hashes, then the M entries. Partitioned: the same tree per partition,
    # over this node's partitions only, and only the entries of its partitions
    m = args.missed
    rejoin_merkle = m * math.log2(total) * HASH + m * entry_wire
    mine = parts_per_node.most_common(1)[0][1]
    m_mine = m * R / n
    rejoin_part = mine * HASH + m_mine * math.log2(total / parts) * HASH + m_mine * entry_wire
    print(f"<!-- {sample:,} sampled keys, {n} nodes, {parts} partitions: {time.perf_counter() - t0:.0f}s; "
          f"entry on the wire {entry_wire:.0f} B -->")  # fmt: skip
    print(f"| per node / per operation ({n} nodes, {total:,} entries, R={R}) | today: whole manifest "
          f"| partitioned ({parts} partitions) |")  # fmt: skip
    print("|---|---|---|")
    print(f"| entries held per node | {per_node_today:,.0f} | {per_node_part_mean:,.0f} mean, "
          f"{per_node_part_max:,.0f} max |")  # fmt: skip
    print(f"| metadata on disk per node | {human(per_node_today * args.disk_bytes)} "
          f"| {human(per_node_part_max * args.disk_bytes)} |")  # fmt: skip
    print(f"| hot index RAM per node | {human(per_node_today * args.hot_bytes)} "
          f"| {human(per_node_part_max * args.hot_bytes)} |")  # fmt: skip
    print(f"| manifest traffic per write, beyond the R replicas | {human(write_today)} "
          f"| {human(write_part)} |")  # fmt: skip
    print(f"| traffic per listing of {args.listing:,} keys | {human(listing_today)} (local) "
          f"| {human(listing_part)} ({asked_nodes} nodes asked) |")  # fmt: skip
    print(f"| traffic per rejoin after {m:,} missed writes | {human(rejoin_merkle)} (Merkle tree) "
          f"| {human(rejoin_part)} |")  # fmt: skip
    print(f"| cluster-wide manifest traffic per 1,000 writes/s | {human(write_today * 1000)}/s "
          f"| {human(write_part * 1000)}/s |")  # fmt: skip


if __name__ == "__main__":
    main()
