"""Repair planning: which chunks this node should hold but lacks (sans-I/O).

Pure functions over manifest entries, so the rules can be tested without a cluster: a node
holds every live file whose replica set (by placement over the known members) includes it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .manifest import ManifestEntry


@dataclass(frozen=True)
class RepairTask:
    """Fetch ``missing`` chunks of ``entry`` from ``sources`` (other replicas, best first)."""

    entry: ManifestEntry
    missing: tuple[str, ...]
    sources: tuple[str, ...]

    @property
    def key(self) -> str:
        return self.entry.key


def plan_repairs(
    entries: Iterable[ManifestEntry],
    self_id: str,
    replicas_for: Callable[[str], list[str]],
    has_chunk: Callable[[str], bool],
) -> list[RepairTask]:
    """Every live entry this node is a replica of, with the chunks it does not hold."""
    tasks: list[RepairTask] = []
    for entry in entries:
        if entry.deleted or not entry.chunks:
            continue
        missing = tuple(dict.fromkeys(c for c in entry.chunks if not has_chunk(c)))
        if not missing:
            continue  # whole here: no placement to compute
        replicas = replicas_for(entry.key)
        if self_id not in replicas:
            continue
        sources = tuple(r for r in replicas if r != self_id)
        tasks.append(RepairTask(entry, missing, sources))
    return tasks


def keys_lacking_chunks(
    rows: Iterable[tuple[str, bool, tuple[str, ...]]],
    self_id: str,
    replicas_for: Callable[[str], list[str]],
    has_chunk: Callable[[str], bool],
) -> list[str]:
    """Keys of the live entries, given as (key, deleted, chunks), that this node is a replica of
    and lacks a chunk of: the cheap first look of a full pass (plan_repairs then plans just
    these). Chunks are checked before placement, so a node that holds all it should computes
    no placement at all."""
    keys = []
    for key, deleted, chunks in rows:
        if deleted or not chunks or all(has_chunk(c) for c in chunks):
            continue
        if self_id in replicas_for(key):
            keys.append(key)
    return keys
