"""Which id a node with an empty data dir takes (core/identity.py): a dead member's at its own
address, the one named by --replaces, or a new one; never a member that is alive."""

from __future__ import annotations

import pytest

from p2pstore.core.identity import IdentityRefused, SeedView, choose

ME = "127.0.0.1:7001"


def rec(mid: str, addr: str, state: str, inc: int = 3) -> dict:
    return {"id": mid, "addr": addr, "state": state, "inc": inc}


def views(*records: dict, term: int = 7) -> list[SeedView]:
    return [SeedView("127.0.0.1:7000", [rec("nseed", "127.0.0.1:7000", "alive"), *records], term),
            SeedView("127.0.0.1:7002", [*records], term - 2)]


@pytest.mark.parametrize("state", ["dead", "left"])
def test_a_down_member_at_our_address_is_taken_over(state: str) -> None:
    got = choose(views(rec("nold", ME, state, inc=5)), ME, address_free=False)
    assert got is not None and (got.node_id, got.incarnation, got.term) == ("nold", 5, 7)


@pytest.mark.parametrize("state", ["alive", "suspect"])
def test_a_member_thought_alive_is_taken_only_when_nothing_answers_at_the_address(state: str) -> None:
    assert choose(views(rec("nold", ME, state)), ME, address_free=False) is None
    got = choose(views(rec("nold", ME, state)), ME, address_free=True)
    assert got is not None and got.node_id == "nold"


def test_nobody_at_our_address_means_a_new_id() -> None:
    assert choose(views(rec("nother", "127.0.0.1:7005", "dead")), ME, address_free=True) is None
    assert choose([], ME, address_free=True) is None


def test_two_old_ids_at_our_address_are_ambiguous() -> None:
    v = views(rec("nold1", ME, "dead"), rec("nold2", ME, "dead"))
    assert choose(v, ME, address_free=True) is None


def test_seeds_that_disagree_block_the_takeover() -> None:
    v = [SeedView("a:1", [rec("nold", ME, "dead")], 1), SeedView("b:1", [rec("nold", "c:9", "alive")], 1)]
    assert choose(v, ME, address_free=True) is None


def test_replaces_takes_a_dead_member_at_another_address() -> None:
    got = choose(views(rec("nold", "10.0.0.9:7000", "dead", inc=9)), ME, replaces="nold")
    assert got is not None and (got.node_id, got.incarnation) == ("nold", 9)


@pytest.mark.parametrize(
    ("v", "why"),
    [
        (views(rec("nold", "10.0.0.9:7000", "alive")), "alive"),
        (views(rec("nold", "10.0.0.9:7000", "suspect")), "suspect"),
        (views(rec("nother", "10.0.0.9:7000", "dead")), "no seed knows"),
        ([], "no seed answered"),
    ],
)
def test_replaces_refuses_what_it_cannot_confirm_is_down(v: list[SeedView], why: str) -> None:
    with pytest.raises(IdentityRefused, match=why):
        choose(v, ME, replaces="nold", address_free=True)


async def test_address_free_tells_a_listening_port_from_a_closed_one() -> None:
    import asyncio

    from p2pstore.cluster.identity import address_free
    from p2pstore.launcher import free_port

    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        assert await address_free(f"127.0.0.1:{port}") is False
    finally:
        server.close()
        await server.wait_closed()
    assert await address_free(f"127.0.0.1:{free_port()}") is True


async def test_replaces_without_seeds_is_refused() -> None:
    from p2pstore.cluster.identity import resolve
    from p2pstore.config import NodeConfig

    with pytest.raises(IdentityRefused, match="needs --seeds"):
        await resolve(NodeConfig(replaces="nold"))
    assert await resolve(NodeConfig()) is None
