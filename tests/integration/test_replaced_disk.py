"""A replaced disk refills by itself (core/identity.py, cluster/identity.py).

A node whose data dir is wiped and that is started again at the same address takes its old id
(its seeds see that id down, or alive at an address nobody answers on), so it keeps its place in
placement: repair refills every file it held, and no other node's holdings change.
"""

from __future__ import annotations

import os
import shutil
import time

import aiohttp
import pytest

from p2pstore.launcher import free_port
from tests.support.chunks import stored_chunks
from tests.support.http import put_all
from tests.support.processes import NodeProcess, run_cli, wait_for

PERIOD = 0.2
REFILL_BOUND = 30.0


def holdings(node: NodeProcess) -> dict[str, set[str]]:
    """node id -> the keys it holds a verified current copy of, as ``node`` reports them."""
    held: dict[str, set[str]] = {}
    after = ""
    while True:
        page = node.get_json(f"/files?prefix=disk/&long=1&limit=1000&after={after}", timeout=30)
        for f in page["files"]:
            for r in f["replicas"]:
                if r["verified"]:
                    held.setdefault(r["node"], set()).add(f["key"])
        if not page["next"]:
            return held
        after = page["next"]


def chunk_names(node: NodeProcess) -> set[str]:
    """The chunks ``node`` holds on disk (chunk files and segment records)."""
    return set(stored_chunks(node.data_dir))


def payloads() -> dict[str, bytes]:
    files = {f"disk/big/{i}": os.urandom(8 << 20) for i in range(10)}
    files.update({f"disk/small/{i:03d}": os.urandom(500 + 997 * i) for i in range(190)})
    return files


@pytest.mark.slow
@pytest.mark.parametrize("crash", [True, False], ids=["killed", "stopped"])
async def test_wiped_node_takes_its_old_place_and_refills(node_factory, crash: bool) -> None:
    nodes = node_factory(4, fsync="never", gossip_interval=PERIOD)
    wait_for(lambda: all(len(n.get_json("/status")["members"]) == 4 for n in nodes), 20)
    files = payloads()
    await put_all(nodes[:2], files)
    wiped, others = nodes[2], [nodes[0], nodes[1], nodes[3]]
    old_id = wiped.health()["node_id"]
    before = wait_for(lambda: (h := holdings(nodes[0])) and sum(map(len, h.values())) == 3 * len(files) and h,
                      60, interval=0.5, message="three verified copies of every file")  # fmt: skip
    should_hold = before[old_id]
    assert 0 < len(should_hold) < len(files)  # 4 nodes, R=3: a real subset
    chunks_before = {n.name: chunk_names(n) for n in others}

    wiped.kill() if crash else wiped.terminate()
    shutil.rmtree(wiped.data_dir)
    started = time.monotonic()
    wiped.start()
    assert wiped.wait_ready()["node_id"] == old_id
    wait_for(lambda: holdings(wiped).get(old_id, set()) >= should_hold, REFILL_BOUND, interval=0.3,
             message=f"{len(should_hold)} files back on the wiped node")  # fmt: skip
    elapsed = time.monotonic() - started
    size = sum(len(files[k]) for k in should_hold)
    print(f"\nrefilled {len(should_hold)} files ({size / 1e6:.0f} MB) in {elapsed:.1f}s after restart")

    after = holdings(nodes[0])
    assert after == before  # the same copies on the same nodes: nothing moved
    assert {n.name: chunk_names(n) for n in others} == chunks_before
    ids = {m["id"] for m in nodes[0].get_json("/status")["members"]}
    assert len(ids) == 4 and old_id in ids  # no new member appeared
    async with aiohttp.ClientSession() as s:
        for key in sorted(should_hold)[::20]:
            async with s.get(f"{wiped.url}/files/{key}?local=1") as r:
                assert r.status == 200 and await r.read() == files[key]


@pytest.mark.slow
def test_replaces_refuses_a_member_that_is_alive(node_factory, tmp_path) -> None:
    nodes = node_factory(2, fsync="never", gossip_interval=PERIOD)
    live_id = nodes[1].health()["node_id"]
    i = nodes[1].args.index("--cluster-secret")
    r = run_cli("node", "start", "--data-dir", str(tmp_path / "fresh"), "--port", str(free_port()),
                "--seeds", nodes[0].address, "--replaces", live_id, "--insecure-plain",
                *nodes[1].args[i:i + 2], timeout=60)  # fmt: skip
    err = r.stderr.decode()
    assert r.returncode != 0 and "Traceback" not in err, err
    assert f"--replaces {live_id}" in err and "alive" in err, err
    assert not (tmp_path / "fresh" / "node_id").exists()
