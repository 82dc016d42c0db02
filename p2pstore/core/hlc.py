"""Hybrid logical clock versions.

A version is a string ``"<wall_ms:013d>.<counter:06d>.<node_id>"``. Its lexicographic order is
the causal/LWW order: later wall time first, then counter, then node id as the tie-breaker.
Keeping it a plain string makes it trivially comparable in SQLite, msgpack and JSON.
"""

from __future__ import annotations

from dataclasses import dataclass

ZERO_VERSION = "0000000000000.000000."
# A peer's version may run ahead of this node's clock by clock skew, never by more than this:
# a version far in the future would win every later write of its key and drag this node's clock
# (and so every version it issues) along with it.
MAX_AHEAD_MS = 60_000


def make_version(wall_ms: int, counter: int, node_id: str) -> str:
    """Format one version string (sortable)."""
    return f"{wall_ms:013d}.{counter:06d}.{node_id}"


def parse_version(version: str) -> tuple[int, int, str]:
    """Split a version into (wall_ms, counter, node_id); raise ValueError when malformed."""
    parts = version.split(".", 2)
    if len(parts) != 3 or len(parts[0]) != 13 or len(parts[1]) != 6:
        raise ValueError(f"malformed version {version!r}")
    return int(parts[0]), int(parts[1]), parts[2]


def check_not_ahead(version: str, wall_ms: int, max_ahead_ms: int = MAX_AHEAD_MS) -> None:
    """Raise ValueError when ``version`` is more than ``max_ahead_ms`` ahead of ``wall_ms``."""
    ahead = parse_version(version)[0] - wall_ms
    if ahead > max_ahead_ms:
        raise ValueError(
            f"version {version[:40]} is {ahead / 1000:.0f} s ahead of this node's clock "
            f"(at most {max_ahead_ms / 1000:.0f} s of clock skew is accepted)"
        )


def is_version(value: object) -> bool:
    """True when ``value`` is a well-formed version string."""
    if not isinstance(value, str):
        return False
    try:
        parse_version(value)
    except ValueError:
        return False
    return True


@dataclass
class HybridLogicalClock:
    """Issues strictly increasing versions for one node, even if the wall clock goes back.

    ``observe`` folds in versions seen from other nodes so that an overwrite issued here after
    seeing a remote write always sorts after it.
    """

    node_id: str
    wall_ms: int = 0
    counter: int = 0

    def now(self, wall_ms: int) -> str:
        """Return a fresh version for a local event at physical time ``wall_ms``."""
        if wall_ms > self.wall_ms:
            self.wall_ms, self.counter = wall_ms, 0
        else:
            self.counter += 1
        return make_version(self.wall_ms, self.counter, self.node_id)

    def observe(self, version: str) -> None:
        """Advance past a version created elsewhere."""
        wall_ms, counter, _ = parse_version(version)
        if (wall_ms, counter) > (self.wall_ms, self.counter):
            self.wall_ms, self.counter = wall_ms, counter
