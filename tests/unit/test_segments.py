"""Tries to break the segment store (p2pstore/storage/segments.py) and the ChunkStore on top of
it, on real files with real fsync: round trips, restarts, crash recovery (lost index rows, torn
tails, flipped bytes, a real SIGKILL mid-append), corruption on disk, compaction (also racing
deletes and appends), and a stateful model of write/delete/compact/restart."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from p2pstore.errors import CorruptData
from p2pstore.storage.chunks import ChunkStore, read_sum
from p2pstore.storage.segments import HEAD, INDEX_NAME, MAGIC, SegmentStore, _Active, span
from tests.support.pagecache import resident_fraction

KIB = 1024


def sha_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put(store: SegmentStore, data: bytes) -> str:
    """Append ``data`` as the ChunkStore does (its sha256 and read sum computed here)."""
    sha = sha_of(data)
    store.append(sha, [data], read_sum(data), cached=True)
    return sha


def active(store: SegmentStore, cached: bool = True) -> _Active:
    """The segment ``store`` appends ``cached`` records to, started as the next append would."""
    with store._append_lock:
        return store._active.get(cached) or store._active.setdefault(cached, store._start_segment(cached))


def seg_ids(folder: Path) -> list[int]:
    return sorted(int(p.stem) for p in folder.glob("*.seg"))


def read_seg(store: SegmentStore, sha: str) -> bytes | None:
    pieces = store.read(sha, 64 * KIB)
    return None if pieces is None else b"".join(pieces)


def live_sum(store: SegmentStore) -> int:
    """What ``live_bytes()[0]`` must be: heads and bytes of every indexed record."""
    return sum(span(loc.length) for loc in store.locations().values())


def flip(path: str | Path, offset: int) -> None:
    """Flip every bit of one byte on disk (and make it durable)."""
    fd = os.open(path, os.O_RDWR)
    try:
        byte = os.pread(fd, 1, offset)
        os.pwrite(fd, bytes([byte[0] ^ 0xFF]), offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def lose_index_of(folder: Path, segment: int) -> None:
    """What a crash before the index's WAL reached the disk leaves: the segment's records
    unknown to the index, and the segment not marked as fully indexed."""
    db = sqlite3.connect(folder / INDEX_NAME, isolation_level=None)
    try:
        db.execute("DELETE FROM records WHERE segment = ?", (segment,))
        db.execute("UPDATE segments SET live = 0, indexed = 0 WHERE id = ?", (segment,))
    finally:
        db.close()


def chunk_store(root: Path, roll_bytes: int) -> ChunkStore:
    """A ChunkStore whose segments roll at ``roll_bytes`` (ChunkStore takes the default)."""
    chunks = ChunkStore(root)
    chunks.segments.close()
    chunks.segments = SegmentStore(root / "segments", chunks.fsync, roll_bytes)
    return chunks


@pytest.fixture
def chunks(tmp_path: Path) -> Iterator[ChunkStore]:
    store = ChunkStore(tmp_path / "node")
    yield store
    store.close()


# ---- 1. round trips ----


def test_write_read_length_has_touch_delete_round_trip(chunks: ChunkStore, rng: random.Random) -> None:
    blobs = [rng.randbytes(rng.randint(1, 300 * KIB)) for _ in range(12)]
    shas = [chunks.write(b) for b in blobs]
    assert shas == [sha_of(b) for b in blobs]
    assert not list((chunks.root / "chunks").rglob("*/*")), "written whole: records, not files"
    for sha, blob in zip(shas, blobs, strict=True):
        assert chunks.has(sha) and chunks.length(sha) == len(blob)
        assert chunks.read(sha) == (blob, read_sum(blob))
        assert chunks.read(sha, read_sum(blob)) == (blob, None)
        pieces, fast = chunks.read_pieces(sha, piece=4096)
        assert b"".join(pieces) == blob and fast == read_sum(blob) and all(len(p) <= 4096 for p in pieces)
        assert chunks.verify(sha) == read_sum(blob)
        assert chunks.touched(sha) is not None
    assert sorted(chunks.iter_shas()) == sorted(shas)

    assert chunks.touch(shas[0], 1_000_000.5)
    assert chunks.touched(shas[0]) == 1_000_000.5
    size_before = chunks.segments.live_bytes()[1]
    assert chunks.write(blobs[0]) == shas[0]  # stored once: found, touched, not appended again
    assert chunks.segments.live_bytes()[1] == size_before
    assert chunks.touched(shas[0]) > 1_000_000.5

    for sha in shas[:6]:
        chunks.delete(sha)
    for sha, blob in zip(shas, blobs, strict=True):
        gone = sha in shas[:6]
        assert chunks.has(sha) is not gone
        assert chunks.length(sha) == (None if gone else len(blob))
        assert chunks.touched(sha) is None if gone else chunks.touched(sha) is not None
        assert chunks.touch(sha) is not gone
        assert chunks.verify(sha) == (None if gone else read_sum(blob))
        if gone:
            with pytest.raises(FileNotFoundError):
                chunks.read(sha)
            with pytest.raises(FileNotFoundError):
                chunks.read_pieces(sha)
    assert sorted(chunks.iter_shas()) == sorted(shas[6:])
    assert (
        chunks.segments.live_bytes()[0] == live_sum(chunks.segments) == sum(span(len(b)) for b in blobs[6:])
    )
    chunks.delete(shas[0])  # deleting twice is harmless
    assert not chunks.segments.delete(shas[0])


@given(when=st.floats(min_value=1e-3, max_value=4e9, allow_nan=False))
def test_touch_then_touched_is_the_same_time(when: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = SegmentStore(Path(tmp), fsync="never")
        try:
            sha = put(store, b"x" * 100)
            assert store.touch(sha, when) and store.touched(sha) == when
        finally:
            store.close()


def test_touch_at_time_zero_is_time_zero(chunks: ChunkStore) -> None:
    in_file = chunks.write_file(b"f" * 1000, sha_of(b"f" * 1000))
    in_segment = chunks.write(b"s" * 1000)
    for sha in (in_file, in_segment):
        assert chunks.touch(sha, 0.0)
    assert chunks.touched(in_file) == 0.0
    assert chunks.touched(in_segment) == 0.0


def test_names_after_merges_files_and_records_in_order(chunks: ChunkStore, rng: random.Random) -> None:
    blobs = [rng.randbytes(rng.randint(1, 3000)) for _ in range(80)]
    names: set[str] = set()
    for i, blob in enumerate(blobs):
        sha = sha_of(blob)
        if i % 4 < 2:  # a file (staged upload) ...
            chunks.write_file(blob, sha)
        if i % 4 > 0:  # ... a record, or both (a repair while the file was there)
            chunks.segments.append(sha, [blob], read_sum(blob), True)
        names.add(sha)
    in_file = {s for s in names if os.path.exists(chunks.file(s))}
    in_segment = {s for s in names if chunks.segments.locate(s)}
    assert in_file - in_segment and in_segment - in_file and in_file & in_segment
    everything = sorted(names)
    files = [n for n in everything if os.path.exists(chunks.file(n))]
    probes = ["", *everything, *(n[:k] for n in files + everything[::7] for k in (1, 2, 3, 63)), "g"]

    @settings(max_examples=150)
    @given(after=st.sampled_from(probes) | st.text("0123456789abcdef", max_size=64), limit=st.integers(1, 70))
    def page_is_the_next_names(after: str, limit: int) -> None:
        assert chunks.names_after(after, limit) == [n for n in everything if n > after][:limit]

    page_is_the_next_names()
    for limit in (1, 2, 7, 1000):  # a whole walk: every name once, none skipped
        walked, after = [], ""
        while page := chunks.names_after(after, limit):
            walked += page
            after = page[-1]
        assert walked == everything


def records_in(path: str | Path) -> list[tuple[str, int, int]]:
    """(sha, offset of its bytes, length) of every record of a segment file, checking that the
    records lie back to back (each padded to 4 KiB) up to the end of the file, each whole and
    matching its read sum."""
    data = Path(path).read_bytes()
    out, at = [], 0
    while at < len(data):
        magic, raw, length, fast = HEAD.unpack_from(data, at)
        body = data[at + HEAD.size : at + HEAD.size + length]
        assert magic == MAGIC and len(body) == length and read_sum(body) == fast, f"{path} @ {at}"
        assert sha_of(body) == raw.hex()
        assert not any(data[at + HEAD.size + length : at + span(length)]), "padding is zeros"
        out.append((raw.hex(), at + HEAD.size, length))
        at += span(length)
    return out


def test_concurrent_appends_leave_no_hole_and_seal_every_segment(tmp_path: Path, rng: random.Random) -> None:
    folder = tmp_path / "segments"
    store = SegmentStore(folder, roll_bytes=300 * KIB)
    work = [[rng.randbytes(rng.randint(1, 64 * KIB)) for _ in range(25)] for _ in range(6)]
    work[1][:5] = work[0][:5]  # the same chunk written by two writers at once
    errors: list[BaseException] = []

    def writer(blobs: list[bytes]) -> None:
        try:
            for blob in blobs:
                if store.touch(sha_of(blob)) is False:  # as ChunkStore.write does
                    put(store, blob)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(blobs,)) for blobs in work]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads) and not errors, errors
    blobs = {sha_of(b): b for w in work for b in w}
    try:
        assert {sha: read_seg(store, sha) for sha in store.locations()} == blobs
        assert store.live_bytes()[0] == live_sum(store)
        assert len(seg_ids(folder)) > 5
    finally:
        store.close()
    on_disk = {r[0] for i in seg_ids(folder) for r in records_in(store.path(i))}
    assert on_disk >= set(blobs)
    db = sqlite3.connect(folder / INDEX_NAME)
    try:
        assert db.execute("SELECT count(*) FROM segments WHERE indexed = 0").fetchone()[0] == 0
    finally:
        db.close()
    store = SegmentStore(folder)
    try:
        assert store.recovered == 0
        assert {sha: read_seg(store, sha) for sha in store.locations()} == blobs
        for sha, loc in store.locations().items():
            assert (sha, loc.offset, loc.length) in records_in(loc.path)
    finally:
        store.close()


# ---- 2. restart ----


def test_restart_reads_everything_and_starts_a_new_segment(tmp_path: Path, rng: random.Random) -> None:
    root = tmp_path / "node"
    blobs: dict[str, bytes] = {}
    seen_ids: list[int] = []
    for round_ in range(3):
        chunks = ChunkStore(root)
        try:
            current = active(chunks.segments).id
            assert current not in seen_ids and all(current > i for i in seen_ids)
            sizes = {i: os.path.getsize(chunks.segments.path(i)) for i in seen_ids}
            for sha, blob in blobs.items():
                assert chunks.read(sha, read_sum(blob))[0] == blob
                assert chunks.verify(sha) == read_sum(blob)
            for _ in range(5):
                blob = rng.randbytes(rng.randint(1, 200 * KIB))
                blobs[chunks.write(blob)] = blob
            if round_:
                gone = rng.choice(sorted(blobs))
                chunks.delete(gone)
                del blobs[gone]
            assert {i: os.path.getsize(chunks.segments.path(i)) for i in seen_ids} == sizes, (
                "old segment grew"
            )
            assert chunks.segments.recovered == 0  # a clean close leaves nothing to scan
            seen_ids.append(current)
        finally:
            chunks.close()
    chunks = ChunkStore(root)
    try:
        assert sorted(chunks.iter_shas()) == sorted(blobs)
        assert chunks.segments.live_bytes()[0] == live_sum(chunks.segments)
    finally:
        chunks.close()


# ---- 3. crash recovery ----


def test_a_lost_index_is_rebuilt_from_the_segments(tmp_path: Path, rng: random.Random) -> None:
    folder = tmp_path / "segments"
    SegmentStore(folder).close()
    before = tmp_path / "index-before"
    shutil.copy(folder / INDEX_NAME, before)  # the index as it was before the writes
    store = SegmentStore(folder)
    blobs = {put(store, b): b for b in (rng.randbytes(rng.randint(1, 150 * KIB)) for _ in range(20))}
    store.close()
    for leftover in folder.glob(INDEX_NAME + "-*"):
        leftover.unlink()
    shutil.copy(before, folder / INDEX_NAME)

    store = SegmentStore(folder)
    try:
        assert store.recovered == len(blobs)
        for sha, blob in blobs.items():
            assert read_seg(store, sha) == blob
            assert store.touched(sha) is not None
        assert store.live_bytes()[0] == live_sum(store) == sum(span(len(b)) for b in blobs.values())
    finally:
        store.close()
    chunks = ChunkStore(tmp_path)  # the ChunkStore over the same folder: verified reads
    try:
        assert chunks.segments.recovered == 0
        for sha, blob in blobs.items():
            assert chunks.read(sha) == (blob, read_sum(blob))
    finally:
        chunks.close()


def test_an_index_deleted_outright_is_rebuilt(tmp_path: Path, rng: random.Random) -> None:
    folder = tmp_path / "segments"
    blobs: dict[str, bytes] = {}
    for _ in range(2):
        store = SegmentStore(folder)
        blobs |= {put(store, b): b for b in (rng.randbytes(rng.randint(1, 90 * KIB)) for _ in range(6))}
        store.close()
    old_ids = seg_ids(folder)
    for index in folder.glob(INDEX_NAME + "*"):
        index.unlink()
    store = SegmentStore(folder)
    try:
        assert store.recovered == len(blobs)
        assert {sha: read_seg(store, sha) for sha in store.locations()} == blobs
        assert active(store).id > max(old_ids)
        assert store.live_bytes()[0] == live_sum(store)
    finally:
        store.close()


def test_rows_lost_from_the_index_are_indexed_again(tmp_path: Path, rng: random.Random) -> None:
    folder = tmp_path / "segments"
    store = SegmentStore(folder)
    segment = active(store).id
    blobs = {put(store, b): b for b in (rng.randbytes(rng.randint(1, 100 * KIB)) for _ in range(10))}
    store.close()
    lose_index_of(folder, segment)
    store = SegmentStore(folder)
    try:
        assert store.recovered == len(blobs)
        assert {sha: read_seg(store, sha) for sha in blobs} == blobs
        assert store.live_bytes()[0] == live_sum(store)
    finally:
        store.close()
    store = SegmentStore(folder)  # indexed once: not scanned again
    try:
        assert store.recovered == 0 and {sha: read_seg(store, sha) for sha in blobs} == blobs
    finally:
        store.close()


def _garbage(rng: random.Random) -> bytes:
    return rng.randbytes(rng.randint(1, 200))


LAST = 2000  # bytes of the last whole record in the torn segment
PAD_LAST = span(LAST) - HEAD.size - LAST  # the zeros after them


def record(data: bytes, magic: bytes = MAGIC) -> bytes:
    """One segment record as SegmentStore writes it: head, bytes, zeros up to 4 KiB."""
    head = HEAD.pack(magic, bytes.fromhex(sha_of(data)), len(data), read_sum(data))
    return head + data + bytes(span(len(data)) - HEAD.size - len(data))


TAILS = {
    "cut mid-data": lambda size, rng: ("cut", size - PAD_LAST - rng.randint(1, LAST - 1)),
    "cut mid-head": lambda size, rng: ("cut", size - PAD_LAST - LAST - rng.randint(1, HEAD.size - 1)),
    "garbage": lambda size, rng: ("add", _garbage(rng)),
    "partial head": lambda size, rng: ("add", HEAD.pack(MAGIC, rng.randbytes(32), 999, b"\0" * 16)[:40]),
    "head past the end": lambda size, rng: (
        "add",
        HEAD.pack(MAGIC, rng.randbytes(32), 10_000, rng.randbytes(16)),
    ),
    "wrong magic": lambda size, rng: ("add", record(b"\0" * 3000, magic=b"p2pseg00")),
    "head with a huge length": lambda size, rng: (
        "add",
        HEAD.pack(MAGIC, rng.randbytes(32), 1 << 40, b"\0" * 16),
    ),
}


@pytest.mark.parametrize("tail", sorted(TAILS))
def test_a_torn_tail_keeps_the_whole_records_before_it(tmp_path: Path, rng: random.Random, tail: str) -> None:
    folder = tmp_path / "segments"
    store = SegmentStore(folder)
    segment = active(store).id
    blobs = [rng.randbytes(rng.randint(6000, 60 * KIB)) for _ in range(8)] + [rng.randbytes(LAST)]
    shas = [put(store, b) for b in blobs]
    store.close()
    path = Path(store.path(segment))
    how, arg = TAILS[tail](path.stat().st_size, rng)
    if how == "cut":
        os.truncate(path, arg)
        whole = [s for s in shas if store_end(shas, blobs, s) <= arg]
        assert len(whole) == len(shas) - 1
    else:
        with open(path, "ab") as fh:
            fh.write(arg)
        whole = shas
    after = rng.randbytes(3000)  # a whole record after the torn part is never trusted
    with open(path, "ab") as fh:
        fh.write(record(after))
    lose_index_of(folder, segment)

    store = SegmentStore(folder)
    try:
        assert store.recovered == len(whole)
        assert sorted(store.locations()) == sorted(whole)
        for sha, blob in zip(shas, blobs, strict=True):
            assert read_seg(store, sha) == (blob if sha in whole else None)
        assert store.locate(sha_of(after)) is None
        assert store.live_bytes()[0] == live_sum(store)
        put(store, b"new")
        assert store.locate(sha_of(b"new")).path != str(path), "appended after a torn tail"
    finally:
        store.close()


def store_end(shas: list[str], blobs: list[bytes], sha: str) -> int:
    """Where record ``sha`` ends in a segment that holds ``blobs`` in order."""
    end = 0
    for s, b in zip(shas, blobs, strict=True):
        end += span(len(b))
        if s == sha:
            return end
    raise KeyError(sha)


def test_a_record_with_flipped_bytes_is_not_indexed_again(tmp_path: Path, rng: random.Random) -> None:
    folder = tmp_path / "segments"
    store = SegmentStore(folder)
    segment = active(store).id
    blobs = [rng.randbytes(rng.randint(1000, 50 * KIB)) for _ in range(5)]
    shas = [put(store, b) for b in blobs]
    bad = store.locate(shas[2])
    store.close()
    flip(bad.path, bad.offset + rng.randrange(bad.length))
    lose_index_of(folder, segment)

    store = SegmentStore(folder)
    try:
        assert store.recovered == 4
        assert store.locate(shas[2]) is None and read_seg(store, shas[2]) is None
        for i in (0, 1, 3, 4):
            assert read_seg(store, shas[i]) == blobs[i]
        assert store.live_bytes()[0] == live_sum(store)
    finally:
        store.close()


def whole_lines(text: str) -> list[str]:
    """The lines a killed child printed whole (a kill mid-print leaves a part of one)."""
    return [line for line in text.splitlines(keepends=True) if line.endswith("\n")]


@pytest.fixture(scope="module")
def one_segment(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[str, int, int]]]:
    """A node folder whose one segment holds 12 records: (sha, offset of its bytes, length)."""
    root = tmp_path_factory.mktemp("one-segment")
    store = SegmentStore(root / "segments")
    pick = random.Random(12)
    for _ in range(12):
        put(store, pick.randbytes(pick.randint(300, 20 * KIB)))
    segment = active(store).id
    store.close()
    lose_index_of(root / "segments", segment)
    return root, records_in(store.path(segment))


@settings(max_examples=60)
@given(data=st.data())
def test_any_one_damage_to_an_unindexed_segment_is_contained(
    one_segment: tuple[Path, list[tuple[str, int, int]]], data: st.DataObject
) -> None:
    """One flipped byte or a cut anywhere in a segment the index lost: start-up never fails,
    every record the damage did not touch and that lies before it is indexed with its bytes,
    and no chunk is served with bytes other than its own."""
    template, records = one_segment
    k = data.draw(st.integers(0, len(records) - 1), label="record")
    hit_sha, hit_start, hit_len = records[k]
    # where in record k the damage is: its head (magic, name, length, read sum) or its bytes
    field = data.draw(st.integers(0, HEAD.size - 1) | st.integers(HEAD.size, HEAD.size + hit_len - 1))
    at = hit_start - HEAD.size + field
    cut = data.draw(st.booleans(), label="cut")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copytree(template / "segments", root / "segments")
        (path,) = (root / "segments").glob("*.seg")
        if cut:
            os.truncate(path, at)
        else:
            flip(path, at)
        chunks = ChunkStore(root)
        try:
            held = chunks.segments.locations()
            if 40 <= field < 48 and not cut:  # its length: the scan goes on at a 4 KiB multiple
                before, others = {r[0] for r in records[:k]}, {r[0] for r in records if r[0] != hit_sha}
                assert before <= set(held) <= others  # may find later heads again, never record k
                expected = set(held)
            elif cut or field < 8:  # the scan stops at record k
                expected = {r[0] for r in records[:k]}
            elif 8 <= field < 40:  # its name: indexed under a name its bytes do not hash to
                expected = {r[0] for r in records if r[0] != hit_sha}
                (bogus,) = set(held) - expected
                with pytest.raises(CorruptData):
                    chunks.read(bogus)
                assert chunks.verify(bogus) is None
                expected.add(bogus)
            else:  # its read sum or its bytes: record k alone is left out
                expected = {r[0] for r in records if r[0] != hit_sha}
            assert set(held) == expected
            for sha in expected & {r[0] for r in records}:
                blob, _ = chunks.read(sha)
                assert sha_of(blob) == sha
            assert chunks.segments.live_bytes()[0] == live_sum(chunks.segments)
        finally:
            chunks.close()


WRITER = textwrap.dedent(
    """
    import random, sys
    from pathlib import Path
    from p2pstore.storage.chunks import ChunkStore
    root, seed = Path(sys.argv[1]), int(sys.argv[2])
    rng = random.Random(seed)
    chunks = ChunkStore(root)
    i = 0
    while True:
        data = rng.randbytes(rng.randint(1, 120_000))
        sha = chunks.write(data)
        print(i, sha, flush=True)
        i += 1
    """
)


def _blobs(seed: int) -> Iterator[bytes]:
    rng = random.Random(seed)
    while True:
        yield rng.randbytes(rng.randint(1, 120_000))


def test_sigkill_mid_append_loses_no_acknowledged_chunk(tmp_path: Path, rng: random.Random) -> None:
    root = tmp_path / "node"
    acknowledged: dict[str, bytes] = {}
    for crash in range(3):  # each crash leaves one more unsealed segment to recover
        seed = rng.randrange(1 << 30)
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(root), str(seed)], stdout=subprocess.PIPE, text=True
        )
        lines = []
        try:
            for _ in range(rng.randint(3, 60)):
                line = proc.stdout.readline()
                assert line.endswith("\n"), f"writer died: rc {proc.poll()}"
                lines.append(line)
            os.kill(proc.pid, signal.SIGKILL)
            lines += whole_lines(proc.stdout.read())  # printed before the kill landed
        finally:
            proc.kill()
            proc.wait()
            proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL
        for line, blob in zip(lines, _blobs(seed), strict=False):
            i, sha = line.split()
            assert sha == sha_of(blob), f"line {i}"
            acknowledged[sha] = blob

        chunks = ChunkStore(root)
        try:
            for sha, blob in acknowledged.items():
                assert chunks.read(sha) == (blob, read_sum(blob)), (
                    f"acknowledged {sha[:12]} lost after crash {crash}"
                )
            for sha in chunks.iter_shas():  # nothing indexed is corrupt, acknowledged or not
                assert chunks.verify(sha) is not None
            assert chunks.segments.live_bytes()[0] == live_sum(chunks.segments)
        finally:
            chunks.close()


COMPACTOR = textwrap.dedent(
    """
    import hashlib, random, sys
    from pathlib import Path
    from p2pstore.storage.chunks import read_sum
    from p2pstore.storage.segments import SegmentStore
    folder, seed = Path(sys.argv[1]), int(sys.argv[2])
    rng = random.Random(seed)
    store = SegmentStore(folder, roll_bytes=256 * 1024)
    live = sorted(store.locations())
    while True:
        for _ in range(rng.randint(1, 12)):
            data = rng.randbytes(rng.randint(1, 40_000))
            sha = hashlib.sha256(data).hexdigest()
            store.append(sha, [data], read_sum(data), True)
            live.append(sha)
            print("w", sha, flush=True)
        for _ in range(rng.randint(0, 10)):
            if live:
                sha = live.pop(rng.randrange(len(live)))
                print("D", sha, flush=True)
                store.delete(sha)
                print("d", sha, flush=True)
        print("c", store.compact(folder.parent / "quarantine"), flush=True)
    """
)


def test_sigkill_mid_compaction_loses_no_live_chunk(tmp_path: Path, rng: random.Random) -> None:
    folder = tmp_path / "segments"
    (tmp_path / "quarantine").mkdir()
    must_live: set[str] = set()
    compactions = 0
    for crash in range(4):
        proc = subprocess.Popen(
            [sys.executable, "-c", COMPACTOR, str(folder), str(rng.randrange(1 << 30))],
            stdout=subprocess.PIPE,
            text=True,
        )
        lines = []
        try:
            while sum(line.startswith("c ") for line in lines) < rng.randint(3, 12):
                line = proc.stdout.readline()
                assert line.endswith("\n"), f"compactor died: rc {proc.poll()}"
                lines.append(line)
            os.kill(proc.pid, signal.SIGKILL)
            lines += whole_lines(proc.stdout.read())
        finally:
            proc.kill()
            proc.wait()
            proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL
        for line in lines:
            what, arg = line.split()
            if what == "w":
                must_live.add(arg)
            elif what == "D":  # being deleted when the kill came, or deleted: either is fine
                must_live.discard(arg)
            elif what == "c":
                compactions += int(arg) > 0
        store = SegmentStore(folder, roll_bytes=256 * KIB)
        try:
            held = store.locations()
            assert must_live <= set(held), f"live chunks lost after crash {crash}"
            for sha in held:  # every indexed chunk, resurrected or not, holds its own bytes
                assert sha_of(read_seg(store, sha)) == sha
            assert store.live_bytes()[0] == live_sum(store)
            must_live = set(held)  # the next writer process starts from what is indexed now
        finally:
            store.close()
    assert compactions > 0 and not list((tmp_path / "quarantine").iterdir())


CRASH_BETWEEN_ROW_AND_LIVE = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from p2pstore.storage.chunks import read_sum
    from p2pstore.storage.segments import SegmentStore
    store = SegmentStore(Path(sys.argv[1]))
    def crash_before_live_count(sql):
        if "SET live = live +" in sql:
            os.kill(os.getpid(), signal.SIGKILL)
    store._db.set_trace_callback(crash_before_live_count)
    data = b"z" * 5000
    store.append(sys.argv[2], [data], read_sum(data), True)
    """
)


def test_a_crash_between_the_row_and_the_live_count_keeps_the_count_right(tmp_path: Path) -> None:
    folder = tmp_path / "segments"
    sha = sha_of(b"z" * 5000)
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_BETWEEN_ROW_AND_LIVE, str(folder), sha], capture_output=True, timeout=120
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    store = SegmentStore(folder)
    try:
        assert read_seg(store, sha) == b"z" * 5000
        assert store.live_bytes()[0] == live_sum(store) == span(5000)
    finally:
        store.close()


# ---- 4. flipped bytes in an indexed record ----


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_flipped_bytes_are_never_served_and_go_to_quarantine(
    chunks: ChunkStore, rng: random.Random, where: str
) -> None:
    blob = rng.randbytes(200 * KIB)
    sha = chunks.write(blob)
    neighbour = rng.randbytes(70 * KIB)
    other = chunks.write(neighbour)
    loc = chunks.segments.locate(sha)
    at = {"first": 0, "middle": loc.length // 2, "last": loc.length - 1}[where]
    flip(loc.path, loc.offset + at)
    for known in (read_sum(blob), None, b"\0" * 16):
        with pytest.raises(CorruptData):
            chunks.read(sha, known)
        with pytest.raises(CorruptData):
            chunks.read_pieces(sha, known, piece=4096)
    assert chunks.verify(sha) is None
    moved = chunks.quarantine(sha)
    assert moved is not None and moved.parent == chunks.quarantine_dir
    bad = bytearray(blob)
    bad[at] ^= 0xFF
    assert moved.read_bytes() == bad
    assert not chunks.has(sha) and chunks.length(sha) is None and chunks.verify(sha) is None
    with pytest.raises(FileNotFoundError):
        chunks.read(sha)
    assert chunks.quarantine(sha) is None
    assert chunks.read(other, read_sum(neighbour)) == (neighbour, None)  # its neighbour is fine
    assert chunks.write(blob) == sha and chunks.read(sha) == (blob, read_sum(blob))  # repair writes it anew


def test_an_indexed_record_cut_short_on_disk_reads_as_corrupt(chunks: ChunkStore, rng: random.Random) -> None:
    blob = rng.randbytes(100 * KIB)
    sha = chunks.write(blob)
    loc = chunks.segments.locate(sha)
    os.truncate(loc.path, loc.offset + loc.length // 2)
    assert chunks.verify(sha) is None
    with pytest.raises(CorruptData):
        chunks.read(sha)


# ---- 5. compaction ----


def fill(store: SegmentStore, rng: random.Random, count: int, size: int) -> dict[str, bytes]:
    return {put(store, b): b for b in (rng.randbytes(size) for _ in range(count))}


def by_segment(store: SegmentStore) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for sha, loc in store.locations().items():
        out.setdefault(int(Path(loc.path).stem), []).append(sha)
    return out


def oldest_segment(store: SegmentStore) -> tuple[int, list[str]]:
    """The oldest segment's id and its chunks in offset order."""
    target = sorted(by_segment(store))[0]
    return target, sorted(by_segment(store)[target], key=lambda s: store.locate(s).offset)


def folders(tmp_path: Path) -> tuple[Path, Path]:
    """A segment folder and an existing quarantine folder beside it."""
    quarantine = tmp_path / "quarantine"
    quarantine.mkdir()
    return tmp_path / "segments", quarantine


def test_compaction_frees_a_mostly_dead_segment_and_keeps_the_live(
    tmp_path: Path, rng: random.Random
) -> None:
    folder, quarantine = folders(tmp_path)
    store = SegmentStore(folder, roll_bytes=1 << 20)
    blobs = fill(store, rng, 35, 100 * KIB)  # ~10 records per segment: 3 sealed, 1 active
    groups = by_segment(store)
    sparse, dense = sorted(groups)[:2]
    assert len(groups[sparse]) >= 10 and len(groups[dense]) >= 10
    for sha in groups[sparse][2:] + groups[dense][:3]:
        assert store.delete(sha)
        del blobs[sha]
    kept = groups[sparse][:2]
    for i, sha in enumerate(blobs):
        store.touch(sha, 5_000.0 + i)
    touched = {sha: store.touched(sha) for sha in blobs}
    sparse_size = os.path.getsize(store.path(sparse))
    assert store.live_bytes()[0] == live_sum(store)

    freed = store.compact(quarantine)
    assert freed == sparse_size - sum(span(len(blobs[s])) for s in kept) > 0
    assert not os.path.exists(store.path(sparse))
    assert store.compact(quarantine) == 0, "a segment with at least half live is left alone"
    assert os.path.exists(store.path(dense))
    for sha, blob in blobs.items():
        assert read_seg(store, sha) == blob and store.touched(sha) == touched[sha]
    assert all(int(Path(store.locate(s).path).stem) != sparse for s in kept)
    assert store.live_bytes()[0] == live_sum(store)
    assert not list(quarantine.iterdir())
    store.close()

    store = SegmentStore(folder, roll_bytes=1 << 20)
    try:
        assert store.recovered == 0
        assert {sha: read_seg(store, sha) for sha in store.locations()} == blobs
        assert {sha: store.touched(sha) for sha in blobs} == touched
        assert store.live_bytes()[0] == live_sum(store)
    finally:
        store.close()


def test_chunkstore_compact_quarantines_a_corrupt_live_record(tmp_path: Path, rng: random.Random) -> None:
    chunks = chunk_store(tmp_path / "node", roll_bytes=1 << 20)
    try:
        store = chunks.segments
        blobs = {chunks.write(b): b for b in (rng.randbytes(100 * KIB) for _ in range(25))}
        chunks.compact()  # the empty segment left by chunk_store's swap, if any
        groups = by_segment(store)
        victim_segment = sorted(groups)[0]
        live = groups[victim_segment][:3]
        for sha in groups[victim_segment][3:]:
            chunks.delete(sha)
            del blobs[sha]
        rotten = live[1]
        loc = store.locate(rotten)
        flip(loc.path, loc.offset + rng.randrange(loc.length))

        freed = chunks.compact()
        assert freed > 0 and not os.path.exists(store.path(victim_segment))
        assert not chunks.has(rotten)
        (moved,) = [p for p in chunks.quarantine_dir.iterdir() if p.name.startswith(rotten)]
        assert moved.stat().st_size == len(blobs[rotten]) and moved.read_bytes() != blobs[rotten]
        del blobs[rotten]
        for sha, blob in blobs.items():
            assert chunks.read(sha, read_sum(blob)) == (blob, None)
        assert store.live_bytes()[0] == live_sum(store)
    finally:
        chunks.close()


def test_compaction_of_a_segment_cut_short_forgets_the_lost_records(
    tmp_path: Path, rng: random.Random
) -> None:
    folder, quarantine = folders(tmp_path)
    store = SegmentStore(folder, roll_bytes=256 * KIB)
    try:
        live = fill(store, rng, 30, 20 * KIB)
        _, rows = oldest_segment(store)
        kept, lost = rows[0], rows[-1]
        for sha in rows[1:-1]:
            store.delete(sha)
        loc = store.locate(lost)
        os.truncate(loc.path, loc.offset - HEAD.size // 2)  # the disk lost the last record
        assert store.compact(quarantine) > 0
        assert store.locate(lost) is None and not os.path.exists(loc.path)
        assert read_seg(store, kept) == live[kept]
        assert store.live_bytes()[0] == live_sum(store)
    finally:
        store.close()


class Interleaved(SegmentStore):
    """A SegmentStore that runs ``between`` at one chosen point of a real operation, so a race
    that threads hit only now and then happens every time, in a known order."""

    between: Callable[[str], None] | None = None
    armed_read: Callable[[], None] | None = None

    def _write_record(self, sha: str, pieces, fast: bytes, cached: bool):  # type: ignore[no-untyped-def]
        written = super()._write_record(sha, pieces, fast, cached)
        if self.between is not None:  # compaction copied ``sha``; its index row is not moved yet
            self.between(sha)
        return written

    def locate(self, sha: str):  # type: ignore[no-untyped-def]
        loc = super().locate(sha)
        hook, self.armed_read = self.armed_read, None
        if hook is not None:  # a reader looked the chunk up; it moves before the reader opens it
            hook()
        return loc


def test_a_delete_or_write_while_compaction_copies_is_kept(tmp_path: Path, rng: random.Random) -> None:
    folder, quarantine = folders(tmp_path)
    store = Interleaved(folder, roll_bytes=256 * KIB)
    try:
        live = fill(store, rng, 40, 20 * KIB)
        target, rows = oldest_segment(store)
        for sha in rows[4:]:
            store.delete(sha)
            del live[sha]
        copied_then_deleted, deleted_before_copy, deleted_then_rewritten, moved = rows[:4]
        events: list[str] = []

        def between(sha: str) -> None:
            events.append(sha)
            if sha == copied_then_deleted:
                store.between = None
                assert store.delete(sha)
                assert store.delete(deleted_before_copy)
                assert store.delete(deleted_then_rewritten)
                put(store, live[deleted_then_rewritten])  # a client writes it again meanwhile
                store.between = between

        store.between = between
        assert store.compact(quarantine) > 0
        store.between = None
        assert events[0] == copied_then_deleted and moved in events
        assert not os.path.exists(store.path(target))
        for sha in (copied_then_deleted, deleted_before_copy):
            assert store.locate(sha) is None
            del live[sha]
        assert {sha: read_seg(store, sha) for sha in store.locations()} == live
        assert store.live_bytes()[0] == live_sum(store)
        store.close()
        store = Interleaved(folder, roll_bytes=256 * KIB)
        assert {sha: read_seg(store, sha) for sha in store.locations()} == live
    finally:
        store.close()


def test_a_read_whose_segment_is_compacted_away_finds_the_moved_record(
    tmp_path: Path, rng: random.Random
) -> None:
    folder, quarantine = folders(tmp_path)
    store = Interleaved(folder, roll_bytes=256 * KIB)
    try:
        live = fill(store, rng, 30, 20 * KIB)
        target = sorted(by_segment(store))[0]
        keep, *rest = by_segment(store)[target]
        for sha in rest:
            store.delete(sha)
        old = store.locate(keep)
        store.armed_read = lambda: store.compact(quarantine)
        assert read_seg(store, keep) == live[keep]
        assert not os.path.exists(old.path) and store.locate(keep).path != old.path
    finally:
        store.close()


def test_a_chunk_appended_twice_at_once_is_counted_once(tmp_path: Path, rng: random.Random) -> None:
    store = SegmentStore(tmp_path / "segments")
    try:  # two writers that both found it absent (ChunkStore.write's touch) append it twice
        blob = rng.randbytes(30 * KIB)
        first = put(store, blob)
        loc = store.locate(first)
        assert put(store, blob) == first and store.locate(first) == loc
        assert store.live_bytes() == (span(len(blob)), 2 * span(len(blob)))
        assert store.delete(first) and store.live_bytes()[0] == 0 and store.locate(first) is None
    finally:
        store.close()


def race(
    store: SegmentStore, quarantine: Path, live: dict[str, bytes], doomed: list[str], fresh: list[bytes]
) -> int:
    """Compact over and over while one thread deletes ``doomed``, one appends ``fresh`` and one
    reads the chunks that stay; the bytes compaction freed."""
    kept = [s for s in live if s not in set(doomed)]
    go = threading.Barrier(4)
    done, deleted_all, appended_all = threading.Event(), threading.Event(), threading.Event()
    freed: list[int] = []
    errors: list[BaseException] = []

    def compactor() -> None:
        try:
            while not (deleted_all.is_set() and appended_all.is_set()):
                freed.append(store.compact(quarantine))
            freed.append(store.compact(quarantine))
        finally:
            done.set()

    def reader() -> None:  # a live chunk reads right while it moves
        pick = random.Random(len(kept))
        while not done.is_set():
            sha = pick.choice(kept)
            assert read_seg(store, sha) == live[sha], f"{sha[:12]} read wrong mid-compaction"

    def deleter() -> None:
        try:
            for sha in doomed:
                assert store.delete(sha)
        finally:
            deleted_all.set()

    def appender() -> None:
        try:
            for blob in fresh:
                put(store, blob)
        finally:
            appended_all.set()

    def run(fn: Callable[[], None]) -> None:
        try:
            go.wait()
            fn()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(fn,)) for fn in (compactor, deleter, appender, reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads) and not errors, errors
    return sum(freed)


def test_deletes_and_appends_racing_compaction_never_resurrect_or_lose(
    tmp_path: Path, rng: random.Random
) -> None:
    folder, quarantine = folders(tmp_path)
    roll = 256 * KIB
    store = SegmentStore(folder, fsync="always", roll_bytes=roll)
    live = fill(store, rng, 60, 16 * KIB)  # ~15 sealed segments
    deleted: set[str] = set()
    freed = 0
    try:
        for round_ in range(10):
            doomed = rng.sample(sorted(live), k=len(live) * 2 // 3)
            fresh = [rng.randbytes(rng.randint(1, 40 * KIB)) for _ in range(12)]
            freed += race(store, quarantine, live, doomed, fresh)
            for sha in doomed:
                del live[sha]
                deleted.add(sha)
            for blob in fresh:
                live[sha_of(blob)] = blob
                deleted.discard(sha_of(blob))
            assert set(store.locations()) == set(live), f"round {round_}"
            for sha, blob in live.items():
                assert read_seg(store, sha) == blob
            assert all(store.locate(s) is None for s in deleted)
            assert store.live_bytes()[0] == live_sum(store)
            if round_ % 2:  # a clean restart brings nothing back
                store.close()
                store = SegmentStore(folder, fsync="always", roll_bytes=roll)
                assert set(store.locations()) == set(live)
        for _ in range(50):
            freed += store.compact(quarantine)
        assert freed > 0 and not list(quarantine.iterdir())
        live_now, total = store.live_bytes()
        # Sealed segments are at least half live once compacted; the active one is under roll.
        assert total < 2 * live_now + roll, "compaction left mostly dead segments"
    finally:
        store.close()


# ---- 6. a stateful model ----


class SegmentModel(RuleBasedStateMachine):
    """write / delete / compact / restart / crash against a dict of what must be stored."""

    written = Bundle("written")

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="segmodel-"))
        self.roll = 512 * KIB
        self.chunks = chunk_store(self.tmp, self.roll)
        self.model: dict[str, bytes] = {}
        self.gone: set[str] = set()
        self.ever: dict[str, bytes] = {}

    @rule(target=written, size=st.integers(65 * KIB, 300 * KIB), seed=st.integers(0, 1 << 16))
    def write(self, size: int, seed: int) -> bytes:
        blob = random.Random(seed).randbytes(size)
        assert self.chunks.write(blob) == sha_of(blob)
        self.model[sha_of(blob)] = self.ever[sha_of(blob)] = blob
        self.gone.discard(sha_of(blob))
        return blob

    @rule(blob=written)
    def write_again(self, blob: bytes) -> None:
        sha = sha_of(blob)
        before = time.time()
        assert self.chunks.write(blob) == sha
        assert self.chunks.touched(sha) >= before  # found stored: marked in use for GC
        self.model[sha] = blob
        self.gone.discard(sha)

    @rule(blob=written)
    def delete(self, blob: bytes) -> None:
        sha = sha_of(blob)
        self.chunks.delete(sha)
        self.model.pop(sha, None)
        self.gone.add(sha)

    @rule()
    def compact(self) -> None:
        size_before = self.chunks.segments.live_bytes()[1]
        freed = self.chunks.compact()
        assert freed >= 0
        assert self.chunks.segments.live_bytes()[1] == size_before - freed
        assert not list(self.chunks.quarantine_dir.iterdir())

    @rule()
    def restart(self) -> None:
        self.chunks.close()
        self.chunks = chunk_store(self.tmp, self.roll)
        assert self.chunks.segments.recovered == 0

    @rule()
    def crash(self) -> None:
        """Stop without closing (the active segment is never sealed) and lose the index rows of
        that segment, as when the index's WAL had not reached the disk. A deleted chunk whose
        record is in that segment may come back (GC deletes it again), with its own bytes."""
        segments = self.chunks.segments
        actives = list(segments._active.values())
        segments._db.close()
        for open_segment in actives:
            os.close(open_segment.fd)
            lose_index_of(self.tmp / "segments", open_segment.id)
        self.chunks = chunk_store(self.tmp, self.roll)
        for sha in self.chunks.segments.iter_shas():
            if sha not in self.model:
                assert sha in self.gone, "a chunk never written appeared"
                self.gone.discard(sha)
                self.model[sha] = self.ever[sha]

    @invariant()
    def stored_exactly_the_model(self) -> None:
        for sha, blob in self.model.items():
            assert self.chunks.read(sha, read_sum(blob)) == (blob, None)
        for sha in self.gone:
            assert not self.chunks.has(sha)
        assert sorted(self.chunks.iter_shas()) == sorted(self.model)
        live = sum(span(len(b)) for b in self.model.values())
        assert self.chunks.segments.live_bytes()[0] == live

    def teardown(self) -> None:
        self.chunks.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


SegmentModel.TestCase.settings = settings(max_examples=25, stateful_step_count=40)
test_segment_model = SegmentModel.TestCase


class NoDirectIO(SegmentStore):
    """A SegmentStore on a file system that refuses O_DIRECT (EINVAL at open, as tmpfs did
    before Linux 6.6 and some FUSE file systems do)."""

    @staticmethod
    def _open(path: str, flags: int) -> int:
        if flags & os.O_DIRECT:
            os.close(os.open(path, flags & ~os.O_DIRECT, 0o644))  # created, then refused
            raise OSError(errno.EINVAL, "O_DIRECT not supported", path)
        return os.open(path, flags, 0o644)


@pytest.mark.parametrize("kind", [SegmentStore, NoDirectIO])
def test_uncached_records_stay_out_of_the_page_cache(tmp_path: Path, rng: random.Random, kind: type) -> None:
    """Records not to be cached are written with O_DIRECT where the file system takes it (never
    in the page cache), else written buffered and their pages dropped once synced; cached ones
    stay cached.
    Either way every record reads back whole, before and after a restart."""
    store = kind(tmp_path / "segments")
    # at least 8 KiB each: a record shorter than a page has no whole page of its own to look at
    blobs = {rng.randbytes(rng.randint(8 * KIB, 600 * KIB)): cached for cached in (False, True) * 4}
    shas = []
    for blob, cached in blobs.items():
        shas.append(sha_of(blob))
        store.append(shas[-1], [blob], read_sum(blob), cached=cached)
    assert active(store, cached=False).direct is (kind is SegmentStore)
    assert not active(store, cached=True).direct
    for sha, cached in zip(shas, blobs.values(), strict=True):
        loc = store.locate(sha)
        resident = resident_fraction(Path(loc.path), loc.offset, loc.length)
        assert resident == (1.0 if cached else 0.0), (sha, cached, resident)
    assert [read_seg(store, s) for s in shas] == list(blobs)
    store.close()
    store = kind(tmp_path / "segments")
    try:
        assert [read_seg(store, s) for s in shas] == list(blobs) and store.recovered == 0
    finally:
        store.close()
