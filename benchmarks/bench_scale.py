"""Scale: does a node stay fast with 100,000 files stored? Three measurements.

    python benchmarks/bench_scale.py                       # all three, 100,000 files
    python benchmarks/bench_scale.py --fill api            # pre-fill through the HTTP API instead
    python benchmarks/bench_scale.py --only exchange       # just (c)

(a) PUT/GET 4 KiB throughput on 3 local nodes (R=3, W=2, fsync=always): an empty cluster, then a
    cluster already holding ``--files`` files. Default pre-fill (``--fill sqlite``): one SQLite
    database is built with MetadataDB.apply_batch (the node's own write path: LWW apply, chunk
    refs, small chunks stored inline) while no node runs, and copied into each node's data dir
    before its first start; every node holds every file, as with R=3 on 3 nodes, so no repair
    traffic follows. ``--fill api`` writes them through the gateways instead (bounded by
    ``--fill-timeout``). Pre-filled bodies are ``--fill-bytes`` long (small, to keep the fill fast).
(b) Start-up of each node, one at a time: seconds from process start to the first /health 200,
    RSS then (VmRSS) and peak (VmHWM); then how long the first repair pass over all entries
    takes, since it runs in the background of every fresh start.
(c) One manifest anti-entropy exchange (MerkleSync, what the nodes run) between two
    MetadataDB-backed stores with ``--files`` entries that differ in ``--diff`` keys: messages,
    msgpack bytes each way, entries shipped, milliseconds (in process: no network, but every
    message is msgpack-encoded and decoded as on the wire). Also over two in-memory manifests.

A script that prints figures, not a test. MB means 10**6 bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from p2pstore.bench.runner import Bench, BenchOptions, make_session, print_header, print_result, run_loop
from p2pstore.core.hlc import make_version
from p2pstore.core.manifest import ManifestEntry
from p2pstore.core.merkle import MemoryMerkleManifest, MerkleSync, MerkleTree, run_merkle_exchange
from p2pstore.launcher import LocalNode, start_all
from p2pstore.storage.checkpoint import DB_NAME
from p2pstore.storage.metadata import MetadataDB

BATCH = 5000


def proc_kib(pid: int | None, field: str) -> float | None:
    """A VmRSS/VmHWM line of /proc/<pid>/status in MiB (None when unreadable)."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds a process has used (from /proc/<pid>/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 1)


def fill_entries(
    n: int, body_bytes: int, node_id: str = "prefill", wall: int = 0
) -> Iterable[tuple[ManifestEntry, bytes]]:
    """``n`` distinct small files (entry, body), keys ``scale/0000000`` ..., versions at ``wall`` ms."""
    wall = wall or int(time.time() * 1000)
    base = os.urandom(body_bytes)
    for i in range(n):
        body = (i.to_bytes(8, "big") + base)[:body_bytes]
        sha = hashlib.sha256(body).hexdigest()
        yield (
            ManifestEntry(
                key=f"scale/{i:07d}",
                version=make_version(wall, i % 1_000_000, node_id),
                size=len(body),
                sha256=sha,
                chunks=(sha,),
                content_type="application/octet-stream",
                deleted=False,
                modified=wall / 1000,
            ),
            body,
        )


def build_db(path: Path, n: int, body_bytes: int) -> float:
    """Fill a fresh metadata database through MetadataDB.apply_batch; return seconds."""
    t0 = time.perf_counter()
    db = MetadataDB(path, fsync="never")
    batch: list[ManifestEntry] = []
    small: dict[str, bytes] = {}
    for entry, body in fill_entries(n, body_bytes):
        batch.append(entry)
        small[entry.chunks[0]] = body
        if len(batch) >= BATCH:
            db.apply_batch([(batch, small)])
            batch, small = [], {}
    if batch:
        db.apply_batch([(batch, small)])
    db.close()
    conn = sqlite3.connect(path)  # fold the WAL in, so a plain copy is the whole database
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return time.perf_counter() - t0


def wait(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll until true; return the seconds it took."""
    t0 = time.monotonic()
    while True:
        try:
            if predicate():
                return time.monotonic() - t0
        except OSError:
            pass
        if time.monotonic() - t0 > timeout:
            raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


def settled(nodes: list[LocalNode], polls: int = 3) -> bool:
    """No repair pass or handoff scan running on any node, ``polls`` times 0.5 s apart: the
    background work of a fresh start (full passes as each member joins) is over."""
    for i in range(polls):
        if i:
            time.sleep(0.5)
        for node in nodes:
            repair = node.get_json("/status", timeout=30)["repair"]
            if repair.get("running") or repair.get("handoff_running"):
                return False
    return True


def first_repair_pass_done(node: LocalNode) -> bool:
    repair = node.get_json("/status", timeout=30)["repair"]
    # Not "and not running": with 100k entries a full pass can outlast the 30 s pass interval.
    return bool(repair.get("passes"))


async def fill_api(urls: list[str], n: int, body_bytes: int, concurrency: int, deadline: float) -> int:
    """PUT ``n`` small files round-robin through the gateways; stop at ``deadline``; return count."""
    import asyncio

    done = 0
    cursor = iter(fill_entries(n, body_bytes))
    async with make_session(concurrency) as session:

        async def worker() -> None:
            nonlocal done
            for i, (entry, body) in enumerate(cursor):
                if time.monotonic() > deadline:
                    return
                async with session.put(f"{urls[i % len(urls)]}/files/{entry.key}", data=body) as resp:
                    if resp.status != 201:
                        raise SystemExit(f"fill: PUT {entry.key}: HTTP {resp.status}: {await resp.text()}")
                done += 1
                if done % 10_000 == 0:
                    print(f"  filled {done}", flush=True)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


def cluster_run(args: argparse.Namespace, parent: Path, label: str, template: Path | None) -> dict[str, Any]:
    """Start 3 nodes (pre-filled from ``template`` if given), time their start-up, run put/get-4k."""
    nodes = LocalNode.cluster(parent, 3, {"fsync": args.fsync, "replicas": 3, "write_quorum": 2})
    out: dict[str, Any] = {"cluster": label}
    if template is not None:
        for node in nodes:
            node.data_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(template, node.data_dir / DB_NAME)
    try:
        start_all(nodes, timeout=300, one_by_one=True, joined=False, interval=0.02)
        out["ready_s"] = [round(n.ready_seconds or 0, 2) for n in nodes]
        out["rss_at_ready_mib"] = [proc_kib(n.pid, "VmRSS") for n in nodes]
        print(
            f"[{label}] start-up to /health 200 (one at a time): {out['ready_s']} s; "
            f"RSS {out['rss_at_ready_mib']} MiB",
            flush=True,
        )
        wait(lambda: all(len(n.get_json("/status")["members"]) == 3 for n in nodes), 60, "membership")
        if args.fill == "api" and template is None and label != "empty":
            t0 = time.monotonic()
            filled = run_loop(
                fill_api(
                    [n.url for n in nodes],
                    args.files,
                    args.fill_bytes,
                    args.fill_concurrency,
                    t0 + args.fill_timeout,
                )
            )
            took = time.monotonic() - t0
            out["fill"] = {"method": "api", "files": filled, "seconds": round(took, 1)}
            print(f"[{label}] API fill: {filled} files in {took:.0f}s ({filled / took:.0f}/s)", flush=True)
            if filled < args.files:
                raise SystemExit(f"API fill did not finish within --fill-timeout {args.fill_timeout:.0f}s")
        took = wait(lambda: all(first_repair_pass_done(n) for n in nodes), 600, "the first repair pass")
        out["wait_first_repair_s"] = round(took, 1)  # after the last node was ready
        out["repair_last_pass_s"] = [
            n.get_json("/status", timeout=30)["repair"].get("last_pass_seconds") for n in nodes
        ]
        print(
            f"[{label}] first repair pass done on all nodes (last pass took {out['repair_last_pass_s']} s)",
            flush=True,
        )
        if args.settle:
            took = wait(lambda: settled(nodes), 600, "repair and handoff to finish")
            out["settle_s"] = round(took, 1)
            print(f"[{label}] background repair/handoff scans finished {took:.1f}s later", flush=True)
        out["node_cpu_s_before_bench"] = [cpu_seconds(n.pid) for n in nodes]
        opts = BenchOptions(
            local=3,
            concurrency=args.concurrency,
            phases=["put-4k", "get-4k"],
            count_4k=args.count_4k,
            fsync=args.fsync,
        )
        urls = [n.url for n in nodes]
        bench = Bench(opts, urls, {n.url: n.pid for n in nodes if n.pid is not None})

        async def phases() -> list[Any]:
            results = []
            async with make_session(opts.concurrency) as session:
                print_header()
                for name in opts.phases:
                    results.append(await bench.phase(session, name))
                    print_result(results[-1])
            return results

        results = run_loop(phases())
        out["phases"] = {
            r.phase: {"ops_per_s": r.ops_per_s, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "errors": r.errors}
            for r in results
        }
        out["peak_rss_mib"] = [proc_kib(n.pid, "VmHWM") for n in nodes]
        out["repair_running_after_bench"] = [
            n.get_json("/status", timeout=30)["repair"].get("running") for n in nodes
        ]
        print(f"[{label}] node peak RSS (VmHWM): {out['peak_rss_mib']} MiB", flush=True)
    finally:
        for node in nodes:
            node.terminate(timeout=30)
    return out


class DBManifest:
    """A MetadataDB as a MerkleStore, as the node's LocalStore presents it (the database keeps
    the tree in step with every apply)."""

    def __init__(self, db: MetadataDB) -> None:
        self.db = db

    def get(self, key: str) -> ManifestEntry | None:
        return self.db.get(key)

    def merkle(self) -> MerkleTree:
        return self.db.tree

    def hashes_in_leaf(self, leaf: int) -> list[tuple[str, bytes]]:
        return self.db.hashes_in_leaf(leaf)

    def apply(self, entries: list[ManifestEntry]) -> int:
        return len(self.db.apply(entries))


def memory_apply(m: MemoryMerkleManifest) -> Callable[[list[ManifestEntry]], int]:
    return lambda entries: sum(m.apply(e) for e in entries)


def measure_exchange(sync: MerkleSync, a: Any, b: Any, apply_a: Any, apply_b: Any) -> dict[str, Any]:
    """One exchange a -> b with every message msgpack-encoded; bytes per direction and ms."""
    sizes: list[int] = []

    def encode(msg: dict[str, Any]) -> bytes:
        data = msgpack.packb(msg, use_bin_type=True)
        sizes.append(len(data))
        return data

    def decode(data: bytes) -> dict[str, Any]:
        return msgpack.unpackb(data, raw=False)

    t0 = time.perf_counter()
    stats = run_merkle_exchange(sync, a, b, apply_a, apply_b, encode, decode)
    ms = (time.perf_counter() - t0) * 1000
    return {
        "messages": stats.messages,
        "bytes_a_to_b": sum(sizes[0::2]),
        "bytes_b_to_a": sum(sizes[1::2]),
        "bytes_total": sum(sizes),
        "entries_sent": stats.entries_sent,
        "applied_a": stats.applied_a,
        "applied_b": stats.applied_b,
        "ms": round(ms, 1),
    }


def exchange(args: argparse.Namespace, tmp: Path, template: Path | None) -> dict[str, Any]:
    """(c): two stores with ``--files`` entries; A has ``--diff`` keys newer than B."""
    out: dict[str, Any] = {}
    if template is None:
        template = tmp / "template.sqlite"
        build_db(template, args.files, args.fill_bytes)
    shutil.copyfile(template, tmp / "a.sqlite")
    shutil.copyfile(template, tmp / "b.sqlite")
    t0 = time.perf_counter()
    db_a, db_b = MetadataDB(tmp / "a.sqlite", "never"), MetadataDB(tmp / "b.sqlite", "never")
    out["open_s"] = round((time.perf_counter() - t0) / 2, 2)
    out["tree_source"] = db_a.tree_source
    a, b = DBManifest(db_a), DBManifest(db_b)
    sync = MerkleSync()
    out["equal"] = measure_exchange(sync, a, b, a.apply, b.apply)
    step = max(1, args.files // args.diff)
    later = int(time.time() * 1000) + 60_000  # newer than every pre-filled version
    changed = [
        e
        for i, (e, _) in enumerate(fill_entries(args.files, args.fill_bytes, "zz-newer", wall=later))
        if i % step == 0
    ][: args.diff]
    a.apply(changed)  # a later version of the same keys (node id "zz-..." sorts after "prefill")
    out["sqlite"] = measure_exchange(sync, a, b, a.apply, b.apply)
    out["converged"] = a.merkle() == b.merkle()
    db_a.close()
    db_b.close()
    ma, mb = MemoryMerkleManifest(), MemoryMerkleManifest()
    for e, _ in fill_entries(args.files, args.fill_bytes, wall=later - 1000):
        ma.apply(e)
        mb.apply(e)
    for e in changed:
        ma.apply(e)
    out["memory"] = measure_exchange(sync, ma, mb, memory_apply(ma), memory_apply(mb))
    for name in ("equal", "sqlite", "memory"):
        r = out[name]
        print(
            f"[exchange/{name}] {r['messages']} messages, {r['bytes_a_to_b']:,} B a->b + "
            f"{r['bytes_b_to_a']:,} B b->a = {r['bytes_total']:,} B; "
            f"{r['entries_sent']} entries shipped; applied {r['applied_a']}+{r['applied_b']}; {r['ms']} ms",
            flush=True,
        )
    print(
        f"[exchange] converged: {out['converged']}; open a {args.files}-entry database "
        f"(Merkle tree {out['tree_source']}): {out['open_s']} s",
        flush=True,
    )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=100_000, help="files already stored")
    ap.add_argument("--fill", choices=["sqlite", "api"], default="sqlite", help="how to pre-fill (see above)")
    ap.add_argument("--fill-bytes", type=int, default=256, help="body size of pre-filled files")
    ap.add_argument("--fill-concurrency", type=int, default=64, help="--fill api: concurrent PUTs")
    ap.add_argument("--fill-timeout", type=float, default=1200, help="--fill api: give up after this many s")
    ap.add_argument("--count-4k", type=int, default=2000, help="PUTs (then GETs) per 4 KiB phase")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--fsync", choices=["always", "batch", "never"], default="always")
    ap.add_argument("--diff", type=int, default=100, help="(c): keys that differ between the two stores")
    ap.add_argument("--only", choices=["cluster", "exchange"], help="run only (a)+(b) or only (c)")
    ap.add_argument("--json", type=Path, help="write all figures to this file as one JSON object")
    ap.add_argument(
        "--no-settle", dest="settle", action="store_false",
        help="measure right after the first repair pass, while start-up scans may still run",
    )  # fmt: skip
    args = ap.parse_args()
    report: dict[str, Any] = {
        "files": args.files,
        "fill": args.fill,
        "fill_bytes": args.fill_bytes,
        "fsync": args.fsync,
        "concurrency": args.concurrency,
        "cores": os.cpu_count(),
    }
    with tempfile.TemporaryDirectory(prefix="p2pstore-scale-") as name:
        tmp = Path(name)
        template: Path | None = None
        if args.fill == "sqlite":
            template = tmp / "template.sqlite"
            seconds = build_db(template, args.files, args.fill_bytes)
            report["fill_seconds"] = round(seconds, 1)
            print(
                f"pre-filled {args.files} entries + {args.fill_bytes} B small chunks into one SQLite db with "
                f"MetadataDB.apply_batch in {seconds:.1f}s ({template.stat().st_size / 1e6:.0f} MB); copied "
                f"into each node's data dir before its first start",
                flush=True,
            )
        if args.only != "exchange":
            report["empty"] = cluster_run(args, tmp / "empty", "empty", None)
            report["full"] = cluster_run(args, tmp / "full", f"{args.files} files", template)
        if args.only != "cluster":
            report["exchange"] = exchange(args, tmp, template)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
