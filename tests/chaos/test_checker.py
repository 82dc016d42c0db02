"""The checker on hand-written histories: good ones pass, each kind of anomaly is reported.

A checker that cannot fail proves nothing, so every rule has a history that breaks it.
"""

from __future__ import annotations

from pathlib import Path

from p2pstore.chaos.checker import check
from p2pstore.chaos.history import FinalRead, HistoryWriter, Op, load_history

A, B, C, X = "a" * 64, "b" * 64, "c" * 64, "f" * 64
K = "chaos/k"


def put(i: int, start: float, end: float, sha: str, outcome: str = "ok", version: str | None = None) -> Op:
    return Op(i, 0, "put", K, start, end, outcome, sha, version if outcome == "ok" else None)  # type: ignore[arg-type]


def delete(i: int, start: float, end: float, outcome: str = "ok", version: str | None = None) -> Op:
    return Op(i, 0, "delete", K, start, end, outcome, None, version if outcome == "ok" else None)  # type: ignore[arg-type]


def get(
    i: int, start: float, end: float, sha: str | None, version: str | None = None, etag: str | None = None
) -> Op:
    return Op(i, 1, "get", K, start, end, "ok", sha, version, etag=etag if etag else sha)


def final(sha: str | None, version: str | None = None, gateway: str = "n0") -> FinalRead:
    return FinalRead(K, gateway, sha, version, 200 if sha else 404, sha)


def kinds(ops: list[Op], finals: list[FinalRead], convergence: dict | None = None) -> set[str]:
    return check(ops, finals, convergence).kinds()


# ---- histories that must pass ----


def test_sequential_overwrites_read_newest() -> None:
    ops = [put(1, 0, 1, A, version="v1"), get(2, 1.5, 2, A, "v1"), put(3, 3, 4, B, version="v2")]
    report = check(ops, [final(B, "v2"), final(B, "v2", "n1")])
    assert report.ok, report.summary()
    assert report.stats["reads_with_data"] == 1


def test_stale_read_during_faults_is_allowed_and_counted() -> None:
    ops = [put(1, 0, 1, A, version="v1"), put(2, 2, 3, B, version="v2"), get(3, 4, 5, A, "v1")]
    report = check(ops, [final(B, "v2")])
    assert report.ok, report.summary()
    assert report.stats["stale_reads"] == 1


def test_unknown_write_may_win_or_vanish() -> None:
    ops = [put(1, 0, 1, A, version="v1"), put(2, 2, 7, B, outcome="unknown")]
    assert kinds(ops, [final(B, "v9")]) == set()
    assert kinds(ops, [final(A, "v1")]) == set()


def test_read_of_in_flight_write_is_fine() -> None:
    ops = [put(1, 0, 5, A, version="v1"), get(2, 1, 2, A, "v1")]
    assert kinds(ops, [final(A, "v1")]) == set()


def test_acknowledged_delete_reads_absent() -> None:
    ops = [put(1, 0, 1, A, version="v1"), delete(2, 2, 3, version="v2")]
    assert kinds(ops, [final(None)]) == set()


def test_concurrent_writes_resolve_by_version_not_by_end_time() -> None:
    # Overlapping puts: LWW picks the higher version even though it was acknowledged first.
    ops = [put(1, 0, 2, A, version="v5"), put(2, 0.5, 3, B, version="v4")]
    assert kinds(ops, [final(A, "v5")]) == set()


def test_refused_write_is_never_required() -> None:
    ops = [put(1, 0, 1, A, outcome="fail")]
    assert kinds(ops, [final(None)]) == set()


# ---- histories that must fail ----


def test_lost_acknowledged_write_absent() -> None:
    ops = [put(1, 0, 1, A, version="v1")]
    assert "lost_write" in kinds(ops, [final(None)])


def test_lost_write_older_version_served() -> None:
    ops = [put(1, 0, 1, A, version="v1"), put(2, 2, 3, B, version="v2")]
    assert "lost_write" in kinds(ops, [final(A, "v1")])


def test_older_value_without_version_is_lost_write() -> None:
    ops = [put(1, 0, 1, A, version="v1"), put(2, 2, 3, B, version="v2")]
    assert "lost_write" in kinds(ops, [FinalRead(K, "n0", A, None, 200, A)])


def test_deleted_data_resurrected() -> None:
    ops = [put(1, 0, 1, A, version="v1"), delete(2, 2, 3, version="v2")]
    assert "resurrected" in kinds(ops, [FinalRead(K, "n0", A, None, 200, A)])


def test_corrupt_bytes_during_run() -> None:
    ops = [put(1, 0, 1, A, version="v1"), get(2, 2, 3, X, "v1", etag=A)]
    assert "corrupt_read" in kinds(ops, [final(A, "v1")])


def test_read_of_bytes_nobody_wrote() -> None:
    ops = [put(1, 0, 1, A, version="v1"), get(2, 2, 3, C, "v1")]
    assert "corrupt_read" in kinds(ops, [final(A, "v1")])


def test_read_from_the_future() -> None:
    ops = [get(1, 0, 1, A, "v1"), put(2, 2, 3, A, version="v1")]
    assert "future_read" in kinds(ops, [final(A, "v1")])


def test_refused_write_visible() -> None:
    ops = [put(1, 0, 1, A, version="v1"), put(2, 2, 3, B, outcome="fail"), get(3, 4, 5, B, "v2")]
    report = check(ops, [final(B, "v2")])
    assert {"phantom_read", "phantom_write"} <= report.kinds(), report.summary()


def test_final_reads_disagree() -> None:
    ops = [put(1, 0, 1, A, version="v1"), put(2, 1.5, 9, B, outcome="unknown")]
    assert "divergent" in kinds(ops, [final(A, "v1", "n0"), final(B, "v2", "n1")])


def test_final_read_failure_and_missing_read() -> None:
    ops = [put(1, 0, 1, A, version="v1"), Op(2, 0, "put", "chaos/other", 0, 1, "ok", B, "v1")]
    report = check(ops, [FinalRead(K, "n0", None, error="HTTP 503")])
    assert {"final_read_failed", "missing_final_read"} <= report.kinds(), report.summary()


def test_not_converged() -> None:
    ops = [put(1, 0, 1, A, version="v1")]
    conv = {"converged": False, "seconds": 60, "bound": 60, "lagging": ["chaos/k: 2/3 verified"]}
    report = check(ops, [final(A, "v1")], conv)
    assert report.kinds() == {"not_converged"}
    assert "FAIL" in report.summary() and "not_converged" in report.summary()


def test_history_round_trips_through_jsonl(tmp_path: Path) -> None:
    ops = [put(1, 0, 1, A, version="v1"), delete(2, 2, 3, version="v2"), get(3, 4, 5, None)]
    writer = HistoryWriter(tmp_path / "h.jsonl")
    for op in ops:
        writer.record(op)
    writer.close()
    assert load_history(tmp_path / "h.jsonl") == ops


def test_two_leaders_in_one_term_is_reported() -> None:
    from p2pstore.chaos.checker import check

    ok = check([], leaders=[(1, "a"), (1, "a"), (2, "b"), (3, "a")])
    assert ok.ok and ok.stats["terms_observed"] == 3
    split = check([], leaders=[(1, "a"), (2, "b"), (2, "c")])
    assert not split.ok and "two_leaders" in split.kinds()


def test_final_reads_are_taken_again_when_the_state_moved_under_them(monkeypatch, tmp_path: Path) -> None:
    """A late write landing during the final reads (the listings before and after differ) makes
    the runner settle and read again; a state that held still is read once."""
    from types import SimpleNamespace

    from p2pstore.chaos import runner

    old, new = {"n0": {K: ("v1", A)}}, {"n0": {K: ("v2", B)}}
    states = iter([old, new, new, new])  # before/after round 1 differ; round 2 holds still
    reads: list[int] = []

    def fake_final_reads(nemesis: object, keys: list[str]) -> list[FinalRead]:
        reads.append(1)
        sha = A if len(reads) == 1 else B
        return [FinalRead(K, "n0", sha, "v1" if sha == A else "v2", 200, sha)]

    monkeypatch.setattr(runner, "wait_converged", lambda *a, **k: {"converged": True, "seconds": 0.0})
    monkeypatch.setattr(runner, "cluster_state", lambda nodes, prefix: next(states))
    monkeypatch.setattr(runner, "final_reads", fake_final_reads)
    monkeypatch.setattr(runner, "poll_leaders", lambda nemesis, seen: None)
    nemesis = SimpleNamespace(nodes=[], wait_members_alive=lambda timeout: None)
    workload = SimpleNamespace(config=SimpleNamespace(key_prefix="chaos/"), keys=[K])
    history = HistoryWriter(tmp_path / "h.jsonl")
    history.record(put(1, 0.0, 1.0, B, version="v2"))
    report, timings = runner.settle_and_check(nemesis, workload, history, 10.0)  # type: ignore[arg-type]
    assert len(reads) == 2 and timings["final_read_rounds"] == 2
    assert report.ok, report.summary()
