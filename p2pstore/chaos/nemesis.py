"""The nemesis: faults injected into a running cluster, and a random schedule that drives them.

Faults are blocking calls (signals, process starts, ip commands), so the schedule runs in a
worker thread while the workload keeps its event loop. Every fault is logged with its time so
a failing history can be lined up with what the cluster suffered.
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..launcher import LocalNode, http_json
from ..storage.segments import INDEX_NAME, Location

FLIP_PLACES = ("file", "segment", "db")

PROCESS_FAULTS = ("kill", "pause", "restart")


class Unsupported(RuntimeError):
    """This backend cannot inject that fault (e.g. partitions without network namespaces)."""


@dataclass
class FaultEvent:
    t: float
    action: str
    target: str
    detail: str = ""


class Nemesis:
    """Process-level faults on real node processes (always available)."""

    backend = "processes"

    def __init__(self, nodes: Sequence[LocalNode], ready_timeout: float = 30.0) -> None:
        self.nodes = list(nodes)
        self.ready_timeout = ready_timeout
        self.events: list[FaultEvent] = []
        self.t0 = time.monotonic()
        self._lock = threading.Lock()

    def _log(self, action: str, node: LocalNode | str, detail: str = "") -> None:
        name = node if isinstance(node, str) else node.name
        with self._lock:
            self.events.append(FaultEvent(round(time.monotonic() - self.t0, 3), action, name, detail))

    def supports(self, fault: str) -> bool:
        return fault in ("kill", "pause", "resume", "restart", "start", "wipe", "flip_bytes")

    # ---- process faults ----
    def kill(self, node: LocalNode) -> None:
        """SIGKILL: the process dies with no cleanup (a crash)."""
        node.kill()
        self._log("kill", node)

    def start(self, node: LocalNode) -> None:
        node.start()
        node.wait_ready(self.ready_timeout)
        self._log("start", node)

    def pause(self, node: LocalNode) -> None:
        """SIGSTOP: alive for the kernel (sockets accept), silent for peers: a hung node."""
        node.pause()
        self._log("pause", node)

    def resume(self, node: LocalNode) -> None:
        node.resume()
        self._log("resume", node)

    def restart(self, node: LocalNode) -> None:
        """kill -9 then start at once: a crash-restart loop (same data, same address)."""
        node.kill()
        self._log("kill", node, "restart")
        self.start(node)

    def wipe(self, node: LocalNode, keep_identity: bool = False) -> None:
        """Disk loss: stop, delete the data dir (the node id too, unless kept), start empty."""
        node.kill()
        ident = node.data_dir / "node_id"
        saved = ident.read_text() if keep_identity and ident.exists() else None
        shutil.rmtree(node.data_dir, ignore_errors=True)
        if saved is not None:
            node.data_dir.mkdir(parents=True)
            ident.write_text(saved)
        self._log("wipe", node, "kept id" if saved else "new id")
        self.start(node)

    def flip_bytes(self, node: LocalNode, rng: random.Random | None = None, where: str = "any") -> str | None:
        """Silent rot: flip one byte of a random chunk (a chunk file, a chunk's record in a
        segment file, or a small chunk kept in SQLite).

        ``where`` is ``file``, ``segment``, ``db`` or ``any``. The node is not told; it must notice
        on read or scrub. Returns a description of what was flipped, or None when there was nothing.
        """
        if where != "any" and where not in FLIP_PLACES:
            raise ValueError(f"where must be one of {FLIP_PLACES} or 'any', not {where!r}")
        rng = rng or random.Random()
        places = list(FLIP_PLACES) if where == "any" else [where]
        rng.shuffle(places)
        flips = {"file": self._flip_file, "segment": self._flip_segment, "db": self._flip_db}
        for place in places:
            done = flips[place](node, rng)
            if done is not None:
                self._log("flip_bytes", node, done)
                return done
        return None

    @staticmethod
    def _flip_file(node: LocalNode, rng: random.Random) -> str | None:
        files = sorted(p for p in (node.data_dir / "chunks").rglob("*") if len(p.name) == 64)
        if not files:
            return None
        path = rng.choice(files)
        try:
            with path.open("r+b") as fh:
                size = path.stat().st_size
                if size == 0:
                    return None
                pos = rng.randrange(size)
                fh.seek(pos)
                byte = fh.read(1)
                fh.seek(pos)
                fh.write(bytes([byte[0] ^ 0xFF]))
        except FileNotFoundError:  # repaired or collected while we looked
            return None
        return f"file {path.name[:12]}@{pos}"

    @staticmethod
    def _flip_segment(node: LocalNode, rng: random.Random) -> str | None:
        """Rot inside a segment file: one byte of one chunk record's bytes (not its head)."""
        records = segment_records(node.data_dir)
        if not records:
            return None
        sha = rng.choice(sorted(records))
        loc = records[sha]
        if loc.length == 0:
            return None
        pos = rng.randrange(loc.length)
        try:
            fd = os.open(loc.path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:  # compacted away while we looked
            return None
        try:
            byte = os.pread(fd, 1, loc.offset + pos)
            if len(byte) != 1:
                return None
            os.pwrite(fd, bytes([byte[0] ^ 0xFF]), loc.offset + pos)
        finally:
            os.close(fd)
        return f"segment {sha[:12]}@{pos}"

    @staticmethod
    def _flip_db(node: LocalNode, rng: random.Random) -> str | None:
        """Rot inside the metadata database: one small chunk's bytes change, its sha does not."""
        db = node.data_dir / "meta.sqlite"
        if not db.exists():
            return None
        try:
            con = sqlite3.connect(db, timeout=5.0)
            try:
                # A small file's bytes live in its row; chunks that came alone, by name.
                copies = con.execute(
                    "SELECT 'files', 'key', key, sha256 FROM files WHERE data IS NOT NULL"
                    " UNION ALL SELECT 'small_chunks', 'sha', sha, sha FROM small_chunks"
                ).fetchall()
                if not copies:
                    return None
                table, column, name, sha = rng.choice(sorted(copies))
                where = f"FROM {table} WHERE {column} = ?"
                row = con.execute(f"SELECT data {where}", (name,)).fetchone()
                if not row or not row[0]:
                    return None
                data = bytearray(row[0])
                pos = rng.randrange(len(data))
                data[pos] ^= 0xFF
                with con:
                    con.execute(f"UPDATE {table} SET data = ? WHERE {column} = ?", (bytes(data), name))
            finally:
                con.close()
        except sqlite3.Error:
            return None  # busy or schema changed: skip this time
        return f"db {sha[:12]}@{pos}"

    # ---- network faults (netns backend only) ----
    def partition(self, groups: Sequence[Sequence[LocalNode]]) -> None:
        raise Unsupported("partitions need the netns backend (root and iproute2)")

    def partition_one_way(self, src: Sequence[LocalNode], dst: Sequence[LocalNode]) -> None:
        raise Unsupported("partitions need the netns backend (root and iproute2)")

    def heal_network(self) -> None:
        """Nothing to heal without a network backend."""

    # ---- recovery ----
    def heal(self) -> None:
        """End every fault: resume frozen nodes, start dead ones, heal the network."""
        self.heal_network()
        for node in self.nodes:
            if node.paused:
                self.resume(node)
        for node in self.nodes:
            if not node.running:
                self.start(node)

    def down(self) -> list[LocalNode]:
        return [n for n in self.nodes if not n.running or n.paused]

    def wait_members_alive(self, timeout: float = 30.0) -> float:
        """Wait until every node sees every node alive; return the seconds it took."""
        t = time.monotonic()
        deadline = t + timeout
        while True:
            try:
                if all(_all_alive(n, len(self.nodes)) for n in self.nodes):
                    return time.monotonic() - t
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"members not all alive after {timeout:.0f}s")
            time.sleep(0.2)

    def close(self) -> None:
        for node in self.nodes:
            node.terminate()


def _all_alive(node: LocalNode, n: int) -> bool:
    status, body = http_json(node.url + "/status", timeout=2.0)
    if status != 200 or not isinstance(body, dict):
        return False
    states = [m.get("state") for m in body.get("members", [])]
    return states.count("alive") >= n


@dataclass
class Schedule:
    """Random faults: at most ``max_down`` nodes hurt at once, so R-1 replicas at most are gone."""

    faults: Sequence[str] = PROCESS_FAULTS
    max_down: int = 1
    interval: tuple[float, float] = (1.0, 3.0)
    flip_every: float = 0.0  # seconds between byte flips (0 = never); flips do not count as "down"
    seed: int | None = None
    counts: dict[str, int] = field(default_factory=dict)

    def run(self, nemesis: Nemesis, duration: float, stop: threading.Event | None = None) -> None:
        rng = random.Random(self.seed)
        stop = stop or threading.Event()
        deadline = time.monotonic() + duration
        next_flip = time.monotonic() + self.flip_every if self.flip_every else float("inf")
        partitioned = False
        while time.monotonic() < deadline and not stop.is_set():
            if time.monotonic() >= next_flip:
                node = rng.choice([n for n in nemesis.nodes if n.running] or nemesis.nodes)
                if nemesis.flip_bytes(node, rng) is not None:
                    self._count("flip_bytes")
                next_flip = time.monotonic() + self.flip_every
            hurt = nemesis.down()
            if partitioned or hurt:
                heal_now = rng.random() < 0.5 or len(hurt) >= self.max_down or partitioned
            else:
                heal_now = False
            if heal_now and partitioned:
                nemesis.heal_network()
                partitioned = False
                self._count("heal")
            elif heal_now and hurt:
                node = rng.choice(hurt)
                if node.paused:
                    nemesis.resume(node)
                else:
                    nemesis.start(node)
            elif self.faults:
                fault = rng.choice(list(self.faults))
                if fault in ("partition", "one_way") and not hurt:
                    self._partition(nemesis, rng, fault)
                    partitioned = True
                elif fault in ("kill", "pause", "restart"):
                    healthy = [n for n in nemesis.nodes if n.running and not n.paused]
                    if healthy and len(hurt) < self.max_down:
                        getattr(nemesis, fault)(rng.choice(healthy))
                        self._count(fault)
            stop.wait(rng.uniform(*self.interval))
        nemesis.heal()

    def _partition(self, nemesis: Nemesis, rng: random.Random, fault: str) -> None:
        nodes = list(nemesis.nodes)
        rng.shuffle(nodes)
        minority = nodes[: max(1, min(self.max_down, (len(nodes) - 1) // 2 or 1))]
        majority = nodes[len(minority) :]
        if fault == "one_way":
            nemesis.partition_one_way(minority, majority)
        else:
            nemesis.partition([majority, minority])
        self._count(fault)

    def _count(self, fault: str) -> None:
        self.counts[fault] = self.counts.get(fault, 0) + 1


def segment_records(data_dir: Path) -> dict[str, Location]:
    """Where a node's chunk records are (sha -> segment file, offset, length), read from its
    segment index without the node's help: read-only, so it is safe while the node runs. A
    record compacted meanwhile may be reported at its old place (dead bytes by then)."""
    folder = Path(data_dir) / "segments"
    index = folder / INDEX_NAME
    if not index.exists():
        return {}
    try:
        con = sqlite3.connect(f"file:{index}?mode=ro", uri=True, timeout=5.0)
        try:
            rows = con.execute("SELECT sha, segment, offset, length FROM records").fetchall()
        finally:
            con.close()
    except sqlite3.Error:
        return {}  # busy, or being created: skip this time
    return {sha: Location(str(folder / f"{seg:08d}.seg"), off, length) for sha, seg, off, length in rows}
