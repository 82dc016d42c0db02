"""Self-healing on one node: pull missing chunks from other replicas, scrub chunks on disk.

The repairer runs a pass on a timer and whenever something suggests data is missing (new
manifest entries from gossip, a member coming back, a bad chunk found by a read or by the
scrubber). A pass plans with :func:`plan_repairs` and copies chunk by chunk, verifying each
before it counts, so an interrupted pass simply resumes on the next one (the plan is derived
from what is on disk, never from a log that could drift).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..core.repair import keys_lacking_chunks, plan_repairs
from ..errors import InsufficientStorage, Unavailable
from .background import BackgroundLoop, yielding

if TYPE_CHECKING:
    from ..storage.store import LocalStore
    from .peers import Peers

# One verified chunk from the first of the given holders with a good copy (reads.ChunkFetcher)
FetchChunk = Callable[..., Awaitable[bytes]]

log = logging.getLogger("p2pstore.repair")

PASS_INTERVAL = 600.0  # between safety-net passes (paced sweeps); events trigger passes sooner
REPAIR_PAGE = 1000  # entries looked at per trip to the I/O thread in a full pass
REPAIR_BATCH = 2000  # keys lacking data planned and repaired at a time
SWEEP_PAUSE = 1.0  # a safety-net pass looks at one page per this many seconds (1,000,000: ~17 min)
RETRY_FIRST, RETRY_MAX = 2.0, 60.0  # back-off of a failed repair's retries
FIRST_PASS_WAIT = 10.0  # the first full pass waits this long at most for the first manifest round
PLACEMENT_CHECK = 5.0  # how often an idle repairer looks whether placement changed
CONCURRENCY = 8
SCRUB_MIN_COST = 64 * 1024  # each chunk costs at least this much of the scrub rate (seeks, queries)
SCRUB_BUSY_SLOWDOWN = 10  # while clients are served, scrub at a tenth of --scrub-rate
SCRUB_PAUSE_MIN, SCRUB_PAUSE_MAX = 5.0, 300.0  # between scrub passes
SCRUB_PAGE = 5000  # chunk names listed per trip to the I/O thread
SCRUB_BATCH_CHUNKS, SCRUB_BATCH_BYTES = 64, 1 << 20  # per trip to the I/O thread (a bigger file alone)


@dataclass
class RepairStats:
    queue: int = 0
    bytes_to_copy: int = 0
    pass_copied: int = 0  # bytes copied by the pass running now (of bytes_to_copy)
    bytes_copied: int = 0
    chunks_copied: int = 0
    files_repaired: int = 0
    failures: int = 0
    passes: int = 0
    running: bool = False
    last_pass_started: float | None = None
    last_pass_seconds: float | None = None
    last_pass_copied: int = 0
    last_error: str | None = None


@dataclass
class ScrubStats:
    chunks_checked: int = 0
    bytes_checked: int = 0
    corrupt_found: int = 0
    passes: int = 0
    last_pass_finished: float | None = None
    last_pass_seconds: float | None = None
    last_pass_found: list[str] = field(default_factory=list)


class RateLimiter:
    """Token bucket in bytes/s (0 = unlimited), so repair and scrub share the disk politely."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._next = time.monotonic()

    async def take(self, nbytes: int) -> None:
        if self.rate <= 0:
            return
        now = time.monotonic()
        start = max(self._next, now)
        self._next = start + nbytes / self.rate
        if start > now:
            await asyncio.sleep(start - now)


class Repairer(BackgroundLoop):
    """Keeps this node's replicas complete."""

    name = "repair"

    def __init__(
        self, store: LocalStore, peers: Peers, fetch: FetchChunk, chunk_size: int, rate: float
    ) -> None:
        self.store = store
        self.peers = peers
        self.fetch = fetch
        self.chunk_size = chunk_size
        self.stats = RepairStats()
        self.limiter = RateLimiter(rate)
        self._wake = asyncio.Event()
        self._full = True  # the first pass looks at everything
        # Set after the first manifest round with the peers: a node back from downtime learns
        # what it missed (entries, small files' bodies) before a full pass over a big manifest
        # competes with that round for the CPU; FIRST_PASS_WAIT at most.
        self.synced_once = asyncio.Event()
        self._keys: set[str] = set()
        self._attempts: dict[str, int] = {}  # failed repairs by key, for the retry back-off
        self._lock = asyncio.Lock()

    def trigger(self) -> None:
        """Ask for a full pass soon (cheap; many triggers coalesce into one pass)."""
        self._full = True
        self._wake.set()

    def wake(self) -> None:
        """Look at placement now (after a membership event); a full pass only if it changed."""
        self._wake.set()

    def _retry_later(self, key: str) -> None:
        """A failed repair is tried again after 2, 4, 8 … 60 s, not only at the next full
        pass: its sources may have been unreachable for a moment, or held an older version."""
        attempts = self._attempts[key] = self._attempts.get(key, 0) + 1
        delay = min(RETRY_MAX, RETRY_FIRST * 2 ** (attempts - 1))
        asyncio.get_running_loop().call_later(delay, self.trigger_keys, [key])

    def trigger_keys(self, keys: list[str]) -> None:
        """Ask for a pass over just these keys (new entries learned from gossip)."""
        self._keys.update(keys)
        self._wake.set()

    async def _loop(self) -> None:
        """Full passes when placement changed (a member gone past dead_after, a new member),
        when asked (scrub finding, corrupt read, recover) and every PASS_INTERVAL; otherwise
        only the keys gossip brought in. Membership flaps alone cost nothing. The timer's pass
        is a paced sweep (SWEEP_PAGE entries a second) unless an event asks for one meanwhile:
        a safety net must not cost an idle node a burst of CPU over a million entries."""
        await asyncio.sleep(1.0)
        deadline = time.monotonic() + FIRST_PASS_WAIT
        while not self.synced_once.is_set() and time.monotonic() < deadline:
            # meanwhile, the data of the entries that round has already brought (a rejoin: the
            # first fetches start with the first applied batch, not after the whole manifest)
            if self._keys:
                keys, self._keys = self._keys, set()
                try:
                    await self.run_pass(keys)
                except Exception as exc:
                    self.stats.last_error = str(exc)
                    log.exception("repair pass failed")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.2)
            self._wake.clear()
        last_full = float("-inf")
        placement_seen: tuple[str, ...] | None = None
        while True:
            full, keys = self._full, self._keys
            self._full, self._keys = False, set()
            placement = tuple(sorted(self.peers.placement_ids()))
            now = time.monotonic()
            paced = False
            if placement != placement_seen:
                full = True
            elif not full and now - last_full > PASS_INTERVAL:
                full = paced = True
            if full:
                placement_seen = placement
            if full or keys:
                try:
                    if full and keys:  # the keys first: a full pass over a million entries takes
                        await self.run_pass(keys)  # seconds before it reaches them (a rejoin)
                    await self.run_pass(None if full else keys, paced=paced)
                except Exception as exc:
                    self.stats.last_error = str(exc)
                    log.exception("repair pass failed")
                if full:
                    last_full = time.monotonic()  # the interval counts from a pass's end
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), PLACEMENT_CHECK)
                await asyncio.sleep(0.2)  # let a burst of triggers coalesce
            self._wake.clear()

    async def run_pass(self, keys: set[str] | None = None, paced: bool = False) -> dict[str, Any]:
        """Plan and copy what is missing now (all entries, or only ``keys``); report it."""
        async with self._lock:
            return await self._run_pass(keys, paced)

    def _lacking_page(self, after: str) -> tuple[list[str], str, bool]:
        """In the I/O thread: the keys this node should hold but lacks a chunk of, among the
        REPAIR_PAGE entries after key ``after``; the last key looked at; whether it was the end.
        Presence is asked chunk by chunk (a stat, an indexed query), never from a set of every
        chunk name (~130 MiB at 1,000,000); a row holding its own bytes is whole as it is."""
        store = self.store
        rows = store.db.chunk_lists_after(after, REPAIR_PAGE)
        if not rows:
            return [], after, True
        wanted = ((key, deleted, chunks) for key, deleted, chunks, inline in rows if not inline)
        lacking = keys_lacking_chunks(
            yielding(wanted), self.peers.me, self.peers.replicas_for, store.has_chunk
        )
        return lacking, rows[-1][0], len(rows) < REPAIR_PAGE

    async def _run_pass(self, keys: set[str] | None, paced: bool) -> dict[str, Any]:
        """A pass over ``keys``, or over every entry a page at a time by key range (the keys
        lacking data are planned and repaired REPAIR_BATCH at a time, so a wiped disk's pass
        does not plan a million files before copying the first)."""
        store = self.store
        started = time.monotonic()
        self.stats.running = True
        self.stats.last_pass_started = time.time()
        self.stats.bytes_to_copy = self.stats.pass_copied = self.stats.queue = 0
        totals = {"tasks": 0, "copied": 0, "failed": 0, "bytes": 0}
        needing: set[str] = set()

        def plan(wanted: list[str]) -> list[Any]:
            entries = (e for k in sorted(wanted) if (e := store.db.get(k)) is not None)
            return plan_repairs(entries, self.peers.me, self.peers.replicas_for, store.has_chunk)

        async def repair(wanted: list[str]) -> None:
            tasks = await store.in_io(plan, wanted)
            needing.update(t.key for t in tasks)
            await self._repair_tasks(tasks, totals)

        if keys is not None:
            await repair(list(keys))
        else:
            after, done, pending = "", False, []
            while not done:
                page_started = time.monotonic()
                lacking, after, done = await store.in_io(self._lacking_page, after)
                pending += lacking
                if pending and (done or len(pending) >= REPAIR_BATCH):
                    await repair(pending)
                    pending = []
                if paced and not done and not self._full:  # an event asks for speed: no more pauses
                    await asyncio.sleep(max(0.0, SWEEP_PAUSE - (time.monotonic() - page_started)))
        for key in [k for k in self._attempts if k not in needing and (keys is None or k in keys)]:
            del self._attempts[key]  # whole again (or gone): forget its failures
        elapsed = time.monotonic() - started
        self.stats.running = False
        self.stats.passes += 1
        self.stats.last_pass_seconds = round(elapsed, 3)
        self.stats.last_pass_copied = totals["bytes"]
        self.stats.bytes_to_copy = 0
        self.stats.pass_copied = 0
        if totals["tasks"]:
            log.info(
                "repair pass: %d files needed data, %d repaired, %d failed, %d bytes in %.1fs",
                totals["tasks"], totals["copied"], totals["failed"], totals["bytes"], elapsed,
            )  # fmt: skip
        return {
            "node_id": self.peers.me,
            "files_needing_repair": totals["tasks"],
            "files_repaired": totals["copied"],
            "files_failed": totals["failed"],
            "bytes_copied": totals["bytes"],
            "seconds": round(elapsed, 3),
        }

    async def _repair_tasks(self, tasks: list[Any], totals: dict[str, int]) -> None:
        """Copy the missing chunks of ``tasks``, CONCURRENCY files at a time; add to ``totals``."""
        store = self.store
        totals["tasks"] += len(tasks)
        self.stats.queue += len(tasks)
        chunk_size = self.chunk_size
        self.stats.bytes_to_copy += sum(min(t.entry.size, len(t.missing) * chunk_size) for t in tasks)
        sem = asyncio.Semaphore(CONCURRENCY)

        async def repair_one(task: Any) -> None:
            async with sem:
                try:
                    sources = [s for s in task.sources if self.peers.is_live(s)]
                    for sha in task.missing:
                        if store.has_chunk(sha):
                            continue
                        data = await self.fetch(sha, sources, set(), count_bad=False)
                        await self.limiter.take(len(data))
                        await store.write_chunk(data, sha)
                        totals["bytes"] += len(data)
                        self.stats.bytes_copied += len(data)
                        self.stats.pass_copied += len(data)
                        self.stats.chunks_copied += 1
                    totals["copied"] += 1
                    self.stats.files_repaired += 1
                    self._attempts.pop(task.key, None)
                except (Unavailable, InsufficientStorage, OSError) as exc:
                    totals["failed"] += 1
                    self.stats.failures += 1
                    self.stats.last_error = f"{task.key}: {exc}"
                    self._retry_later(task.key)
                finally:
                    self.stats.queue = max(0, self.stats.queue - 1)

        await asyncio.gather(*(repair_one(t) for t in tasks))


class Scrubber(BackgroundLoop):
    """Re-verifies every chunk on disk at a throttled rate; quarantines and repairs bad ones."""

    name = "scrub"

    def __init__(
        self, store: LocalStore, repairer: Repairer, on_bad: Callable[[str], None], busy: Callable[[], bool],
        rate: float, chunk_rate: float = 0.0,
    ) -> None:  # fmt: skip
        self.store = store
        self.repairer = repairer
        self.on_bad = on_bad  # quarantine the chunk and fetch a good copy
        self.busy = busy
        self.stats = ScrubStats()
        self.limiter = RateLimiter(rate)
        # Chunks/s, apart from bytes: checking a small chunk costs a query and a hash whatever
        # its size, so a million small ones at the byte rate kept a core 5-10 % busy for ever.
        self.chunk_limiter = RateLimiter(chunk_rate)

    def enabled(self) -> bool:
        return self.limiter.rate > 0

    async def _loop(self) -> None:
        await asyncio.sleep(2.0)
        while True:
            try:
                await self.scrub_pass()
            except Exception:
                log.exception("scrub pass failed")
            # As long a pause as the pass took (5 s to 5 min): a small store is re-checked often,
            # a big one spends at most half its time scrubbing.
            await asyncio.sleep(min(SCRUB_PAUSE_MAX, max(SCRUB_PAUSE_MIN, self.stats.last_pass_seconds or 0)))

    async def scrub_pass(self) -> list[str]:
        """Check every chunk, small ones a batch per trip to the I/O thread. The limiter is
        still charged chunk by chunk once a batch was checked, each at the cost of the moment: a
        batch charged at once while clients were served would be waited out (seconds) long
        after they were gone."""
        store = self.store
        started = time.monotonic()
        found: list[str] = []
        names: Iterator[str] | None = None

        def next_page() -> list[str]:  # in the I/O thread: listing reads the disk and the database
            nonlocal names
            names = iter(store.iter_chunk_shas()) if names is None else names
            return list(itertools.islice(names, SCRUB_PAGE))

        more = True
        while more:  # a page of names at a time: a million never sit in memory at once
            page = await store.in_io(next_page)
            more = len(page) == SCRUB_PAGE
            shas, at = list(dict.fromkeys(page)), 0
            while at < len(shas):
                checked = await store.verify_chunks(shas[at : at + SCRUB_BATCH_CHUNKS], SCRUB_BATCH_BYTES)
                at += len(checked)
                found += self._tally(checked)
                for _, length, _ in checked:
                    if length is not None:
                        slowdown = SCRUB_BUSY_SLOWDOWN if self.busy() else 1
                        await self.chunk_limiter.take(slowdown)
                        await self.limiter.take(self._cost(length))
        self.repairer.trigger()  # chunks that vanished are not on disk to scrub: plan finds them
        self.stats.passes += 1
        self.stats.last_pass_finished = time.time()
        self.stats.last_pass_seconds = round(time.monotonic() - started, 3)
        self.stats.last_pass_found = [s[:12] for s in found]
        return found

    def _cost(self, length: int) -> int:
        """A chunk's share of the scrub rate: at least SCRUB_MIN_COST (seeks, queries), ten times
        as much while clients are served (yield to them, but keep going)."""
        cost = max(length, SCRUB_MIN_COST)
        return cost * SCRUB_BUSY_SLOWDOWN if self.busy() else cost

    def _tally(self, checked: list[tuple[str, int | None, bool]]) -> list[str]:
        """Count a batch's checks; report its corrupt chunks (not the ones deleted meanwhile)."""
        store = self.store
        found = []
        for sha, length, ok in checked:
            if length is None:  # gone before it was looked at
                continue
            self.stats.chunks_checked += 1
            self.stats.bytes_checked += length
            if not ok and store.has_chunk(sha):
                found.append(sha)
                self.stats.corrupt_found += 1
                log.error("scrub found corrupt chunk %s", sha[:12])
                self.on_bad(sha)
        return found
