"""The status page's sans-I/O parts: the activity ring (core/series.py) and the warnings and
re-sync sentences (core/health.py)."""

from __future__ import annotations

import pytest

from p2pstore.core.health import cluster_warnings, human_bytes, human_seconds, repair_sentence
from p2pstore.core.series import Series


def counters(requests: float, bytes_in: float = 0, repair: float = 0) -> dict[str, float]:
    return {"requests": requests, "bytes_in": bytes_in, "bytes_out": 0, "repair_bytes": repair}


def test_series_turns_counters_into_rates_and_keeps_only_the_last_samples() -> None:
    s = Series(capacity=3)
    for i, total in enumerate([0, 10, 30, 60, 100]):
        s.add(1000.0 + i, counters(total, bytes_in=total * 1000), {"repair_left_files": i})
    r = s.rates()
    assert r["t"] == [1002.0, 1003.0, 1004.0]  # three rates from the last four samples
    assert r["requests"] == [20.0, 30.0, 40.0]
    assert r["bytes_in"] == [20000.0, 30000.0, 40000.0]
    assert r["repair_left_files"] == [2.0, 3.0, 4.0]
    assert s.recent_rate("requests", window=2) == 35.0
    assert s.totals()["requests"] == 100.0


def test_series_ignores_time_going_back_and_counts_a_reset_as_zero() -> None:
    s = Series(capacity=10)
    s.add(10.0, counters(50), {})
    s.add(9.0, counters(70), {})  # clock stepped back: ignored
    s.add(12.0, counters(10), {})  # counters reset (a restart): no negative rate
    s.add(13.0, counters(13), {})
    assert s.rates()["t"] == [12.0, 13.0]
    assert s.rates()["requests"] == [0.0, 3.0]
    with pytest.raises(ValueError):
        Series(capacity=1)


def test_human_units() -> None:
    assert human_bytes(999) == "999 B"
    assert human_bytes(1_234_000_000) == "1.2 GB"
    assert human_bytes(340_000_000_000) == "340 GB"
    assert human_seconds(40.2) == "40 s"
    assert human_seconds(600) == "10 min"
    assert human_seconds(3900) == "65 min"
    assert human_seconds(7500) == "2 h 5 min"


def test_repair_sentence_in_words() -> None:
    running = {"running": True, "bytes_to_copy": 3_400_000_000, "pass_copied": 1_200_000_000, "queue": 12}
    assert repair_sentence("node3", running, rate=55_000_000) == (
        "re-syncing node3: 1.2 GB of 3.4 GB (12 files to go), 40 s left"
    )
    assert repair_sentence("node3", running, rate=0).endswith("estimating the time left")
    assert repair_sentence("node3", {**running, "running": False}, rate=1) is None
    assert repair_sentence("node3", {"running": True, "bytes_to_copy": 0, "queue": 0}, rate=1) is None


def member(node_id: str, state: str, since: float = 0.0) -> dict:
    return {"id": node_id, "state": state, "last_change": since, "self": False}


def healthy(node_id: str, **extra: object) -> dict:
    return {"node_id": node_id, "ok": True, "disk": {"total": 100e9, "free": 50e9, "used": 50e9},
            "min_free_bytes": 64 << 20, "repair": {"queue": 0}, "security_warning": None,
            "join_error": None, **extra}  # fmt: skip


def kinds(warnings: list[dict]) -> list[tuple[str, str | None]]:
    return [(w["kind"], w["node"]) for w in warnings]


def test_a_healthy_cluster_has_no_warnings() -> None:
    members = [member("n1", "alive"), member("n2", "alive")]
    assert cluster_warnings(members, [healthy("n1"), healthy("n2")], now=100.0) == []


def test_each_warning_says_what_and_where() -> None:
    members = [member("n1", "alive"), member("n2", "dead", since=60.0), member("n3", "alive"),
               member("n4", "suspect", since=95.0), member("n5", "alive")]  # fmt: skip
    summaries = [
        healthy("n1", security_warning="plain", repair={"queue": 7}),
        {"node_id": "n2", "ok": False, "error": "dead", "status": None},
        {"node_id": "n3", "ok": False, "error": "n3: wrong secret", "status": 401},
        {"node_id": "n4", "ok": False, "error": "timeout", "status": None},
        healthy("n5", disk={"total": 100e9, "free": 3e9, "used": 97e9}, join_error="refused by peers: x"),
    ]
    w = cluster_warnings(members, summaries, now=100.0)
    assert kinds(w) == [
        ("unreachable", "n2"),
        ("refused", "n3"),
        ("refused", "n5"),
        ("unreachable", "n4"),
        ("disk", "n5"),
        ("under-replicated", None),
        ("plain", None),
    ]
    text = {(x["kind"], x["node"]): x["text"] for x in w}
    assert "down for 40 s" in text[("unreachable", "n2")]
    assert "wrong cluster secret or certificate" in text[("refused", "n3")]
    assert "3.0 GB free of 100 GB" in text[("disk", "n5")]
    assert "7 files under-replicated" in text[("under-replicated", None)]
    assert "n1" in text[("plain", None)]


def test_a_full_disk_is_danger_an_almost_full_one_a_warning() -> None:
    floor = 64 << 20
    full = healthy("n1", disk={"total": 1e12, "free": floor - 1, "used": 1e12})
    near = healthy("n2", disk={"total": 1e12, "free": 2 * floor - 1, "used": 1e12})
    roomy = healthy("n3", disk={"total": 1e12, "free": 60e9, "used": 940e9})
    w = cluster_warnings([], [full, near, roomy], now=0.0)
    got = [(x["kind"], x["node"], x["level"]) for x in w]
    assert got == [("disk", "n1", "danger"), ("disk", "n2", "warning")]
    assert w[0]["text"].startswith("disk full on n1")
