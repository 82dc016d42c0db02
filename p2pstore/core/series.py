"""A node's recent activity as per-second samples, for the status page's live charts.

The node samples its cumulative counters (requests, bytes in and out, bytes repaired) and a few
gauges (repair bytes and files left) once a second; this ring keeps the last ``capacity``
samples and turns them into per-second rates. Fixed memory (a few KiB), no clock of its own:
the caller passes the time, so tests feed it any schedule.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

COUNTERS = ("requests", "bytes_in", "bytes_out", "repair_bytes")
GAUGES = ("repair_left_bytes", "repair_left_files")
DEFAULT_CAPACITY = 180  # three minutes of one-second samples


@dataclass(frozen=True)
class Sample:
    at: float
    counters: tuple[float, ...]
    gauges: tuple[float, ...]


@dataclass
class Series:
    """The last ``capacity`` samples; ``rates()`` answers what the page draws."""

    capacity: int = DEFAULT_CAPACITY
    samples: deque[Sample] = field(init=False)

    def __post_init__(self) -> None:
        if self.capacity < 2:
            raise ValueError("a series needs at least two samples to make a rate")
        self.samples = deque(maxlen=self.capacity + 1)  # n rates need n + 1 samples

    def add(self, at: float, counters: Mapping[str, float], gauges: Mapping[str, float]) -> None:
        """Record cumulative ``counters`` and current ``gauges`` at time ``at`` (seconds).
        A sample not later than the last one is ignored (a clock step backwards)."""
        if self.samples and at <= self.samples[-1].at:
            return
        counted = tuple(float(counters.get(n, 0)) for n in COUNTERS)
        self.samples.append(Sample(at, counted, tuple(float(gauges.get(n, 0)) for n in GAUGES)))

    def rates(self) -> dict[str, list[float]]:
        """``t`` (end of each interval) and, per counter, its rate per second over that interval
        (a counter that went down, as after a restart, counts as 0); gauges as sampled."""
        out: dict[str, list[float]] = {"t": []}
        for name in (*COUNTERS, *GAUGES):
            out[name] = []
        pairs = list(zip(list(self.samples)[:-1], list(self.samples)[1:], strict=True))
        for prev, cur in pairs:
            span = cur.at - prev.at
            out["t"].append(round(cur.at, 3))
            for i, name in enumerate(COUNTERS):
                out[name].append(round(max(0.0, cur.counters[i] - prev.counters[i]) / span, 3))
            for i, name in enumerate(GAUGES):
                out[name].append(cur.gauges[i])
        return out

    def totals(self) -> dict[str, float]:
        """The counters as last sampled (cumulative since the node started)."""
        last = self.samples[-1].counters if self.samples else (0.0,) * len(COUNTERS)
        return dict(zip(COUNTERS, last, strict=True))

    def recent_rate(self, name: str, window: float = 10.0) -> float:
        """The mean rate of counter ``name`` per second over the last ``window`` seconds."""
        i = COUNTERS.index(name)
        if len(self.samples) < 2:
            return 0.0
        last = self.samples[-1]
        first = next((s for s in self.samples if last.at - s.at <= window), last)
        if first is last:
            first = self.samples[-2]
        return max(0.0, last.counters[i] - first.counters[i]) / (last.at - first.at)
