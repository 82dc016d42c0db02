"""Glue for a whole chaos run: start a cluster, load it while the nemesis strikes, heal, check.

Used by the pytest chaos suite and by ``p2pstore chaos``. Each phase is its own function so a
test can swap in a scripted fault sequence instead of the random schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..cluster.tls import make_cluster_certs
from ..launcher import LocalNode, http_json, reap_all, start_all
from .checker import CheckReport, check
from .flags import DEFAULT_NODE_FLAGS
from .history import FinalRead, HistoryWriter
from .nemesis import Nemesis, Schedule
from .workload import Workload, WorkloadConfig

FINAL_READ_ROUNDS = 3  # settle-and-read attempts while late writes keep changing the state


@dataclass
class ChaosConfig:
    nodes: int = 3
    duration: float = 20.0
    backend: str = "processes"
    seed: int | None = None
    max_down: int | None = None  # default: 1 for 3 nodes, 2 for 5 or more (never all replicas)
    faults: tuple[str, ...] | None = None
    interval: tuple[float, float] = (1.0, 3.0)
    flip_every: float = 0.0
    convergence_bound: float = 60.0
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    node_flags: dict[str, str] = field(default_factory=dict)
    replicas: int = 3
    tls: bool = False  # node-to-node mutual TLS (processes backend); else signed plain HTTP

    def resolved_max_down(self) -> int:
        if self.max_down is not None:
            return self.max_down
        return 1 if self.nodes <= 3 else min(2, self.replicas - 1)


@contextlib.contextmanager
def process_cluster(
    workdir: Path, n: int, flags: dict[str, str] | None = None, tls: bool = False
) -> Iterator[Nemesis]:
    """``n`` loopback node processes (node 0 seeds the rest) under a process nemesis; ``tls``:
    their node-to-node traffic is mutual TLS (a CA and certificates made in ``workdir/certs``)."""
    secret = f"chaos-{os.getpid()}-{time.monotonic_ns()}"
    certs = workdir / "certs" if tls else None
    if certs is not None:
        make_cluster_certs(certs, n)
    nodes = LocalNode.cluster(workdir, n, {**DEFAULT_NODE_FLAGS, "cluster-secret": secret, **(flags or {})},
                              name="n", tls=certs)  # fmt: skip
    nemesis = Nemesis(nodes)
    try:
        start_all(nodes, timeout=30.0)
        yield nemesis
    finally:
        nemesis.close()


@contextlib.contextmanager
def open_cluster(cfg: ChaosConfig, workdir: Path) -> Iterator[Nemesis]:
    if cfg.backend == "processes":
        with process_cluster(workdir, cfg.nodes, cfg.node_flags, cfg.tls) as nemesis:
            yield nemesis
    elif cfg.backend == "netns":
        from .netns import netns_cluster

        with netns_cluster(workdir, cfg.nodes, cfg.node_flags) as nemesis:
            yield nemesis
    else:
        raise ValueError(f"unknown backend {cfg.backend!r} (processes or netns)")


def poll_leaders(nemesis: Nemesis, seen: list[tuple[int, str]]) -> None:
    """Record every reachable node's (term, leader) from /status."""
    for node in list(nemesis.nodes):
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError, AttributeError):
            status, body = http_json(node.url + "/status", timeout=1.0)
            if status == 200 and body.get("leader"):
                seen.append((int(body["term"]), str(body["leader"])))


def observe_leaders(nemesis: Nemesis, stop: threading.Event, seen: list[tuple[int, str]]) -> None:
    """Poll (term, leader) pairs until ``stop``, for the one-leader-per-term check."""
    while not stop.is_set():
        poll_leaders(nemesis, seen)
        stop.wait(0.3)


async def load_under_faults(
    nemesis: Nemesis,
    workload: Workload,
    duration: float,
    faults: Callable[[threading.Event], None],
    leaders: list[tuple[int, str]] | None = None,
) -> None:
    """Run the workload for ``duration`` while ``faults(stop)`` runs in a thread; heal after.

    Meanwhile (term, leader) pairs are collected into ``leaders`` for the one-leader-per-term check.
    """
    stop = threading.Event()
    workload.t0 = nemesis.t0 = time.monotonic()  # one clock for the history and the fault log
    fault_task = asyncio.create_task(asyncio.to_thread(faults, stop))
    observer = asyncio.create_task(
        asyncio.to_thread(observe_leaders, nemesis, stop, leaders if leaders is not None else [])
    )
    try:
        await workload.run(duration)
    finally:
        stop.set()
        try:
            await fault_task
        finally:  # heal even when a fault could not be injected
            await observer
            await asyncio.to_thread(nemesis.heal)


def wait_converged(
    nemesis: Nemesis, prefix: str, bound: float, r: int = 3, interval: float = 0.5
) -> dict[str, Any]:
    """Poll until every node lists the same manifest and every file has R verified replicas."""
    t0 = time.monotonic()
    lagging: list[str] = ["(not polled yet)"]
    files = 0
    while True:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            lagging, files = _lagging(nemesis.nodes, prefix, r)
            if not lagging:
                return {
                    "converged": True,
                    "seconds": round(time.monotonic() - t0, 2),
                    "bound": bound,
                    "files": files,
                    "r": r,
                    "lagging": [],
                }
        if time.monotonic() - t0 > bound:
            return {
                "converged": False,
                "seconds": round(time.monotonic() - t0, 2),
                "bound": bound,
                "files": files,
                "r": r,
                "lagging": lagging[:20],
            }
        time.sleep(interval)


def _listing(node: LocalNode, prefix: str, long: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    after = ""
    while True:
        q = urllib.parse.urlencode({"prefix": prefix, "after": after, "limit": 1000, "long": int(long)})
        status, body = http_json(f"{node.url}/files?{q}", timeout=10.0)
        if status != 200:
            raise OSError(f"{node.name}: listing HTTP {status}")
        out += body["files"]
        if not body.get("next"):
            return out
        after = body["next"]


def cluster_state(nodes: list[LocalNode], prefix: str) -> dict[str, dict[str, tuple[str, str]]]:
    """Every node's listing: {node: {key: (version, sha256)}}."""
    return {
        n.name: {f["key"]: (f["version"], f["sha256"]) for f in _listing(n, prefix, False)} for n in nodes
    }


def _lagging(nodes: list[LocalNode], prefix: str, r: int) -> tuple[list[str], int]:
    """What still differs: per-node manifest disagreements, then files short of R verified copies."""
    views = cluster_state(nodes, prefix)
    reference = next(iter(views.values()))
    lag = [
        f"{name} disagrees on {sorted(set(v.items()) ^ set(reference.items()))[:3]}"
        for name, v in views.items()
        if v != reference
    ]
    if lag:
        return lag, len(reference)
    want = min(r, len(nodes))
    for f in _listing(nodes[0], prefix, True):
        verified = sum(1 for rep in f.get("replicas", []) if rep.get("verified"))
        if verified < want:
            lag.append(f"{f['key']}: {verified}/{want} verified")
    return lag, len(reference)


def final_reads(nemesis: Nemesis, keys: list[str]) -> list[FinalRead]:
    """Read every key through every node (gateway reads, verified bytes)."""
    out: list[FinalRead] = []
    for node in nemesis.nodes:
        for key in keys:
            out.append(read_once(node, key))
    return out


def read_once(node: LocalNode, key: str, timeout: float = 10.0) -> FinalRead:
    url = f"{node.url}/files/{urllib.parse.quote(key)}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = resp.read()
            etag = (resp.headers.get("ETag") or "").strip('W/"') or None
            return FinalRead(
                key,
                node.name,
                etag,
                resp.headers.get("X-P2PStore-Version"),
                resp.status,
                hashlib.sha256(body).hexdigest(),
            )
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return FinalRead(key, node.name, None, None, 404)
        return FinalRead(key, node.name, None, None, exc.code, error=f"HTTP {exc.code}: {exc.read()[:200]!r}")
    except (OSError, ValueError) as exc:
        return FinalRead(key, node.name, None, None, None, error=f"{type(exc).__name__}: {exc}")


@dataclass
class ChaosResult:
    report: CheckReport
    history_path: Path
    timings: dict[str, float]
    events: list[Any]


def _state_or_none(nodes: list[LocalNode], prefix: str) -> dict[str, dict[str, tuple[str, str]]] | None:
    try:
        return cluster_state(nodes, prefix)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def settle_and_check(
    nemesis: Nemesis,
    workload: Workload,
    history: HistoryWriter,
    bound: float,
    r: int = 3,
    leaders: list[tuple[int, str]] | None = None,
) -> tuple[CheckReport, dict[str, float]]:
    """After the faults: wait for membership and convergence, read everything, run the checker."""
    timings: dict[str, float] = {}
    t = time.monotonic()
    with contextlib.suppress(TimeoutError):  # convergence below reports it
        nemesis.wait_members_alive(timeout=min(bound, 30.0))
    timings["members_alive_s"] = round(time.monotonic() - t, 2)
    # A write whose outcome was unknown may still land after convergence (its commit delayed by
    # the faults, e.g. retransmitted once a partition heals). Final reads are judged against a
    # state that held still while they ran: if the listings changed meanwhile, settle and read again.
    prefix = workload.config.key_prefix
    for rounds in range(1, FINAL_READ_ROUNDS + 1):
        convergence = wait_converged(nemesis, prefix, bound, r)
        timings["convergence_s"] = convergence["seconds"]
        before = _state_or_none(nemesis.nodes, prefix)
        finals = final_reads(nemesis, workload.keys)
        after = _state_or_none(nemesis.nodes, prefix)
        timings["final_read_rounds"] = rounds
        if before is not None and before == after:
            break
        print(f"  the cluster's state changed during the final reads (round {rounds}): settling again")
    history.close()
    leaders = list(leaders or [])
    poll_leaders(nemesis, leaders)
    report = check(history.ops, finals, convergence, leaders)
    return report, timings


def run_chaos(cfg: ChaosConfig, workdir: Path) -> ChaosResult:
    """One full randomized run; the history is kept in ``workdir/history.jsonl``."""
    workdir.mkdir(parents=True, exist_ok=True)
    history_path = workdir / "history.jsonl"
    history = HistoryWriter(history_path)
    faults = cfg.faults or (
        ("kill", "pause", "restart", "partition") if cfg.backend == "netns" else ("kill", "pause", "restart")
    )
    schedule = Schedule(
        faults=faults,
        max_down=cfg.resolved_max_down(),
        interval=cfg.interval,
        flip_every=cfg.flip_every,
        seed=cfg.seed,
    )
    t0 = time.monotonic()
    try:
        with open_cluster(cfg, workdir) as nemesis:
            timings = {"startup_s": round(time.monotonic() - t0, 2)}
            nemesis.wait_members_alive()
            workload = Workload(lambda: [n.url for n in nemesis.nodes], history, cfg.workload)
            t = time.monotonic()
            leaders: list[tuple[int, str]] = []
            asyncio.run(
                load_under_faults(
                    nemesis,
                    workload,
                    cfg.duration,
                    lambda stop: schedule.run(nemesis, cfg.duration, stop),
                    leaders,
                )
            )
            timings["load_s"] = round(time.monotonic() - t, 2)
            report, more = settle_and_check(
                nemesis, workload, history, cfg.convergence_bound, cfg.replicas, leaders
            )
            timings.update(more)
            timings["total_s"] = round(time.monotonic() - t0, 2)
            report.stats["faults"] = dict(schedule.counts)
            report.stats["duration"] = timings
            return ChaosResult(report, history_path, timings, list(nemesis.events))
    finally:
        history.close()
        reap_all()
