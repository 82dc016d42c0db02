"""Read and write quorum arithmetic, and agreement over what a key's replicas reported.

Pure and deterministic: the read coordinator (cluster/reads.py) gathers one :class:`View` per
replica that answered and asks this module three questions: is the read settled by the answers
so far (or must the other replicas be asked), which version wins, and which replicas hold a
complete copy of it or are behind. Every rule of "which replica is right" lives here, in one
place with table-driven tests (tests/unit/test_quorum.py), like etcd-raft's ``quorum/``.

Versions are hybrid-logical-clock strings (core/hlc.py) whose string order is their order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class View:
    """What one node reported for one key: its newest version (None: no entry at all), whether
    every chunk of that version is present, and whether that version is a tombstone."""

    version: str | None
    complete: bool = False
    deleted: bool = False

    @classmethod
    def from_wire(cls, wire: Any) -> View:
        """A peer's ``{"entry": {...} | None, "complete": bool}``; ValueError when malformed."""
        if not isinstance(wire, Mapping):
            raise ValueError("a view must be a map")
        entry, complete = wire.get("entry"), wire.get("complete")
        if not isinstance(complete, bool):
            raise ValueError("a view's complete must be a boolean")
        if entry is None:
            return cls(None, complete)
        if not isinstance(entry, Mapping) or not isinstance(entry.get("version"), str):
            raise ValueError("a view's entry must be a map with a version")
        return cls(entry["version"], complete, entry.get("deleted") is True)


NONE = View(None)  # a replica that answered and holds nothing for the key


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of a read's answers (see :func:`decide`)."""

    version: str  # the newest version any answer names
    deleted: bool  # that version is a tombstone: the key does not exist
    holders: tuple[str, ...]  # nodes holding a complete copy of it; the reader itself first
    stale: tuple[str, ...]  # other nodes that answered with an older version or none
    reader_behind: bool  # the reader's own manifest lacks that version


def read_quorum(n_replicas: int, write_quorum: int, r: int | None = None) -> int:
    """How many replicas a read consults before it may answer: R - W + 1, so that every read
    set meets every set of W replicas that acknowledged a write; ``r`` (per request) overrides,
    within 1..R."""
    if r is not None:
        return max(1, min(r, n_replicas))
    w = min(write_quorum, n_replicas)
    return max(1, n_replicas - w + 1)


def write_quorum(w: int, known_members: int) -> int:
    """Commits a write waits for: W, or every member of a cluster smaller than W. Members that
    are down still count as known (until removed), so a cluster that shrank by failures does
    not lower its own bar."""
    return max(1, min(w, known_members))


def answered(views: Mapping[str, View], replicas: Sequence[str]) -> int:
    """How many of the key's replicas answered (the reader's own view counts if it is one)."""
    return sum(1 for n in views if n in replicas)


def settled(views: Mapping[str, View], reader: str, replicas: Sequence[str], need: int) -> bool:
    """True when the answers so far settle the read: ``need`` peers answered (besides the
    reader) and every replica that answered names the same version (or none), with every
    named copy complete. Then asking the remaining replicas cannot change the outcome unless a
    write reached fewer than W of them.

    A reader that is not a replica of the key has a manifest that may lag (it learns entries
    from announcements and anti-entropy): its own view is ignored, except when it is *newer*
    than every replica's, which means a replica answered from behind.
    """
    if len(views) - (reader in views) < need:
        return False
    versions: set[str | None] = set()
    for node_id, view in views.items():
        if node_id == reader and reader not in replicas:
            continue
        if view.version is not None and not view.complete:
            return False
        versions.add(view.version)
    mine = views.get(reader)
    if reader not in replicas and mine is not None and mine.version is not None:
        newest_replica = max((v for v in versions if v is not None), default="")
        if mine.version > newest_replica:
            return False
    return len(versions) == 1


def newest(views: Mapping[str, View]) -> str | None:
    """The newest version any answer names (None: no answer names the key)."""
    return max((v.version for v in views.values() if v.version is not None), default=None)


def decide(views: Mapping[str, View], reader: str) -> Verdict | None:
    """Which version wins (the newest named: last writer wins), who serves it and who is
    behind; None when no answer names the key at all."""
    best = newest(views)
    if best is None:
        return None
    deleted = any(v.deleted for v in views.values() if v.version == best)
    holders = [n for n, v in views.items() if v.version == best and v.complete]
    if reader in holders:  # the reader first: no network hop
        holders.remove(reader)
        holders.insert(0, reader)
    stale = tuple(n for n, v in views.items() if n != reader and (v.version is None or v.version < best))
    mine = views.get(reader)
    behind = mine is None or mine.version is None or mine.version < best
    return Verdict(best, deleted, tuple(holders), stale, behind)


def may_deny(views: Mapping[str, View], replicas: Sequence[str], quorum: int) -> bool:
    """A read that found the key absent (no entry, or a tombstone) may answer "not found" only
    when a read quorum of replicas answered: a write acknowledged by W replicas may sit exactly
    on those that did not."""
    return answered(views, replicas) >= quorum


__all__ = [
    "NONE",
    "Verdict",
    "View",
    "answered",
    "decide",
    "may_deny",
    "newest",
    "read_quorum",
    "settled",
    "write_quorum",
]  # fmt: skip
