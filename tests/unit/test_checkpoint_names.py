"""Checkpoint names sort in the order the checkpoints were made, also across a second boundary:
pruning keeps the newest (found by the endpoint fuzzer: a checkpoint made as the second turned
was named as if older than the one before it, pruned at once, and its answer failed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pstore.storage import checkpoint
from p2pstore.storage.metadata import MetadataDB


def test_the_newest_checkpoint_survives_pruning_across_a_second_boundary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = MetadataDB(tmp_path / "meta.sqlite", "never")
    try:
        readings = iter([1_700_000_000_999_000_000, 1_700_000_001_000_001_000])  # S.999, then S+1.000001
        monkeypatch.setattr(checkpoint.time, "time_ns", lambda: next(readings))
        first = checkpoint.create_checkpoint(db, tmp_path, keep=1)
        second = checkpoint.create_checkpoint(db, tmp_path, keep=1)
        assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == [second["checkpoint"]]
        assert first["checkpoint"] < second["checkpoint"]
    finally:
        db.close()
