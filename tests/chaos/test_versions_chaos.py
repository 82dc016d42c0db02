"""Chaos on a versioned folder: kill -9, SIGSTOP and restarts under concurrent writes and
deletes; afterwards every node lists every acknowledged version with its own bytes
(p2pstore/chaos/versions.py), the usual checker passes, and a deleted-then-restored file comes
back byte-exact."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from p2pstore.chaos.nemesis import Schedule
from p2pstore.chaos.runner import process_cluster
from p2pstore.chaos.versions import ListedVersion, check_versions, final_versions
from p2pstore.chaos.workload import WorkloadConfig
from tests.support.processes import wait_for

from .conftest import CONVERGENCE_BOUND, run_scenario

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def call(url: str, method: str = "GET", body: bytes | None = None) -> bytes:
    with urllib.request.urlopen(urllib.request.Request(url, data=body, method=method), timeout=15) as resp:
        return resp.read()


def test_versions_survive_kill_pause_restart(tmp_path: Path) -> None:
    with process_cluster(tmp_path, 3) as nemesis:
        nodes = nemesis.nodes
        call(f"{nodes[0].url}/versioning/chaos", "PUT", json.dumps({"status": "Enabled"}).encode())
        wait_for(lambda: all(b"Enabled" in call(f"{n.url}/versioning/chaos") for n in nodes), 15)
        schedule = Schedule(faults=("kill", "pause", "restart"), max_down=2, interval=(0.5, 2.0), seed=5)
        workload = WorkloadConfig(seed=13, keys=6, max_size=200_000, put_weight=0.5, get_weight=0.35,
                                  delete_weight=0.15)  # fmt: skip
        report, history = run_scenario(
            nemesis, tmp_path, 15.0, lambda stop: schedule.run(nemesis, 15.0, stop), workload
        )
        assert report.ok, report.summary()
        assert sum(schedule.counts.values()) >= 3, f"too few faults injected: {schedule.counts}"
        keys = [f"chaos/k{i:02d}" for i in range(6)]
        gateways = [(n.name, n.url) for n in nodes]

        def listings() -> list[ListedVersion]:
            return final_versions(gateways, keys)

        def agree() -> bool:
            seen = listings()
            by_gateway = {g: sorted((v.key, v.vid) for v in seen if v.gateway == g) for g, _ in gateways}
            return len({tuple(v) for v in by_gateway.values()}) == 1 and all(v.error is None for v in seen)

        wait_for(agree, CONVERGENCE_BOUND)
        listed = listings()
        violations, stats = check_versions(history.ops, listed)
        print(f"  versions: {stats}")
        assert not violations, "\n".join(map(str, violations[:20]))
        assert stats["acknowledged_writes"] >= 20 and stats["versions_listed"] >= stats["acknowledged_writes"]

        # the checker catches a lost version and bytes of another version
        acked = {o.version for o in history.ops if o.op == "put" and o.outcome == "ok"}
        i = next(i for i, v in enumerate(listed) if v.vid in acked)
        swapped = dataclasses.replace(listed[i], served="0" * 64)
        found = check_versions(history.ops, [*listed[:i], swapped, *listed[i + 1 :]])[0]
        assert {v.kind for v in found} == {"version_corrupt", "version_bytes_of_another"}
        found = check_versions(history.ops, [*listed[:i], *listed[i + 1 :]])[0]
        assert {v.kind for v in found} == {"lost_version", "divergent_versions"}

        # delete then restore: the oldest acknowledged version of a key comes back byte-exact
        key = keys[0]
        oldest = next(v for v in reversed(listed) if v.key == key and not v.marker and v.gateway == "n0")
        try:
            call(f"{nodes[1].url}/files/{key}", "DELETE")
        except urllib.error.HTTPError as exc:
            assert exc.code == 404  # already deleted: its current version is a delete marker
        call(f"{nodes[2].url}/restore/{key}?version={urllib.parse.quote(oldest.vid)}", "POST")
        for n in nodes:
            assert hashlib.sha256(call(f"{n.url}/files/{key}")).hexdigest() == oldest.sha256
