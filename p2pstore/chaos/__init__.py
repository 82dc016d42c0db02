"""Jepsen-style chaos harness: nemesis (faults), workload (recorded history), checker (verdict).

The checker is a pure function over the history so it is unit-tested on hand-written
histories; the nemesis and workload drive real node processes (optionally each in its own
network namespace). ``p2pstore chaos`` and ``tests/chaos`` both use this package.
"""

from .checker import CheckReport, Violation, check
from .history import FinalRead, HistoryWriter, Op, load_history

__all__ = ["CheckReport", "FinalRead", "HistoryWriter", "Op", "Violation", "check", "load_history"]
