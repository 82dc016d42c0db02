"""The operation history of a chaos run: one JSON object per line, written as operations end.

The checker only ever looks at this file (plus the final reads), so a failed run can be
re-checked, shared and turned into a regression test without the cluster.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

OpKind = Literal["put", "get", "delete"]
# ok: acknowledged (2xx, or 404 for get/delete); fail: the node said it did nothing;
# unknown: timeout, cut connection or an answer that does not say whether it happened.
Outcome = Literal["ok", "fail", "unknown"]


@dataclass
class Op:
    """One client operation; ``sha256`` is the value written (put) or read (get; None = absent)."""

    id: int
    client: int
    op: OpKind
    key: str
    start: float
    end: float
    outcome: Outcome
    sha256: str | None = None
    version: str | None = None
    gateway: str = ""
    status: int | None = None
    error: str | None = None
    size: int | None = None
    # For a get: the sha256 the node promised in its ETag (None when it sent none).
    etag: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Op:
        known = {f: d[f] for f in cls.__dataclass_fields__ if f in d}
        return cls(**known)


@dataclass
class FinalRead:
    """A read after the cluster healed: what ``gateway`` answered for ``key`` (sha256 None = 404)."""

    key: str
    gateway: str
    sha256: str | None
    version: str | None = None
    status: int | None = None
    body_sha256: str | None = None
    error: str | None = None


class HistoryWriter:
    """Append-only JSON-lines writer (flushed per line so a crashed run still leaves a history)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._fh: TextIO | None = path.open("w") if path else None
        self.ops: list[Op] = []

    def record(self, op: Op) -> None:
        self.ops.append(op)
        if self._fh is not None:
            self._fh.write(op.to_json() + "\n")
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def load_history(path: Path) -> list[Op]:
    return list(parse_history(path.read_text().splitlines()))


def parse_history(lines: Iterable[str]) -> Iterator[Op]:
    for line in lines:
        line = line.strip()
        if line:
            yield Op.from_dict(json.loads(line))
