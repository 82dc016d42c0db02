"""Membership and election between real node processes on loopback (issue: gossip + election).

Bounds used here, with gossip_interval = 0.2 s (one protocol period): a killed node is
suspected within ~2 periods and declared dead after the Lifeguard suspicion timeout (at most
suspicion_max_timeout_mult * suspicion_mult * log10(max(N, 10)) = 24 periods = 4.8 s) plus
dissemination (a few periods); we allow 15 s. A new leader needs the lease to lapse (3
heartbeats = 0.6 s) plus an election timeout (≤ 1.2 s) plus a vote round; we allow 10 s.
"""

from __future__ import annotations

import time

import pytest

from p2pstore.launcher import flags_to_args, free_port, http_json
from tests.support.processes import NodeProcess, wait_for

PERIOD = 0.2
DEAD_BOUND = 15.0
LEADER_BOUND = 10.0
STALL = 6.0  # > the longest suspicion timeout (24 periods = 4.8 s)


def view(node: NodeProcess) -> dict:
    return node.get_json("/status", timeout=2)


def states(node: NodeProcess) -> dict[str, str]:
    return {m["id"]: m["state"] for m in view(node)["members"]}


def all_see(nodes: list[NodeProcess], subject: str, state: str) -> bool:
    return all(states(n).get(subject) == state for n in nodes)


def agreed_leader(nodes: list[NodeProcess]) -> str | None:
    leaders = {view(n)["leader"] for n in nodes}
    if len(leaders) == 1 and None not in leaders:
        return leaders.pop()
    return None


@pytest.mark.slow
def test_five_nodes_join_detect_death_reelect_and_rejoin(node_factory) -> None:
    nodes = node_factory(5, fsync="never", gossip_interval=PERIOD)
    ids = [n.health()["node_id"] for n in nodes]
    by_id = dict(zip(ids, nodes, strict=True))

    wait_for(
        lambda: all(len(states(n)) == 5 and set(states(n).values()) == {"alive"} for n in nodes),
        15,
        message="all 5 nodes see each other alive",
    )
    leader = wait_for(lambda: agreed_leader(nodes), LEADER_BOUND, message="one agreed leader")
    terms = {view(n)["term"] for n in nodes}
    assert len(terms) == 1

    # kill -9 a follower: every live node marks it dead within the bound
    victim = next(i for i in ids if i != leader)
    by_id[victim].kill()
    live = [n for i, n in by_id.items() if i != victim]
    wait_for(lambda: all_see(live, victim, "dead"), DEAD_BOUND, message=f"{victim} dead everywhere")

    # kill -9 the leader: a new leader among the survivors within the bound
    by_id[leader].kill()
    survivors = [n for i, n in by_id.items() if i not in (victim, leader)]
    new_leader = wait_for(
        lambda: (lambda ldr: ldr if ldr not in (None, leader) else None)(agreed_leader(survivors)),
        LEADER_BOUND + DEAD_BOUND,
        message="a new leader among 3 survivors of 5",
    )
    assert new_leader in ids and new_leader != leader

    # restart both: all alive everywhere (higher incarnation wins), one leader
    by_id[victim].start()
    by_id[leader].start()
    by_id[victim].wait_ready()
    by_id[leader].wait_ready()
    wait_for(lambda: all(all_see(nodes, i, "alive") for i in ids), 20, message="all alive again")
    wait_for(lambda: agreed_leader(nodes), LEADER_BOUND, message="one leader after restarts")
    incarnations = {m["id"]: m["incarnation"] for m in view(nodes[0])["members"]}
    assert incarnations[victim] >= 2 and incarnations[leader] >= 2


def test_graceful_stop_is_seen_as_left(node_factory) -> None:
    nodes = node_factory(3, fsync="never", gossip_interval=PERIOD)
    wait_for(lambda: all(len(states(n)) == 3 for n in nodes), 15, message="3 members")
    leaving = nodes[2].health()["node_id"]
    nodes[2].terminate()
    wait_for(lambda: all_see(nodes[:2], leaving, "left"), 10, message="left everywhere")


def test_operator_removes_a_dead_member(node_factory) -> None:
    from tests.support.processes import run_cli

    nodes = node_factory(3, fsync="never", gossip_interval=PERIOD)
    wait_for(lambda: all(len(states(n)) == 3 for n in nodes), 15, message="3 members")
    gone = nodes[2].health()["node_id"]
    alive_id = nodes[1].health()["node_id"]
    refused = run_cli("--url", nodes[0].url, "members", "remove", alive_id)
    assert refused.returncode == 5 and b"only dead or left members" in refused.stderr
    nodes[2].kill()
    wait_for(lambda: all_see(nodes[:2], gone, "dead"), DEAD_BOUND, message="dead everywhere")
    done = run_cli("--url", nodes[0].url, "members", "remove", gone)
    assert done.returncode == 0, done.stderr
    wait_for(
        lambda: all(states(n).get(gone) in (None, "left") for n in nodes[:2]), 10, message="forgotten"
    )


@pytest.mark.slow
def test_a_node_stalled_while_suspecting_a_peer_does_not_declare_it_dead(node_factory) -> None:
    """Two nodes. A suspects B (B paused), then A stalls too (SIGSTOP) for longer than the
    suspicion timeout; both wake together. A's failure-detector clock leaves its own stall out
    (Lifeguard's local health), so its suspicion of B has most of its time left and B refutes
    it; a clock counting the stall would declare B dead at A's first tick after waking."""
    nodes = node_factory(2, fsync="never", gossip_interval=PERIOD)
    ids = [n.health()["node_id"] for n in nodes]
    a, b = nodes
    wait_for(
        lambda: all(set(states(n).values()) == {"alive"} and len(states(n)) == 2 for n in nodes),
        15,
        message="both nodes see each other alive",
    )
    b.pause()
    try:
        wait_for(lambda: states(a).get(ids[1]) == "suspect", DEAD_BOUND, 0.02, message="A suspects B")
        a.pause()
        mark = len(a.log_text())  # A is stopped: nothing more is logged until it wakes
        time.sleep(STALL)  # the fault's length (longer than the suspicion timeout), not a sync point
    finally:
        a.resume()
        b.resume()
    wait_for(lambda: all_see(nodes, ids[1], "alive"), DEAD_BOUND, message="B alive again everywhere")
    woke = a.log_text()[mark:].splitlines()
    blamed = [line for line in woke if f"member {ids[1]} " in line and "-> dead" in line]
    assert not blamed, blamed


def test_a_node_serves_files_only_once_it_has_joined(tmp_path) -> None:
    """A new node whose seed does not answer knows no cluster: it must not take a write onto
    itself alone (one copy where W=2 was asked) nor say "not found"; it answers 503 naming its
    seeds, reports ``joined: false`` on /health, and serves normally once the seed is up."""
    seed_port = free_port()
    secret = f"join-test-{time.monotonic_ns()}"
    common = {"fsync": "never", "gossip_interval": PERIOD, "cluster_secret": secret}
    late = NodeProcess(tmp_path / "late", args=flags_to_args({**common, "seeds": f"127.0.0.1:{seed_port}"}))
    seed = NodeProcess(tmp_path / "seed", port=seed_port, args=flags_to_args(common))
    try:
        late.start()
        wait_for(lambda: late.health() is not None, 20, message="the late node answers")
        assert late.health()["joined"] is False
        requests = (("PUT", "/files/a", "x"), ("GET", "/files/a", None), ("GET", "/files", None))
        for method, path, body in requests:
            status, answer = http_json(late.url + path, method=method, body=body)
            assert status == 503, (method, path, status, answer)
            assert "not joined" in answer["error"] and f"127.0.0.1:{seed_port}" in answer["error"]
        assert late.get_json("/status")["joined"] is False
        seed.start()
        seed.wait_ready()
        late.wait_ready()  # healthy and joined
        status, answer = http_json(late.url + "/files/a", method="PUT", body="x")
        assert status == 201 and len(answer["replicas"]) == 2, answer  # W=2: both nodes
    finally:
        late.terminate()
        seed.terminate()


async def test_members_only_heard_of_do_not_keep_a_place_in_placement(node_factory) -> None:
    """One forged gossip message naming four members that do not exist (anyone holding the
    cluster secret can send it): the nodes probe them, find nobody and declare them dead, and
    since no node ever reached them they keep no place in placement meanwhile, so every write
    succeeds on the real replicas (a dead member that was part of the cluster keeps its place
    for --dead-after, as always)."""
    import aiohttp
    import msgpack

    from tests.support.http import peer_headers

    secret = "forged-members"
    nodes = node_factory(3, gossip_interval=0.2, cluster_secret=secret, fsync="never")
    wait_for(lambda: all(len(n.get_json("/status")["members"]) == 3 for n in nodes), 20,
             message="three members everywhere")  # fmt: skip
    a = nodes[0]
    fakes = [{"id": f"nfake{i}", "addr": f"127.0.0.1:{i + 1}", "state": "alive", "inc": 5} for i in range(4)]
    sync = {"type": "sync", "from": "nfake0", "addr": "127.0.0.1:1", "inc": 5, "members": fakes}
    envelope = {"kind": "membership", "from": "nfake0", "msg": sync}
    url = f"{a.url}/_internal/gossip"
    body = msgpack.packb(envelope)
    async with aiohttp.ClientSession() as s, s.post(
        url, data=body, headers=peer_headers(secret, url, body=body)
    ) as r:
        assert r.status == 200, await r.text()

    def fakes_dead() -> bool:
        states = {m["id"]: m["state"] for m in a.get_json("/status")["members"]}
        return len(states) == 7 and all(states[f["id"]] == "dead" for f in fakes)

    wait_for(fakes_dead, 60, message="the fake members declared dead")
    async with aiohttp.ClientSession() as s:
        for i in range(40):
            async with s.put(f"{a.url}/files/k{i}", data=b"x" * 100) as r:
                assert r.status == 201, (i, await r.text())
