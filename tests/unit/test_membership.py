"""Unit tests for the SWIM/Lifeguard membership core (scenario style, one rule per test)."""

from __future__ import annotations

import contextlib
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore.core.membership import (
    Member,
    Membership,
    MembershipConfig,
    Suspicion,
    newer,
    retransmit_limit,
    suspicion_timeouts,
    validate_message,
)

CFG = MembershipConfig()


def node(self_id: str = "a", others: tuple[str, ...] = ("b", "c", "d"), **kw: Any) -> Membership:
    known = [Member(o, f"{o}:1", "alive", 0, 0.0, 0.0) for o in others]
    return Membership(self_id, f"{self_id}:1", rng=random.Random(1), now=0.0, known=known, **kw)


def gossip(src: str, *updates: dict[str, Any], inc: int = 0) -> dict[str, Any]:
    return {"type": "gossip", "from": src, "addr": f"{src}:1", "inc": inc,
            "updates": list(updates)}


def rec(mid: str, state: str, inc: int, addr: str | None = None, by: str | None = None
        ) -> dict[str, Any]:
    r: dict[str, Any] = {"id": mid, "addr": addr or f"{mid}:1", "state": state, "inc": inc}
    if by:
        r["by"] = by
    return r


def first_ping(m: Membership) -> tuple[float, str, dict[str, Any]]:
    """Tick until the first probe goes out; return (time, dest, ping)."""
    t = 0.0
    while True:
        t += 0.1
        pings = [(d, msg) for d, msg in m.tick(t) if msg["type"] == "ping"]
        if pings:
            return t, pings[0][0], pings[0][1]


def piggybacked(out: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [u for _, m in out for u in m.get("updates", [])]


# ------------------------------------------------------------------ merge rules


@pytest.mark.parametrize(("new", "cur", "wins"), [
    ((1, "alive"), (0, "suspect"), True),    # refutation: higher incarnation wins
    ((1, "alive"), (0, "dead"), True),       # a restarted node comes back
    ((0, "alive"), (0, "suspect"), False),   # same incarnation: alive never beats suspect
    ((0, "suspect"), (0, "alive"), True),
    ((0, "dead"), (0, "suspect"), True),
    ((0, "left"), (0, "dead"), True),
    ((0, "suspect"), (1, "alive"), False),   # stale suspicion is ignored
    ((0, "alive"), (0, "alive"), False),
])
def test_incarnation_then_state_precedence(new: tuple[int, str], cur: tuple[int, str],
                                           wins: bool) -> None:
    assert newer(new[0], new[1], cur[0], cur[1]) is wins


def test_suspect_then_refuted_by_higher_incarnation() -> None:
    m = node()
    m.receive("b:1", gossip("b", rec("c", "suspect", 0, by="b")), 1.0)
    assert m.state_of("c") == "suspect"
    m.receive("d:1", gossip("d", rec("c", "alive", 0)), 1.1)
    assert m.state_of("c") == "suspect"  # same incarnation: no effect
    m.receive("d:1", gossip("d", rec("c", "alive", 1)), 1.2)
    assert m.state_of("c") == "alive"
    events = [(e.id, e.old_state, e.new_state) for e in m.take_events()]
    assert ("c", "alive", "suspect") in events and ("c", "suspect", "alive") in events


def test_restart_at_new_address_with_higher_incarnation_is_accepted() -> None:
    m = node()
    m.receive("b:1", gossip("b", rec("c", "dead", 0)), 1.0)
    assert m.state_of("c") == "dead"
    m.receive("c:2", {**gossip("c", inc=1), "addr": "c:2"}, 2.0)  # the header claims alive
    c = m.member("c")
    assert c is not None and (c.state, c.address, c.incarnation) == ("alive", "c:2", 1)


@pytest.mark.parametrize("state", ["suspect", "dead", "left"])
def test_node_refutes_rumours_about_itself(state: str) -> None:
    m = node()
    m.receive("b:1", gossip("b", rec("a", state, 0, by="b")), 1.0)
    assert m.incarnation == 1
    assert m.state_of("a") == "alive"
    out = m.tick(5.0)  # the next probe carries the refutation
    assert rec("a", "alive", 1) in piggybacked(out)


def test_stale_rumour_is_not_refuted_again() -> None:
    m = node(incarnation=5)
    m.receive("b:1", gossip("b", rec("a", "suspect", 3)), 1.0)
    assert m.incarnation == 5


def test_dead_in_full_state_is_only_a_suspicion_for_a_member_we_think_alive() -> None:
    m = node()
    sync = {"type": "sync", "from": "b", "addr": "b:1", "inc": 0,
            "members": [rec("c", "dead", 0), rec("zz", "dead", 3)]}
    out = m.receive("b:1", sync, 1.0)
    assert m.state_of("c") == "suspect"
    assert m.state_of("zz") == "dead"  # unknown members are taken as they are
    assert out and out[0][0] == "b:1" and out[0][1]["type"] == "sync-ack"
    assert {r["id"] for r in out[0][1]["members"]} == {"a", "b", "c", "d", "zz"}


# ------------------------------------------------------------------ suspicion


def test_suspicion_timeout_shrinks_with_confirmations() -> None:
    low, high = suspicion_timeouts(CFG, 50)
    s = Suspicion(0.0, low, high, k=2)
    s.confirm("x")
    t0 = s.timeout()
    assert t0 == pytest.approx(high)
    assert not s.confirm("x")  # the same member twice is not independent
    s.confirm("y")
    t1 = s.timeout()
    s.confirm("z")
    t2 = s.timeout()
    assert high > t1 > t2 == pytest.approx(low)
    s.confirm("w")
    assert s.timeout() == pytest.approx(low)


def test_suspicion_bounds_scale_with_log_n() -> None:
    assert suspicion_timeouts(CFG, 5) == suspicion_timeouts(CFG, 10)
    low100, _ = suspicion_timeouts(CFG, 100)
    assert low100 == pytest.approx(2 * CFG.suspicion_mult * CFG.probe_interval)
    assert retransmit_limit(CFG, 50) == 8


def test_confirmations_make_suspect_dead_sooner() -> None:
    def time_to_dead(suspecters: list[str]) -> float:
        others = tuple(f"m{i}" for i in range(20))
        m = node(others=others)
        for s in suspecters:
            m.receive(f"{s}:1", gossip(s, rec("m0", "suspect", 0, by=s)), 0.0)
        t = 0.0
        while m.state_of("m0") == "suspect":
            t += 0.5
            m._expire_suspicions(t)  # only the timer, no probing traffic
        return t

    assert time_to_dead(["m1", "m2", "m3"]) < time_to_dead(["m1"])


# ------------------------------------------------------------------ probing


def test_probe_timeout_goes_indirect_then_suspects() -> None:
    m = node()
    t, dest, ping = first_ping(m)
    target = ping["target"]
    out = m.tick(t + CFG.probe_timeout + 0.01)
    assert {msg["type"] for _, msg in out} == {"ping-req"}
    assert len(out) == 2  # k=3 but only two helpers exist besides the target
    assert all(msg["target"] == target and msg["target_addr"] == dest for _, msg in out)
    m.tick(t + CFG.probe_interval + 0.01)
    assert m.state_of(target) == "suspect"


def test_ack_prevents_suspicion() -> None:
    m = node()
    t, dest, ping = first_ping(m)
    ack = {"type": "ack", "from": ping["target"], "addr": dest, "inc": 0, "seq": ping["seq"]}
    m.receive(dest, ack, t + 0.05)
    assert m.tick(t + CFG.probe_timeout + 0.01) == []
    m.tick(t + CFG.probe_interval + 0.01)
    assert m.state_of(ping["target"]) == "alive"


def test_ping_req_is_relayed() -> None:
    m = node()
    req = {"type": "ping-req", "from": "b", "addr": "b:1", "inc": 0, "seq": 77,
           "target": "c", "target_addr": "c:1"}
    (dest, ping), = m.receive("b:1", req, 1.0)
    assert dest == "c:1" and ping["type"] == "ping" and ping["target"] == "c"
    ack = {"type": "ack", "from": "c", "addr": "c:1", "inc": 0, "seq": ping["seq"]}
    (dest2, relayed), = m.receive("c:1", ack, 1.1)
    assert dest2 == "b:1" and relayed["type"] == "ack" and relayed["seq"] == 77


def test_ping_for_someone_else_is_ignored() -> None:
    m = node()
    ping = {"type": "ping", "from": "b", "addr": "b:1", "inc": 0, "seq": 1, "target": "old"}
    assert m.receive("b:1", ping, 1.0) == []


def test_unreachable_skips_the_probe_timeout() -> None:
    m = node()
    t, dest, _ = first_ping(m)
    req = m.unreachable(dest, t)
    assert req and all(msg["type"] == "ping-req" for _, msg in req)
    assert m.unreachable(dest, t) == []


# ------------------------------------------------------------------ join, leave, remove, reap


def test_join_syncs_with_seeds_until_someone_is_known() -> None:
    m = Membership("a", "a:1", rng=random.Random(0), now=0.0, seeds=["s1:1", "s2:1", "a:1"])
    assert not m.joined() and m.known_count() == 1 and m.seeds == ["s1:1", "s2:1"]
    out = m.tick(0.0)
    assert sorted(d for d, msg in out if msg["type"] == "sync") == ["s1:1", "s2:1"]
    reply = {"type": "sync-ack", "from": "s1", "addr": "s1:1", "inc": 0,
             "members": [rec("s1", "alive", 0), rec("x", "alive", 2)]}
    m.receive("s1:1", reply, 0.2)
    assert {x.id for x in m.members()} == {"a", "s1", "x"}
    assert m.joined() and m.known_count() == 3
    out = m.tick(1.5)
    assert not [d for d, msg in out if msg["type"] == "sync" and d == "s2:1"]


def test_a_node_without_seeds_or_with_known_members_has_joined() -> None:
    assert Membership("a", "a:1", rng=random.Random(0), now=0.0).joined()  # a cluster of its own
    assert Membership("a", "a:1", rng=random.Random(0), now=0.0, seeds=["a:1"]).joined()  # only itself
    restarted = node(seeds=["s1:1"])  # persisted members: it knows its cluster before any answer
    assert restarted.joined() and restarted.known_count() == 4


def test_leave_tells_everyone_and_goes_quiet() -> None:
    m = node()
    out = m.leave(1.0)
    assert sorted(d for d, _ in out) == ["b:1", "c:1", "d:1"]
    assert all(rec("a", "left", 0) in msg["updates"] for _, msg in out)
    assert m.tick(5.0) == []
    assert m.state_of("a") == "left"


def test_remove_forgets_and_stale_gossip_does_not_resurrect() -> None:
    m = node()
    m.receive("b:1", gossip("b", rec("c", "dead", 0)), 1.0)
    m.remove("c")
    assert m.state_of("c") is None
    m.receive("b:1", gossip("b", rec("c", "dead", 0)), 2.0)
    assert m.state_of("c") is None
    assert rec("c", "left", 0) in piggybacked(m.tick(10.0))
    m.receive("c:9", gossip("c", inc=1), 3.0)  # it really comes back
    assert m.state_of("c") == "alive"
    with pytest.raises(ValueError):
        m.remove("a")


def test_dead_members_are_kept_until_reap_timeout() -> None:
    m = node(config=MembershipConfig(reap_timeout=100.0))
    m.receive("b:1", gossip("b", rec("c", "dead", 0)), 1.0)
    m.tick(50.0)
    assert m.state_of("c") == "dead"
    m.tick(102.0)
    assert m.state_of("c") is None


def test_reconnect_syncs_with_a_dead_member() -> None:
    m = node(others=("b",))
    m.receive("b:1", gossip("b", inc=0), 0.0)
    m.receive("x:1", gossip("x", rec("b", "dead", 0)), 0.5)
    syncs = []
    for i in range(1, 200):
        syncs += [d for d, msg in m.tick(i * 0.1) if msg["type"] == "sync"]
    assert "b:1" in syncs


def test_snapshot_restores_members_after_restart() -> None:
    m = node()
    snap = m.snapshot()
    m2 = Membership("a", "a:7", rng=random.Random(2), now=10.0, incarnation=m.incarnation + 1,
                    known=snap)
    assert {x.id for x in m2.members()} == {"a", "b", "c", "d"}
    me = m2.member("a")
    assert me is not None and me.address == "a:7" and me.incarnation == 1


def test_same_seed_same_output() -> None:
    def run() -> list[Any]:
        m = node()
        return [m.tick(i * 0.1) for i in range(100)]

    assert run() == run()


# ------------------------------------------------------------------ validation


def test_validate_accepts_a_well_formed_ping() -> None:
    msg = {"type": "ping", "from": "b", "addr": "b:1", "inc": 3, "seq": 9, "target": "a",
           "updates": [rec("c", "suspect", 1, by="b")], "extra": "ignored"}
    assert validate_message(msg)["updates"][0]["by"] == "b"
    assert "extra" not in validate_message(msg)


@pytest.mark.parametrize(("msg", "reason"), [
    ([], "map"),
    ({"type": "nope"}, "unknown"),
    ({"type": "ping", "from": "b", "addr": "b:1", "inc": -1, "seq": 1, "target": "a"}, "inc"),
    ({"type": "ping", "from": "b", "addr": "b:1", "inc": True, "seq": 1, "target": "a"}, "inc"),
    ({"type": "ping", "from": "", "addr": "b:1", "inc": 0, "seq": 1, "target": "a"}, "from"),
    ({"type": "ack", "from": "b", "addr": "b:1", "inc": 0, "seq": 1,
      "updates": [{"id": "x", "addr": "x", "state": "zombie", "inc": 0}]}, "state"),
    ({"type": "ack", "from": "b", "addr": "b:1", "inc": 0, "seq": 1,
      "updates": [rec("x", "alive", 0)] * 65}, "updates"),
    ({"type": "sync", "from": "b" * 300, "addr": "b:1", "inc": 0, "members": []}, "longer"),
])
def test_validate_rejects_with_clear_reason(msg: Any, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        validate_message(msg)


junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=6),
    max_leaves=20,
)
field_names = st.sampled_from(["type", "from", "addr", "inc", "seq", "target", "target_addr",
                               "updates", "members", "id", "state", "by"])
near_valid = st.fixed_dictionaries(
    {"type": st.sampled_from(["ping", "ack", "ping-req", "sync", "sync-ack", "gossip"])},
    optional={k: junk for k in ["from", "addr", "inc", "seq", "target", "target_addr",
                                "updates", "members"]},
) | st.dictionaries(field_names, junk, max_size=8) | junk


@settings(max_examples=200, deadline=None)
@given(near_valid)
def test_junk_never_crashes_the_node(msg: Any) -> None:
    m = node()
    with contextlib.suppress(ValueError):
        validate_message(msg)
    with contextlib.suppress(ValueError):
        m.receive("x:1", msg, 1.0)
    m.tick(2.0)  # and the node keeps working
