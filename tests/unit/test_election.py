"""Unit tests for the election core: each test is one rule of Raft election + lease."""

from __future__ import annotations

import contextlib
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore.core.election import Election, ElectionConfig, LeaderChanged, validate_message

CFG = ElectionConfig()
VOTERS = ["a", "b", "c", "d", "e"]


def el(self_id: str = "a", **kw: Any) -> Election:
    return Election(self_id, rng=random.Random(7), now=0.0, **kw)


def vote(cand: str, term: int) -> dict[str, Any]:
    return {"type": "vote", "term": term, "candidate": cand}


def pre_vote(cand: str, term: int) -> dict[str, Any]:
    return {"type": "pre-vote", "term": term, "candidate": cand}


def heartbeat(term: int, seq: int = 1) -> dict[str, Any]:
    return {"type": "heartbeat", "term": term, "seq": seq, "lease": CFG.lease_duration}


def granted(out: list[tuple[str, dict[str, Any]]]) -> bool:
    (_, resp), = out
    return bool(resp["granted"])


def run_until_leader(e: Election, voters: list[str], grant_from: list[str]) -> float:
    """Tick e through pre-vote and vote, with `grant_from` granting; return the time."""
    t = 0.0
    while e.role != "leader":
        t += 0.1
        assert t < 10, "never became leader"
        for _dest, msg in e.tick(t, voters):
            kind = msg["type"] + "-resp"
            for v in grant_from:
                resp = {"type": kind, "term": msg["term"], "granted": True, "voters": voters}
                if kind == "pre-vote-resp":
                    resp["voter_term"] = msg["term"] - 1
                out = e.receive(v, resp, t, voters)
                if e.role == "candidate" and out:
                    for _d, m2 in out:
                        r2 = {"type": "vote-resp", "term": m2["term"], "granted": True,
                              "voters": voters}
                        for v2 in grant_from:
                            e.receive(v2, r2, t, voters)
                    break
            if e.role == "leader":
                break
    return t


def test_one_vote_per_term() -> None:
    e = el()
    assert granted(e.receive("b", vote("b", 1), 0.1, VOTERS))
    assert e.hard_state() == (1, "b")
    assert not granted(e.receive("c", vote("c", 1), 0.2, VOTERS))
    assert granted(e.receive("b", vote("b", 1), 0.3, VOTERS))  # a retransmit is idempotent
    assert granted(e.receive("c", vote("c", 2), 0.4, VOTERS))  # a new term, a new vote
    assert e.hard_state() == (2, "c")


def test_restored_hard_state_keeps_the_vote() -> None:
    e = el(term=4, voted_for="b")
    assert not granted(e.receive("c", vote("c", 4), 0.1, VOTERS))
    assert not granted(e.receive("c", vote("c", 3), 0.1, VOTERS))


def test_unknown_candidate_gets_no_vote() -> None:
    e = el()
    assert not granted(e.receive("zz", vote("zz", 1), 0.1, VOTERS))


def test_lease_refusal_after_hearing_a_leader() -> None:
    e = el()
    e.receive("b", heartbeat(3), 1.0, VOTERS)
    assert e.leader == "b" and e.term == 3
    assert not granted(e.receive("c", pre_vote("c", 4), 1.5, VOTERS))
    assert not granted(e.receive("c", vote("c", 9), 1.6, VOTERS))
    assert e.term == 3, "a disruptive vote request must not bump our term inside the lease"
    later = 1.0 + CFG.lease_duration + 0.01
    assert granted(e.receive("c", pre_vote("c", 4), later, VOTERS))
    assert e.term == 3, "pre-vote never changes the term"
    assert granted(e.receive("c", vote("c", 4), later, VOTERS))


def test_single_node_elects_itself() -> None:
    e = el()
    t = 0.0
    while e.role != "leader":
        t += 0.1
        e.tick(t, ["a"])
        assert t < 5
    assert e.leader == "a" and e.term == 1 and e.lease_valid(t)
    assert LeaderChanged(1, "a") in e.take_events()


def test_pre_vote_then_vote_then_leader() -> None:
    e = el()
    t = run_until_leader(e, VOTERS, ["b", "c"])
    assert e.term == 1 and e.voted_for == "a" and e.leader == "a"
    assert CFG.election_timeout_min <= t <= CFG.election_timeout_max + 0.2
    assert e.lease_valid(t)


def test_failed_pre_vote_does_not_bump_term() -> None:
    e = el()
    for i in range(1, 200):
        for _d, msg in e.tick(i * 0.1, VOTERS):
            assert msg["type"] == "pre-vote"
            e.receive(_d, {"type": "pre-vote-resp", "term": msg["term"], "granted": False,
                           "voter_term": 0, "voters": VOTERS}, i * 0.1, VOTERS)
    assert e.term == 0 and e.role != "leader"


def test_leader_steps_down_without_majority_acks() -> None:
    e = el()
    t = run_until_leader(e, VOTERS, ["b", "c"])
    # only one follower keeps acking: 2 of 5 is not a majority
    while e.role == "leader":
        t += 0.1
        for dest, msg in e.tick(t, VOTERS):
            if dest == "b":
                e.receive("b", {"type": "heartbeat-ack", "term": msg["term"],
                                "seq": msg["seq"]}, t, VOTERS)
        assert t < 10
    assert e.leader is None and e.role == "follower" and not e.lease_valid(t)
    assert LeaderChanged(1, None) in e.take_events()


def test_leader_keeps_lease_with_majority_acks() -> None:
    e = el()
    t = run_until_leader(e, VOTERS, ["b", "c"])
    for _ in range(100):
        t += 0.1
        for dest, msg in e.tick(t, VOTERS):
            if dest in ("b", "c"):
                e.receive(dest, {"type": "heartbeat-ack", "term": msg["term"],
                                 "seq": msg["seq"]}, t + 0.01, VOTERS)
        assert e.role == "leader" and e.lease_valid(t)


def test_higher_term_makes_leader_a_follower() -> None:
    e = el()
    t = run_until_leader(e, VOTERS, ["b", "c"])
    e.receive("c", {"type": "heartbeat-ack", "term": 5, "seq": 1}, t, VOTERS)
    assert e.role == "follower" and e.term == 5 and e.voted_for is None


def test_stale_leader_is_told_the_new_term() -> None:
    e = el(term=5)
    (dest, ack), = e.receive("b", heartbeat(2), 0.1, VOTERS)
    assert dest == "b" and ack["term"] == 5 and e.leader is None


def test_rejected_pre_vote_with_newer_term_catches_up() -> None:
    e = el(term=1)
    e.receive("b", {"type": "pre-vote-resp", "term": 2, "granted": False, "voter_term": 7,
                    "voters": VOTERS}, 0.1, VOTERS)
    assert e.term == 7 and e.role == "follower"


def test_candidate_messages_go_only_to_other_voters() -> None:
    e = el()
    t, out = 0.0, []
    while not out:
        t += 0.1
        out = e.tick(t, ["a", "b", "c"])
    assert sorted(d for d, _ in out) == ["b", "c"]


def test_config_rejects_unsafe_lease() -> None:
    with pytest.raises(ValueError):
        ElectionConfig(lease_duration=5.0)
    with pytest.raises(ValueError):
        ElectionConfig(heartbeat_interval=2.0)


@pytest.mark.parametrize("msg", [
    None, [], {"type": 3}, {"type": "vote"}, {"type": "vote", "term": -1, "candidate": "a"},
    {"type": "vote", "term": 1.5, "candidate": "a"}, {"type": "heartbeat", "term": 1},
    {"type": "heartbeat", "term": 1, "seq": 1, "lease": float("nan")},
    {"type": "vote-resp", "term": 1, "granted": "yes", "voters": []},
    {"type": "vote-resp", "term": 1, "granted": True, "voters": [1]},
    {"type": "pre-vote-resp", "term": 1, "granted": True, "voters": []},
])
def test_validate_rejects(msg: Any) -> None:
    with pytest.raises(ValueError):
        validate_message(msg)


junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=5),
    max_leaves=15,
)
near_valid = st.fixed_dictionaries(
    {"type": st.sampled_from(["pre-vote", "pre-vote-resp", "vote", "vote-resp", "heartbeat",
                              "heartbeat-ack"])},
    optional={k: junk | st.integers(0, 5) for k in
              ["term", "candidate", "granted", "voters", "voter_term", "seq", "lease"]},
) | junk


@settings(max_examples=200, deadline=None)
@given(near_valid)
def test_junk_never_crashes_election(msg: Any) -> None:
    e = el()
    with contextlib.suppress(ValueError):
        e.receive("b", msg, 0.5, VOTERS)
    e.tick(1.0, VOTERS)
