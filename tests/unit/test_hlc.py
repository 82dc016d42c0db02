"""Hybrid logical clock: versions always increase and sort in causal order."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from p2pstore.core.hlc import HybridLogicalClock, is_version, make_version, parse_version


@given(st.lists(st.integers(min_value=0, max_value=10**12), min_size=1, max_size=50))
def test_versions_strictly_increase_even_if_wall_clock_goes_back(walls: list[int]) -> None:
    clock = HybridLogicalClock("n1")
    versions = [clock.now(w) for w in walls]
    assert versions == sorted(versions)
    assert len(set(versions)) == len(versions)


def test_observe_moves_past_remote_versions() -> None:
    a, b = HybridLogicalClock("a"), HybridLogicalClock("b")
    remote = b.now(5_000)
    a.observe(remote)
    assert a.now(1_000) > remote


def test_parse_roundtrip_and_rejects_junk() -> None:
    v = make_version(123, 4, "node")
    assert parse_version(v) == (123, 4, "node")
    assert is_version(v)
    for junk in ["", "1.2.3", None, 5, "abc.def.ghi"]:
        assert not is_version(junk)
