"""A million files: Merkle anti-entropy traffic, a rejoining node's catch-up, and the cluster at rest.

    python benchmarks/bench_merkle.py --only exchange        # (a), 1,000,000 entries, 100 differ
    python benchmarks/bench_merkle.py --only cluster         # (b) and (c)
    python benchmarks/bench_merkle.py --files 100000         # everything at a smaller size
    python benchmarks/bench_merkle.py --only cluster --no-rejoin --template /tmp/m.sqlite  # (b) only
    python benchmarks/bench_merkle.py --only rates --template /tmp/m.sqlite  # (d)

The manifests are built directly in SQLite, not through HTTP (1,000,000 PUTs would take most of
an hour here): one database is filled with MetadataDB.apply_batch (the node's own write path:
LWW apply, leaf and entry hash columns, small bodies inline) and copied where needed.

(a) Two LocalStores (the node's storage layer, SQLite on disk) of ``--files`` entries that differ
    in ``--diff`` keys (half only on one side, half newer there), one MerkleSync exchange between
    them in process, every message msgpack-encoded as on the wire: bytes both ways, messages,
    entries shipped, seconds, and the second exchange (identical manifests). Also the seconds to
    open a store and to rebuild the tree from the stored hashes (as after a crash).
(b) Three real node processes (R=3, fsync=always) pre-filled with the same ``--files`` small
    files: start-up to /health (one at a time), RSS, a prefix listing of 10,000 keys among them,
    the nodes' CPU over ``--idle`` seconds at rest (after the first repair pass).
(c) Node 2 takes a few writes and is killed (SIGKILL: its Merkle tree is rebuilt at the next
    start), ``--writes`` small files are written through nodes 0 and 1, node 2 starts again:
    seconds from its start to /health, to a manifest root equal to its peers', and to a local
    copy of every file written meanwhile (its body in its row in node 2's database, read from
    the benchmark; then checked once more by ``?local=1`` reads, untimed), with the load average
    and the CPU the nodes spent; ``--rejoins`` times in the same cluster.
(d) ``p2pstore bench`` 4 KiB PUT/GET against three nodes started empty and three started with
    the ``--files`` manifest, interleaved (``--rounds``): rates and node CPU ms per operation.

A script that prints figures, not a test. MB means 10**6 bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgpack

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_scale import build_db, cpu_seconds, fill_entries, proc_kib, wait  # noqa: E402

from p2pstore.core.merkle import MerkleSync, run_merkle_exchange  # noqa: E402
from p2pstore.launcher import LocalNode, start_all, stop_all  # noqa: E402
from p2pstore.storage.checkpoint import DB_NAME  # noqa: E402
from p2pstore.storage.metadata import MetadataDB  # noqa: E402
from p2pstore.storage.store import LocalStore  # noqa: E402


def encode(m: dict[str, Any]) -> bytes:
    return msgpack.packb(m, use_bin_type=True)


def decode(b: bytes) -> dict[str, Any]:
    return msgpack.unpackb(b, raw=False)


def diverge(path: Path, files: int, diff: int) -> None:
    """Make the database at ``path`` differ in ``diff`` keys: half new, half newer versions."""
    db = MetadataDB(path, fsync="never")
    later = int(time.time() * 1000) + 1
    fresh = [e for e, _ in fill_entries(diff - diff // 2, 64, "other", later)]
    fresh = [dataclasses.replace(e, key=f"diverged/{i:07d}") for i, e in enumerate(fresh)]
    step = max(1, files // max(1, diff // 2))
    newer = [e for i, (e, _) in enumerate(fill_entries(files, 64, "other", later)) if i % step == 0]
    db.apply_batch([(fresh + newer[: diff // 2], {})])
    db.close()


def open_store(path: Path) -> tuple[LocalStore, float]:
    t0 = time.perf_counter()
    store = LocalStore(path, chunk_size=4 << 20, fsync="never")
    return store, time.perf_counter() - t0


def exchange(args: argparse.Namespace, tmp: Path, template: Path) -> None:
    dirs = [tmp / "a", tmp / "b"]
    for d in dirs:
        d.mkdir()
        shutil.copyfile(template, d / DB_NAME)
    diverge(dirs[1] / DB_NAME, args.files, args.diff)
    (a, open_a), (b, _) = open_store(dirs[0]), open_store(dirs[1])
    print(f"open a store of {args.files:,} entries (Merkle tree {a.db.tree_source}): {open_a:.2f}s")
    t0 = time.perf_counter()
    assert a.db.build_merkle() == a.merkle()
    print(f"rebuild the tree from the stored hashes (as after a crash): {time.perf_counter() - t0:.2f}s")
    loop = asyncio.new_event_loop()

    def applier(store: LocalStore):
        return lambda entries: len(loop.run_until_complete(store.apply_entries(entries)))

    t0 = time.perf_counter()
    stats = run_merkle_exchange(MerkleSync(), a, b, applier(a), applier(b), encode, decode)
    took = time.perf_counter() - t0
    same = a.merkle().root() == b.merkle().root()
    print(
        f"Merkle exchange, {args.files:,} entries, {args.diff} differ: {stats.bytes / 1e3:.1f} KB in "
        f"{stats.messages} messages, {stats.entries_sent} entries shipped, {took:.2f}s; roots equal: {same}"
    )
    t0 = time.perf_counter()
    again = run_merkle_exchange(MerkleSync(), a, b, applier(a), applier(b), encode, decode)
    print(
        f"Merkle exchange, identical manifests: {again.bytes} bytes in {again.messages} messages, "
        f"{(time.perf_counter() - t0) * 1e3:.1f} ms"
    )
    for s in (a, b):
        s.close()
    loop.close()


async def put_many(urls: list[str], keys: list[str], concurrency: int) -> None:
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as s:

        async def put(i: int, key: str) -> None:
            for attempt in range(5):  # a 503 while the killed node is not yet known dead: retry
                url = f"{urls[(i + attempt) % len(urls)]}/files/{key}"
                async with sem, s.put(url, data=key.encode() * 4) as r:
                    if r.status == 201:
                        return
                    if r.status != 503 or attempt == 4:
                        raise SystemExit(f"PUT {key}: {r.status} {await r.text()}")

        await asyncio.gather(*(put(i, k) for i, k in enumerate(keys)))


def on_disk(db: Path, keys: list[str]) -> list[str]:
    """The keys whose small body (written as ``key * 4``) is not yet in their manifest row in
    node 2's database, read from another process (what the node itself would serve): a check
    that costs the node nothing, where 10,000 local GETs took it 3-6 s of a loaded machine."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        rows = conn.execute(
            "SELECT key, sha256, data FROM files WHERE key >= ? AND key < ? AND deleted = 0",
            (min(keys), max(keys) + "\0"),
        ).fetchall()
        loose = {sha for key, sha, data in rows if data is None}  # bodies repair stored by name
        if loose:
            marks = ",".join("?" * len(loose))
            sql = f"SELECT sha, data FROM small_chunks WHERE sha IN ({marks})"
            named = dict(conn.execute(sql, list(loose)).fetchall())
        else:
            named = {}
    finally:
        conn.close()
    have = {
        key for key, sha, data in rows if (data if data is not None else named.get(sha)) == key.encode() * 4
    }
    return [k for k in keys if k not in have]


async def missing_locally(url: str, keys: list[str], concurrency: int = 16) -> list[str]:
    """The keys a node does not serve from its own disk with the bytes written."""
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as s:

        async def check(key: str) -> bool:
            async with sem, s.get(f"{url}/files/{key}?local=1") as r:
                return r.status == 200 and await r.read() == key.encode() * 4

        ok = await asyncio.gather(*(check(k) for k in keys))
    return [k for k, good in zip(keys, ok, strict=True) if not good]


def cluster(args: argparse.Namespace, tmp: Path, template: Path) -> None:
    nodes = LocalNode.cluster(tmp / "cluster", 3, {"fsync": "always", "replicas": 3, "write_quorum": 2})
    for node in nodes:
        node.data_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, node.data_dir / DB_NAME)
    try:
        start_all(nodes, timeout=300, one_by_one=True, joined=False, interval=0.02)
        print(f"start-up to /health 200 (one at a time): {[round(n.ready_seconds or 0, 2) for n in nodes]} s")
        print(f"RSS at ready: {[proc_kib(n.pid, 'VmRSS') for n in nodes]} MiB")
        wait(lambda: all(len(n.get_json("/status")["members"]) == 3 for n in nodes), 60, "membership")
        t0 = time.perf_counter()
        page = nodes[0].get_json("/files?prefix=scale/001&limit=10000", timeout=60)
        print(
            f"prefix listing of {len(page['files'])} keys among {args.files:,}: "
            f"{time.perf_counter() - t0:.3f}s"
        )
        took = wait(
            lambda: all(n.get_json("/status", timeout=60)["repair"].get("passes") for n in nodes),
            900,
            "repair",
        )
        print(f"first repair pass done on every node {took:.0f}s after the last start")
        cpu0 = [cpu_seconds(n.pid) or 0.0 for n in nodes]
        time.sleep(args.idle)
        cpu = [
            round(100 * ((cpu_seconds(n.pid) or 0.0) - c) / args.idle, 1)
            for n, c in zip(nodes, cpu0, strict=True)
        ]
        print(f"idle CPU over {args.idle:.0f}s: {cpu} % of one core per node")
        print(
            f"RSS after idling: {[proc_kib(n.pid, 'VmRSS') for n in nodes]} MiB; "
            f"peak {[proc_kib(n.pid, 'VmHWM') for n in nodes]} MiB"
        )

        if not args.rejoin:
            return
        for run in range(args.rejoins):
            rejoin(args, nodes, run)
    finally:
        stop_all(nodes)
        if args.keep_logs:
            for node in nodes:
                shutil.copyfile(node.log_path, Path(args.keep_logs) / node.log_path.name)


def rejoin(args: argparse.Namespace, nodes: list[LocalNode], run: int) -> None:
    """(c) once: node 2 takes a few writes (so its saved Merkle tree is gone, as after any crash
    of a node in use), is killed, ``--writes`` files are written meanwhile, and it starts again."""
    down = nodes[2]
    asyncio.run(put_many([n.url for n in nodes], [f"before-crash-{run}/{i}" for i in range(10)], 4))
    down.kill()
    keys = [f"written-while-down-{run}/{i:06d}" for i in range(args.writes)]
    t0 = time.perf_counter()
    asyncio.run(put_many([nodes[0].url, nodes[1].url], keys, args.concurrency))
    took = time.perf_counter() - t0
    print(f"run {run + 1}: wrote {args.writes:,} small files with node 2 down in {took:.1f}s")
    root = nodes[0].get_json("/status")["manifest"]["root"]
    peers_cpu0 = [cpu_seconds(n.pid) or 0.0 for n in nodes[:2]]
    load0 = os.getloadavg()[0]
    t0 = time.monotonic()
    down.start()
    down.wait_ready(timeout=300)
    ready = time.monotonic() - t0
    synced = whole = None
    while synced is None or whole is None:  # each time taken when its check has answered
        if synced is None and down.get_json("/status", timeout=60)["manifest"]["root"] == root:
            synced = time.monotonic() - t0
        if whole is None and not on_disk(down.data_dir / DB_NAME, keys):
            whole = time.monotonic() - t0
        if time.monotonic() - t0 > 600:
            raise SystemExit("node 2 did not catch up within 600 s")
        time.sleep(0.2)
    cpu2 = cpu_seconds(down.pid)
    peers_cpu = [
        round((cpu_seconds(n.pid) or 0.0) - c, 1) for n, c in zip(nodes[:2], peers_cpu0, strict=True)
    ]
    print(
        f"run {run + 1} (load average {load0:.1f} -> {os.getloadavg()[0]:.1f}): node 2 back: /health after "
        f"{ready:.1f}s, manifest equal after {synced:.1f}s, all {args.writes:,} files on its disk after "
        f"{whole:.1f}s (from its start; {synced - ready:.1f}s and {whole - ready:.1f}s from /health); "
        f"CPU until then: node 2 {cpu2}s (start-up included), nodes 0 and 1 {peers_cpu}s",
        flush=True,
    )
    missing = asyncio.run(missing_locally(down.url, keys))  # and it serves them, from its own disk
    if missing:
        raise SystemExit(f"node 2 does not serve {len(missing)} of the files from its disk")


def settled(nodes: list[LocalNode]) -> None:
    """Wait until every node knows the others and has finished its first repair pass."""
    wait(lambda: all(len(n.get_json("/status")["members"]) == 3 for n in nodes), 60, "membership")
    wait(lambda: all(n.get_json("/status", timeout=60)["repair"].get("passes") for n in nodes), 900, "repair")


def rates(args: argparse.Namespace, tmp: Path, template: Path) -> None:
    """4 KiB PUT and GET rates of ``p2pstore bench`` against three nodes that start empty and
    three that start with the ``--files`` manifest, interleaved ``--rounds`` times."""
    for r in range(args.rounds):
        for label, full in (("empty", False), (f"{args.files:,} files", True)):
            nodes = LocalNode.cluster(
                tmp / f"rates-{r}-{int(full)}", 3, {"fsync": "always", "replicas": 3, "write_quorum": 2}
            )
            for node in nodes:
                node.data_dir.mkdir(parents=True, exist_ok=True)
                if full:
                    shutil.copyfile(template, node.data_dir / DB_NAME)
            try:
                start_all(nodes, timeout=300, one_by_one=True, joined=False, interval=0.02)
                settled(nodes)
                cmd = [
                    sys.executable, "-m", "p2pstore", "bench", "--url", ",".join(n.url for n in nodes),
                    "--pids", ",".join(str(n.pid) for n in nodes), "--phases", "put-4k,get-4k",
                    "--count-4k", str(args.count_4k),
                ]  # fmt: skip
                out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=HERE.parent).stdout
                load = os.getloadavg()[0]
                print(f"--- round {r + 1}, cluster {label} (load average {load:.1f})\n{out.strip()}")
            finally:
                stop_all(nodes)
                shutil.rmtree(tmp / f"rates-{r}-{int(full)}", ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=1_000_000)
    ap.add_argument("--diff", type=int, default=100, help="keys that differ in (a)")
    ap.add_argument("--writes", type=int, default=10_000, help="files written while node 2 is down in (c)")
    ap.add_argument("--idle", type=float, default=30.0, help="seconds of idle CPU measured in (b)")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--only", choices=["exchange", "cluster", "rates"])
    ap.add_argument("--rounds", type=int, default=2, help="interleaved empty/full runs in rates")
    ap.add_argument("--count-4k", type=int, default=2000, help="objects per phase in rates")
    ap.add_argument("--keep-logs", metavar="DIR", help="copy the nodes' logs here at the end")
    ap.add_argument("--no-rejoin", dest="rejoin", action="store_false", help="skip (c)")
    ap.add_argument("--rejoins", type=int, default=1, help="times (c) is run in the same cluster")
    ap.add_argument("--template", metavar="PATH", help="reuse this built manifest (built here if absent)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="p2pstore-merkle-") as t:
        tmp = Path(t)
        template = Path(args.template) if args.template else tmp / "template.sqlite"
        if template.exists():
            print(f"reusing the manifest at {template} ({template.stat().st_size / 1e6:.0f} MB)")
        else:
            took = build_db(template, args.files, 16)
            print(f"built a {args.files:,}-entry manifest in SQLite in {took:.0f}s "
                  f"({template.stat().st_size / 1e6:.0f} MB)")  # fmt: skip
        if args.only in (None, "exchange"):
            exchange(args, tmp, template)
        if args.only in (None, "cluster"):
            cluster(args, tmp, template)
        if args.only in (None, "rates"):
            rates(args, tmp, template)
    return 0


if __name__ == "__main__":
    sys.exit(main())
