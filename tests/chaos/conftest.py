"""Chaos-suite helpers: every run prints its checker summary and where its history is kept."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from p2pstore.chaos.checker import CheckReport
from p2pstore.chaos.history import HistoryWriter
from p2pstore.chaos.nemesis import Nemesis
from p2pstore.chaos.runner import load_under_faults, settle_and_check
from p2pstore.chaos.workload import Workload, WorkloadConfig

CONVERGENCE_BOUND = 60.0  # seconds from "faults stop" to "every file has 3 verified replicas"


@pytest.fixture(autouse=True)
def _needs_node() -> None:
    pytest.importorskip("p2pstore.server")


def run_scenario(
    nemesis: Nemesis,
    tmp_path: Path,
    duration: float,
    faults: Callable[[threading.Event], None],
    workload: WorkloadConfig | None = None,
) -> tuple[CheckReport, HistoryWriter]:
    """Load the cluster for ``duration`` while ``faults`` runs, heal, check; print the verdict."""
    nemesis.wait_members_alive()
    history = HistoryWriter(tmp_path / "history.jsonl")
    wl = Workload(lambda: [n.url for n in nemesis.nodes], history, workload or WorkloadConfig(seed=7))
    asyncio.run(load_under_faults(nemesis, wl, duration, faults))
    report, timings = settle_and_check(nemesis, wl, history, CONVERGENCE_BOUND)
    report.stats["duration"] = timings
    print(f"\n{report.summary()}\n  history: {history.path}")
    for event in nemesis.events:
        print(f"  fault {event.t:7.2f}s {event.action} {event.target} {event.detail}")
    if not report.ok:
        for node in nemesis.nodes:
            print(f"----- {node.name} log tail -----\n{node.log_tail(30)}")
    return report, history
