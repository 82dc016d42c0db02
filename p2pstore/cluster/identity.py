"""Before a node with an empty data dir picks an id: ask its seeds whether the id to take is
a dead member's (a replaced disk at the same address, or ``--replaces ID``); core/identity.py
decides."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ..config import NodeConfig
from ..core.identity import Adoption, IdentityRefused, SeedView, choose
from ..core.messages import require_int, require_list
from .tls import client_context
from .transport import PeerError, Transport

log = logging.getLogger("p2pstore.identity")
ASK_TIMEOUT = 3.0  # seconds per seed; a cluster starting all at once answers "refused" at once


async def _ask(transport: Transport, seed: str) -> SeedView | None:
    try:
        reply = await transport.call(seed, "/members", {}, timeout=ASK_TIMEOUT)
        members = require_list(reply, "members", max_len=100_000)
        term = require_int(reply, "term")
    except (TimeoutError, PeerError, ValueError, TypeError, OSError) as exc:
        log.info("seed %s did not say who is down: %s", seed, exc)
        return None
    records = [r for r in members if isinstance(r, dict) and isinstance(r.get("id"), str)
               and isinstance(r.get("addr"), str) and isinstance(r.get("inc"), int)]  # fmt: skip
    return SeedView(seed, records, term)


async def address_free(address: str) -> bool:
    """Nobody accepts connections at ``address`` (our own, before we listen on it): no process
    of the member registered there is running. A timeout counts as taken (cannot tell)."""
    host, _, port = address.rpartition(":")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host.strip("[]"), int(port)), 1.0)
    except TimeoutError:
        return False
    except OSError:
        return True  # refused (or unreachable): nothing listens there
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return False


async def resolve(cfg: NodeConfig) -> Adoption | None:
    """The dead member this fresh node takes the place of, or None (a new id). Raises
    core.identity.IdentityRefused when ``cfg.replaces`` cannot be honoured."""
    seeds = [s for s in cfg.seeds if s != cfg.advertise_address]
    if not seeds:
        if cfg.replaces:
            raise IdentityRefused("--replaces needs --seeds: the cluster must confirm the member is down")
        return None
    tls = client_context(cfg.cluster_ca, cfg.node_cert, cfg.node_key) if cfg.internal_tls else None
    transport = Transport(cfg.cluster_secret, tls=tls)
    try:
        views = [v for v in await asyncio.gather(*(_ask(transport, s) for s in seeds)) if v]
    finally:
        await transport.close()
    free = await address_free(cfg.advertise_address)
    return choose(views, cfg.advertise_address, cfg.replaces, free)
