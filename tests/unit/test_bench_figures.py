"""The benchmark's machine-wide CPU figure: busy share of all CPUs between two readings."""

from __future__ import annotations

from p2pstore.bench.runner import busy_pct, host_cpu_times


def test_busy_share_between_two_readings() -> None:
    assert busy_pct((10.0, 100.0), (16.0, 108.0)) == 75.0
    assert busy_pct(None, (1.0, 2.0)) is None
    assert busy_pct((1.0, 2.0), None) is None
    assert busy_pct((1.0, 2.0), (1.0, 2.0)) is None, "no clock tick between the readings"


def test_this_machine_reports_busy_and_total_seconds() -> None:
    times = host_cpu_times()
    assert times is not None  # Linux: /proc/stat
    busy, total = times
    assert 0 < busy < total
