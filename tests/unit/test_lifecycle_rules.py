"""Lifecycle decisions (core/lifecycle.py): which versions a rule names, at which time."""

from __future__ import annotations

import pytest

from p2pstore.core.lifecycle import DAY, Action, Rule, Version, decide, dumps, loads

NOW = 1_000 * DAY


def v(vid: str, age_days: float, marker: bool = False) -> Version:
    return Version(vid, NOW - age_days * DAY, marker)


CASES = [
    # (rule, versions newest first, expected actions)
    (Rule("e", expiration_days=30), [v("c", 31)], [Action("expire", "k")]),
    (Rule("e", expiration_days=30), [v("c", 29)], []),
    (Rule("e", expiration_days=30), [v("m", 99, marker=True), v("o", 100)], []),  # already deleted
    (Rule("e", expiration_days=30, enabled=False), [v("c", 31)], []),
    (Rule("e", expiration_days=30, prefix="logs/"), [v("c", 31)], []),
    (Rule("d", expired_object_delete_marker=True), [v("m", 1, marker=True)], [Action("remove", "k", "m")]),
    (Rule("d", expired_object_delete_marker=True), [v("m", 1, marker=True), v("o", 2)], []),
    # noncurrent age counts from the successor's time, the newest N noncurrent are kept
    (Rule("n", noncurrent_days=10), [v("c", 5), v("b", 20), v("a", 30)], [Action("remove", "k", "a")]),
    (Rule("n", noncurrent_days=10), [v("c", 11), v("b", 20), v("a", 30)],
     [Action("remove", "k", "b"), Action("remove", "k", "a")]),
    (Rule("n", noncurrent_days=10, newer_noncurrent_versions=1), [v("c", 11), v("b", 20), v("a", 30)],
     [Action("remove", "k", "a")]),
]  # fmt: skip


@pytest.mark.parametrize(("rule", "versions", "expected"), CASES)
def test_decide(rule: Rule, versions: list[Version], expected: list[Action]) -> None:
    assert decide([rule], "k", versions, NOW) == expected


def test_rules_round_trip_and_validation() -> None:
    rules = [
        Rule("a", prefix="x/", noncurrent_days=3, newer_noncurrent_versions=2),
        Rule("b", expiration_days=1),
    ]
    assert loads(dumps(rules)) == rules
    for bad in (
        Rule("z"),
        Rule("z", expiration_days=0),
        Rule("z", expiration_days=1, expired_object_delete_marker=True),
    ):
        with pytest.raises(ValueError):
            bad.validate()
