"""A disk that really fills up: a node whose data directory is a 40 MiB tmpfs is sent a 100 MiB
upload (streamed, no Content-Length, so no free-space check can refuse it up front). The write
must fail with a clear 507, leave nothing behind, and the node must go on serving.

Needs root (mount); skipped with the reason otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from p2pstore.errors import InsufficientStorage
from p2pstore.storage.store import LocalStore
from tests.support.processes import NodeProcess, start_nodes, wait_for

MiB = 1 << 20


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path/full/node0`` on a 40 MiB tmpfs (the node's log stays on the real disk)."""
    mount = tmp_path / "full" / "node0"
    mount.mkdir(parents=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(mount)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def body(total: int) -> AsyncIterator[bytes]:
    piece = os.urandom(MiB)
    for _ in range(total // MiB):
        yield piece[:16] + os.urandom(16) + piece[32:]  # no two chunks alike: no dedupe


async def test_a_full_disk_fails_the_upload_cleanly(small_disk: Path) -> None:
    [node] = start_nodes(small_disk.parent, 1, fsync="always", min_free_bytes=0, chunk_size=MiB)
    try:
        await check_full_disk(node, small_disk)
    finally:
        node.terminate()


async def test_small_pieces_that_fill_the_disk_leave_nothing_behind(small_disk: Path) -> None:
    """Pieces smaller than the file buffer: when the disk fills, buffered bytes are still
    waiting, and closing the chunk file fails again. That second failure is cleaned up too (no
    500, no staging folder left on the full disk)."""
    store = LocalStore(small_disk, chunk_size=MiB, fsync="never")
    try:
        async def pieces() -> AsyncIterator[bytes]:
            for i in range(60 * 1024):  # 60 MiB in 1 KiB pieces
                yield i.to_bytes(8, "big") + bytes(1016)

        with pytest.raises(InsufficientStorage):
            await store.write_stream(pieces())
        assert list((small_disk / "tmp").iterdir()) == []
        blob = await store.write_stream(body(3 * MiB))  # and the space is usable again
        await store.discard(blob)
    finally:
        store.close()


async def test_writes_racing_for_the_last_bytes_get_507_never_500(small_disk: Path) -> None:
    """Concurrent writes pass the free-space check and then find the disk full in the chunk write
    or the database commit: each answer is 201 or 507, none an I/O error (500) or an "outcome
    unknown" (503: SQLite rolls a failed commit back itself, and a ROLLBACK after it would fail
    and hide the full disk)."""
    [node] = start_nodes(small_disk.parent, 1, fsync="always", min_free_bytes=0, chunk_size=MiB)
    try:
        filler = small_disk / "filler"
        with open(filler, "wb") as fh:
            fh.write(bytes(shutil.disk_usage(small_disk).free - 3 * MiB))
        async with aiohttp.ClientSession() as s:

            async def put(i: int) -> tuple[int, dict]:
                data = i.to_bytes(4, "big") + os.urandom(512 * 1024 - 4)
                async with s.put(f"{node.url}/files/race-{i}", data=data) as r:
                    return r.status, await r.json()

            answers = await asyncio.gather(*(put(i) for i in range(24)))
            assert {status for status, _ in answers} <= {201, 507}, answers
            assert any(status == 507 for status, _ in answers)
            assert all("disk" in a["error"] for status, a in answers if status == 507)
            filler.unlink()
            async with s.put(f"{node.url}/files/after", data=b"room again") as r:
                assert r.status == 201, await r.text()
        assert "Traceback" not in node.log_text()
    finally:
        node.terminate()


async def check_full_disk(node: NodeProcess, disk: Path) -> None:
    free_before = shutil.disk_usage(disk).free
    async with aiohttp.ClientSession() as s:
        async with s.put(f"{node.url}/files/keep", data=b"kept") as r:
            assert r.status == 201
        async with s.put(f"{node.url}/files/too-big", data=body(100 * MiB)) as r:
            answer = await r.json()
            assert r.status == 507, answer
            assert "disk full" in answer["error"]
        # nothing of the failed upload is left: no entry, no staged chunk, the space is back
        async with s.get(f"{node.url}/files") as r:
            assert [f["key"] for f in (await r.json())["files"]] == ["keep"]
        assert list((disk / "tmp").iterdir()) == []
        assert shutil.disk_usage(disk).free > free_before - 4 * MiB
        # and the node goes on: reads, new writes
        async with s.get(f"{node.url}/files/keep") as r:
            assert r.status == 200 and await r.read() == b"kept"
        async with s.put(f"{node.url}/files/after", data=os.urandom(3 * MiB)) as r:
            assert r.status == 201, await r.text()
    assert node.health() is not None
    assert "Traceback" not in node.log_text()


async def test_one_full_replica_does_not_fail_the_write(small_disk: Path) -> None:
    """Three nodes, the third on the small disk: a 60 MiB upload reaches W=2 replicas and is
    acknowledged; the full node cleans its staging, serves the file from its peers and keeps
    answering, its failed re-sync attempts counted, not crashing anything."""
    nodes = start_nodes(small_disk.parent, 3, fsync="never", min_free_bytes=8 * MiB, chunk_size=MiB)
    try:
        full = nodes[0]  # start_nodes puts node0 in small_disk
        assert full.data_dir == small_disk
        wait_for(lambda: all(len(n.get_json("/status")["members"]) == 3 for n in nodes), 20,
                 message="every node knows all three")  # fmt: skip
        async with aiohttp.ClientSession() as s:
            async with s.put(f"{nodes[1].url}/files/big", data=body(60 * MiB)) as r:
                answer = await r.json()
                assert r.status == 201, answer
                assert len(answer["replicas"]) == 2 and full.health()["node_id"] not in answer["replicas"]
            async with s.get(f"{full.url}/files/big") as r:
                assert r.status == 200 and len(await r.read()) == 60 * MiB
        # the failed staging is gone (repair may be trying, and failing, to copy a chunk now);
        # polled: the full node may still be cleaning up after the client had its answer
        wait_for(lambda: not [p for p in (small_disk / "tmp").iterdir() if p.name.startswith("up-")], 10,
                 message="the full node removed its failed staging")  # fmt: skip
        # repair copies what fits, but stops at --min-free-bytes instead of filling the disk
        wait_for(lambda: full.get_json("/status")["repair"]["failures"] >= 1, 30,
                 message="a repair pass on the full node")  # fmt: skip
        assert full.get_json("/status")["repair"]["bytes_copied"] > 0
        assert shutil.disk_usage(small_disk).free >= 8 * MiB - 2 * MiB  # a chunk in flight at most
        assert full.health() is not None
        assert "Traceback" not in full.log_text()
    finally:
        for node in nodes:
            node.terminate()


async def test_a_full_disk_can_be_emptied_through_the_api(small_disk: Path) -> None:
    """One node on a 40 MiB tmpfs without headroom (--min-free-bytes 0): files are written
    until the disk refuses (507). Then every file can still be deleted (the tombstone's commit
    uses the space reserve when nothing else is left), the space of the deleted files comes back
    within seconds (not at the next ten-minute GC), new writes succeed again, the reserve is
    put back, and the log holds no traceback."""
    [node] = start_nodes(small_disk.parent, 1, fsync="always", min_free_bytes=0, chunk_size=MiB)
    try:
        assert (small_disk / "space-reserve").exists()
        written: list[str] = []
        async with aiohttp.ClientSession() as s:
            for i in range(100):  # 1 MiB files, no two alike, until the disk is full
                async with s.put(f"{node.url}/files/f{i}", data=os.urandom(MiB)) as r:
                    if r.status == 507:
                        break
                    assert r.status == 201, await r.text()
                    written.append(f"f{i}")
            else:
                raise AssertionError("the disk never filled")
            assert len(written) > 10
            filler = small_disk / "filler"  # what a little space the refused write left: take it too
            with contextlib.suppress(OSError), filler.open("wb") as f:
                while True:
                    f.write(b"\0" * 4096)
                    f.flush()
            assert shutil.disk_usage(small_disk).free < 64 * 1024
            for key in written:
                async with s.delete(f"{node.url}/files/{key}") as r:
                    assert r.status == 200, (key, await r.text())
            filler.unlink()

            async def put_again() -> int:
                async with s.put(f"{node.url}/files/after", data=os.urandom(8 * MiB)) as r:
                    return r.status

            deadline = asyncio.get_running_loop().time() + 30
            while (status := await put_again()) == 507:
                assert asyncio.get_running_loop().time() < deadline, "space of deleted files never came back"
                await asyncio.sleep(0.5)
            assert status == 201
        wait_for(lambda: (small_disk / "space-reserve").exists(), 30, message="the reserve is back")
    finally:
        node.terminate()
    assert "Traceback" not in node.log_text()
