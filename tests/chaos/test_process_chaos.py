"""Chaos on real node processes: kill -9, SIGSTOP, crash-restart, disk rot and disk loss.

Each test loads a 3-node cluster with concurrent clients, hurts it, heals, and hands the
recorded history to the checker. Bounds: ~20 s of load, 60 s to converge (measured and printed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import random
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from p2pstore.chaos.checker import check
from p2pstore.chaos.history import FinalRead, HistoryWriter, Op
from p2pstore.chaos.nemesis import Nemesis, Schedule
from p2pstore.chaos.runner import final_reads, process_cluster, wait_converged
from p2pstore.chaos.workload import Workload, WorkloadConfig
from p2pstore.launcher import LocalNode
from tests.support.chunks import stored_chunks

from .conftest import CONVERGENCE_BOUND, run_scenario

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def test_kill_pause_restart_under_load_over_mutual_tls(tmp_path: Path) -> None:
    """The same faults with node-to-node traffic over mutual TLS: the same verdict (a node
    killed mid-handshake, or paused holding TLS connections, loses nothing acknowledged)."""
    with process_cluster(tmp_path, 3, tls=True) as nemesis:
        schedule = Schedule(faults=("kill", "pause", "restart"), max_down=2, interval=(0.5, 2.0), seed=11)
        report, _ = run_scenario(nemesis, tmp_path, 15.0, lambda stop: schedule.run(nemesis, 15.0, stop))
        assert report.ok, report.summary()
        assert sum(schedule.counts.values()) >= 3, f"too few faults injected: {schedule.counts}"
        assert report.stats["outcomes"].get("put:ok", 0) >= 20, report.stats["outcomes"]
        assert "mutual TLS" in nemesis.nodes[0].log_text()


def test_kill_pause_restart_under_load(tmp_path: Path) -> None:
    """Random kill -9 / SIGSTOP / restart, up to 2 of 3 replicas hurt at once, for 20 s."""
    with process_cluster(tmp_path, 3) as nemesis:
        schedule = Schedule(faults=("kill", "pause", "restart"), max_down=2, interval=(0.5, 2.0), seed=11)
        report, history = run_scenario(
            nemesis, tmp_path, 20.0, lambda stop: schedule.run(nemesis, 20.0, stop)
        )
        assert report.ok, report.summary()
        assert sum(schedule.counts.values()) >= 3, f"too few faults injected: {schedule.counts}"
        outcomes = report.stats["outcomes"]
        assert outcomes.get("put:ok", 0) >= 20, outcomes

        # The same history, tampered, must fail: a read of bytes nobody wrote, and the newest
        # acknowledged put of a key replaced by an older one in the final reads.
        forged = dataclasses.replace(
            history.ops[-1], id=10**9, op="get", outcome="ok", sha256="0" * 64, etag=None
        )
        assert "corrupt_read" in check([*history.ops, forged], []).kinds()
        newest: dict[str, Op] = {}
        for o in history.ops:
            if o.op != "get" and o.outcome == "ok" and o.version:
                newest[o.key] = max(newest.get(o.key, o), o, key=lambda w: w.version or "")
        for key, top in newest.items():
            older = [
                o
                for o in history.ops
                if o.key == key and o.op == "put" and o.outcome == "ok" and o is not top
            ]
            if top.op == "put" and older:
                stale = FinalRead(key, "n0", older[0].sha256, older[0].version, 200, older[0].sha256)
                assert "lost_write" in check(history.ops, [stale]).kinds()
                break


def test_flipped_bytes_are_never_served(tmp_path: Path) -> None:
    """Flip a byte in a random chunk every 0.3 s under load (chunk files, chunk records in segment
    files, small chunks kept in SQLite): every read verifies, so no wrong byte is served; the
    scrubber repairs the rot."""
    flags = {"scrub-rate": "4MiB", "chunk-size": "128KiB"}
    with process_cluster(tmp_path, 3, flags) as nemesis:
        flips: list[str] = []

        def rot(stop: threading.Event) -> None:
            rng = random.Random(5)
            while not stop.wait(0.3):
                node = rng.choice(nemesis.nodes)
                done = nemesis.flip_bytes(node, rng)
                if done is not None:
                    flips.append(f"{node.name}:{done}")

        # Values of 1 KiB-300 KiB: small ones live in SQLite, those up to 128 KiB (sent whole)
        # are segment records, larger ones span 128 KiB chunk files.
        wl = WorkloadConfig(seed=5, put_weight=0.3, get_weight=0.65, delete_weight=0.05, max_size=300 * 1024)
        report, _ = run_scenario(nemesis, tmp_path, 15.0, rot, wl)
        kinds_flipped = {f.split(":")[1].split()[0] for f in flips}
        assert len(flips) >= 10 and kinds_flipped == {"file", "segment", "db"}, flips
        assert not report.kinds() & {"corrupt_read", "lost_write"}, report.summary()
        assert report.ok, report.summary()

        # Rot left on disk is found and repaired by the scrubber (measured, printed).
        t = time.monotonic()
        bad = _corrupt_chunks(nemesis)
        while bad and time.monotonic() - t < 30:
            time.sleep(1)
            bad = _corrupt_chunks(nemesis)
        left = f"{time.monotonic() - t:.1f}s: {len(bad)} {bad[:6]}"
        print(f"  {len(flips)} flips; corrupt chunks left after {left}")


def _corrupt_chunks(nemesis: Nemesis) -> list[str]:
    """Chunks on the nodes' disks (files and segment records) whose bytes are not their name's."""
    bad = []
    for node in nemesis.nodes:
        for sha, where in stored_chunks(node.data_dir).items():
            try:
                with open(where.path, "rb") as fh:
                    fh.seek(where.offset)
                    data = fh.read(where.length)
            except FileNotFoundError:  # repaired, collected or compacted meanwhile
                continue
            if hashlib.sha256(data).hexdigest() != sha:
                bad.append(f"{node.name}:{'segment' if where.in_segment else 'file'}:{sha[:12]}")
    return bad


def test_wiped_node_refills(tmp_path: Path) -> None:
    """Disk loss on one of 3 nodes (new, empty data dir): it refills every file by itself."""
    with process_cluster(tmp_path, 3, {"dead-after": "3"}) as nemesis:
        nemesis.wait_members_alive()
        history = HistoryWriter(tmp_path / "history.jsonl")
        only_puts = WorkloadConfig(seed=3, keys=24, put_weight=1, get_weight=0, delete_weight=0)
        wl = Workload(lambda: [n.url for n in nemesis.nodes], history, only_puts)
        asyncio.run(wl.run(4.0))
        victim = nemesis.nodes[1]
        t = time.monotonic()
        nemesis.wipe(victim, keep_identity=False)
        nemesis.wait_members_alive(timeout=30)
        conv = wait_converged(nemesis, wl.config.key_prefix, CONVERGENCE_BOUND)
        refill = time.monotonic() - t
        live = sorted({o.key for o in history.ops if o.op == "put" and o.outcome == "ok"})
        missing = [k for k in live if _local_sha(victim, k) is None]
        report = check(history.ops, final_reads(nemesis, wl.keys), conv)
        print(f"\n{report.summary()}")
        print(
            f"  wiped {victim.name}: refilled {len(live) - len(missing)}/{len(live)} files in {refill:.1f}s"
        )
        assert report.ok, report.summary()
        assert not missing, f"{victim.name} lacks local copies of {missing[:5]}"


def _local_sha(node: LocalNode, key: str) -> str | None:
    """sha256 of the node's own copy (``?local=1``), or None when it has none."""
    try:
        with urllib.request.urlopen(f"{node.url}/files/{key}?local=1", timeout=10) as resp:
            return hashlib.sha256(resp.read()).hexdigest()
    except urllib.error.HTTPError:
        return None
