"""Quorum arithmetic and read agreement (core/quorum.py), one table row per situation.

Nodes: ``g`` is the reader (the gateway), ``a``, ``b``, ``c`` the key's replicas unless a row
says the gateway is one of them. Versions: ``v1 < v2 < v3`` (their string order is their order).
A replica that did not answer (a timeout, a refused connection) is simply absent from the views.
"""

from __future__ import annotations

import pytest

from p2pstore.core.quorum import (
    NONE,
    View,
    answered,
    decide,
    may_deny,
    newest,
    read_quorum,
    settled,
    write_quorum,
)

V1 = "0000000001000.000000.na"
V2 = "0000000002000.000000.nb"
V3 = "0000000002000.000001.na"  # same millisecond as V2, later counter: newer


def ok(version: str, deleted: bool = False) -> View:
    return View(version, complete=True, deleted=deleted)


def partial(version: str) -> View:
    return View(version, complete=False)


def names(rows: list[tuple]) -> list[str]:
    return [row[0] for row in rows]


ABC = ("a", "b", "c")
GAB = ("g", "a", "b")


# (name, n_replicas, W, r, expected read quorum)
READ_QUORUM_ROWS = [
    ("R=3 W=2: two replicas meet every write", 3, 2, None, 2),
    ("R=3 W=3: one replica is enough", 3, 3, None, 1),
    ("R=3 W=1: every replica must answer", 3, 1, None, 3),
    ("W larger than the replicas known", 2, 3, None, 1),
    ("r overrides", 3, 2, 1, 1),
    ("r above R is capped", 3, 2, 9, 3),
    ("r below 1 is raised", 3, 2, 0, 1),
    ("a single replica", 1, 2, None, 1),
]


@pytest.mark.parametrize(("name", "n", "w", "r", "expected"), READ_QUORUM_ROWS, ids=names(READ_QUORUM_ROWS))
def test_read_quorum(name: str, n: int, w: int, r: int | None, expected: int) -> None:
    assert read_quorum(n, w, r) == expected


@pytest.mark.parametrize(
    ("w", "known", "expected"),
    [(2, 3, 2), (2, 1, 1), (3, 2, 2), (1, 5, 1), (2, 0, 1)],
)
def test_write_quorum_never_exceeds_the_members_known(w: int, known: int, expected: int) -> None:
    assert write_quorum(w, known) == expected


# (name, views, replicas, need, settled?)
SETTLED_ROWS = [
    ("all agree", {"g": NONE, "a": ok(V2), "b": ok(V2)}, ABC, 2, True),
    ("all agree, the reader a replica", {"g": ok(V2), "a": ok(V2)}, GAB, 1, True),
    ("too few answers (one timed out)", {"g": NONE, "a": ok(V2)}, ABC, 2, False),
    ("one stale", {"g": NONE, "a": ok(V2), "b": ok(V1)}, ABC, 2, False),
    ("one missing the entry", {"g": NONE, "a": ok(V2), "b": NONE}, ABC, 2, False),
    ("one incomplete copy", {"g": NONE, "a": ok(V2), "b": partial(V2)}, ABC, 2, False),
    ("nobody has it", {"g": NONE, "a": NONE, "b": NONE}, ABC, 2, True),
    ("tombstones agree", {"g": NONE, "a": ok(V3, True), "b": ok(V3, True)}, ABC, 2, True),
    ("a tombstone newer than a write", {"g": NONE, "a": ok(V3, True), "b": ok(V2)}, ABC, 2, False),
    ("a non-replica reader lagging is ignored", {"g": ok(V1), "a": ok(V2), "b": ok(V2)}, ABC, 2, True),
    ("a non-replica reader without it is ignored", {"g": NONE, "a": ok(V2), "b": ok(V2)}, ABC, 2, True),
    ("a non-replica reader newer than the replicas", {"g": ok(V3), "a": ok(V2), "b": ok(V2)}, ABC, 2, False),
    ("a replica reader's own stale copy counts", {"g": ok(V1), "a": ok(V2)}, GAB, 1, False),
    ("a replica reader's incomplete copy counts", {"g": partial(V2), "a": ok(V2)}, GAB, 1, False),
    ("more answers than needed, all equal", {"g": NONE, "a": ok(V2), "b": ok(V2), "c": ok(V2)}, ABC, 2, True),
]


@pytest.mark.parametrize(
    ("name", "views", "replicas", "need", "expected"), SETTLED_ROWS, ids=names(SETTLED_ROWS)
)
def test_settled(name: str, views: dict, replicas: tuple, need: int, expected: bool) -> None:
    assert settled(views, "g", replicas, need) is expected


# (name, views, expected (version, deleted, holders, stale, reader_behind) or None)
DECIDE_ROWS = [
    ("all agree", {"g": NONE, "a": ok(V2), "b": ok(V2)}, (V2, False, ("a", "b"), (), True)),
    ("the reader holds it: first among holders", {"a": ok(V2), "g": ok(V2)},
     (V2, False, ("g", "a"), (), False)),
    ("one stale replica", {"g": NONE, "a": ok(V2), "b": ok(V1)}, (V2, False, ("a",), ("b",), True)),
    ("one replica without the entry", {"g": ok(V2), "a": NONE}, (V2, False, ("g",), ("a",), False)),
    ("an incomplete copy holds nothing servable", {"g": NONE, "a": partial(V2), "b": ok(V2)},
     (V2, False, ("b",), (), True)),
    ("only incomplete copies: no holder", {"g": NONE, "a": partial(V2)}, (V2, False, (), (), True)),
    ("a tombstone newer than a write wins", {"g": NONE, "a": ok(V3, True), "b": ok(V2)},
     (V3, True, ("a",), ("b",), True)),
    ("a write newer than a tombstone wins", {"g": NONE, "a": ok(V1, True), "b": ok(V2)},
     (V2, False, ("b",), ("a",), True)),
    ("same millisecond: the later counter wins", {"g": NONE, "a": ok(V2), "b": ok(V3)},
     (V3, False, ("b",), ("a",), True)),
    ("a non-replica reader newer than all", {"g": ok(V3), "a": ok(V2)}, (V3, False, ("g",), ("a",), False)),
    ("the reader's own stale copy", {"g": ok(V1), "a": ok(V2)}, (V2, False, ("a",), (), True)),
    ("nobody names the key", {"g": NONE, "a": NONE, "b": NONE}, None),
    ("no answers at all", {}, None),
]


@pytest.mark.parametrize(("name", "views", "expected"), DECIDE_ROWS, ids=names(DECIDE_ROWS))
def test_decide(name: str, views: dict, expected: tuple | None) -> None:
    verdict = decide(views, "g")
    if expected is None:
        assert verdict is None
        return
    assert verdict is not None
    got = (verdict.version, verdict.deleted, verdict.holders, verdict.stale, verdict.reader_behind)
    assert got == expected


# (name, views, replicas, quorum, may answer "not found"?)
DENY_ROWS = [
    ("a quorum of replicas answered", {"g": NONE, "a": NONE, "b": NONE}, ABC, 2, True),
    ("one replica answered of two needed", {"g": NONE, "a": NONE}, ABC, 2, False),
    ("the reader is a replica and counts", {"g": NONE, "a": NONE}, GAB, 2, True),
    ("a non-replica reader does not count", {"g": NONE}, ABC, 1, False),
    ("r=1: one replica is enough", {"g": NONE, "c": NONE}, ABC, 1, True),
]


@pytest.mark.parametrize(("name", "views", "replicas", "quorum", "expected"), DENY_ROWS, ids=names(DENY_ROWS))
def test_may_deny(name: str, views: dict, replicas: tuple, quorum: int, expected: bool) -> None:
    assert may_deny(views, replicas, quorum) is expected


def test_answered_counts_only_replicas() -> None:
    assert answered({"g": NONE, "a": ok(V1), "x": ok(V1)}, ABC) == 1
    assert newest({"a": ok(V1), "b": ok(V3), "c": NONE}) == V3
    assert newest({"a": NONE}) is None


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        ({"entry": None, "complete": False}, View(None, False)),
        ({"entry": {"version": V1, "deleted": False}, "complete": True}, View(V1, True, False)),
        ({"entry": {"version": V2, "deleted": True}, "complete": True}, View(V2, True, True)),
    ],
)
def test_views_from_the_wire(wire: dict, expected: View) -> None:
    assert View.from_wire(wire) == expected


@pytest.mark.parametrize(
    "wire",
    [None, [], {"entry": None}, {"entry": None, "complete": 1}, {"entry": {"version": 5}, "complete": True},
     {"entry": "x", "complete": True}],
)
def test_malformed_views_are_refused(wire: object) -> None:
    with pytest.raises(ValueError):
        View.from_wire(wire)
