"""Repair planning picks exactly the chunks a replica lacks, never data it does not own."""

from __future__ import annotations

from p2pstore.core.manifest import ManifestEntry
from p2pstore.core.repair import keys_lacking_chunks, plan_repairs

A, B, C = "a" * 64, "b" * 64, "c" * 64


def entry(key: str, chunks: tuple[str, ...], deleted: bool = False) -> ManifestEntry:
    if deleted:
        return ManifestEntry.tombstone(key, "0000000000001.000000.n", 1.0)
    return ManifestEntry(key, "0000000000001.000000.n", len(chunks), "d" * 64, chunks, "x", False, 1.0)


def test_plans_only_owned_live_entries_with_missing_chunks() -> None:
    owners = {"mine": ["me", "x"], "theirs": ["x", "y"], "gone": ["me"], "whole": ["me", "y"]}
    entries = [
        entry("mine", (A, B, A)),
        entry("theirs", (C,)),
        entry("gone", (), deleted=True),
        entry("whole", (C,)),
    ]
    tasks = plan_repairs(entries, "me", owners.__getitem__, lambda sha: sha == C)
    assert [(t.key, t.missing, t.sources) for t in tasks] == [("mine", (A, B), ("x",))]


def test_nothing_to_do_when_everything_is_present() -> None:
    assert plan_repairs([entry("k", (A,))], "me", lambda k: ["me"], lambda sha: True) == []


def test_a_full_pass_computes_placement_only_for_entries_lacking_chunks() -> None:
    owners = {"whole": ["me", "x"], "lacking": ["me", "x"], "not-ours": ["x", "y"], "gone": ["me"]}
    asked: list[str] = []

    def replicas_for(key: str) -> list[str]:
        asked.append(key)
        return owners[key]

    rows = [("whole", False, (C,)), ("lacking", False, (A, C)), ("not-ours", False, (B,)),
            ("gone", True, ()), ("empty", False, ())]  # fmt: skip
    assert keys_lacking_chunks(rows, "me", replicas_for, lambda sha: sha == C) == ["lacking"]
    assert asked == ["lacking", "not-ours"]  # "whole" holds all it needs: no placement for it
    asked.clear()  # the same entries planned in full give the same answer, placement likewise
    entries = [entry("whole", (C,)), entry("lacking", (A, C)), entry("not-ours", (B,))]
    tasks = plan_repairs(entries, "me", replicas_for, lambda sha: sha == C)
    assert [(t.key, t.missing, t.sources) for t in tasks] == [("lacking", (A,), ("x",))]
    assert asked == ["lacking", "not-ours"]
