"""The other nodes as the roles see them: who is a key's replica, who is up, how to call them.

Every role (coordinator, anti-entropy, repair, housekeeping, leases) is given this one narrow
object instead of the whole cluster: the membership view (gossip), placement over it, and the
transport.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..core import placement
from ..core.membership import ALIVE, Member
from ..errors import Unavailable
from .gossip import Gossip
from .transport import PeerError, Transport

REPLICAS_CACHE_MAX = 10_000  # memoised placements (cleared when full or placement changes)

LocalView = Callable[[str], dict[str, Any]]


class Peers:
    """Membership, placement and transport of one node, seen from that node (``me``)."""

    def __init__(
        self, me: str, gossip: Gossip, transport: Transport, replicas: int, local_view: LocalView
    ) -> None:
        self.me = me
        self.gossip = gossip
        self.transport = transport
        self.replicas = replicas
        self._local_view = local_view
        self._replicas_cache: tuple[list[str] | None, dict[str, list[str]]] = (None, {})

    # ---- placement ----
    def placement_ids(self) -> list[str]:
        return self.gossip.placement_ids()

    def replicas_for(self, key: str) -> list[str]:
        """The key's replicas (memoised per placement: every request and scan asks)."""
        ids = self.gossip.placement_ids()
        state = self._replicas_cache
        if state[0] is not ids and state[0] != ids:  # placement changed: a new cache, swapped whole
            state = self._replicas_cache = (ids, {})
        cache = state[1]
        cached = cache.get(key)
        if cached is None:
            if len(cache) >= REPLICAS_CACHE_MAX:
                cache.clear()
            cached = cache[key] = placement.replicas(key, ids, self.replicas)
        return list(cached)

    # ---- who is up ----
    def is_live(self, node_id: str) -> bool:
        return self.gossip.is_live(node_id)

    def is_alive_member(self, node_id: str) -> bool:
        """Strictly alive (not suspect): what removing data or purging tombstones waits for."""
        return self.gossip.membership.state_of(node_id) == ALIVE

    def live_peers(self) -> list[Member]:
        return self.gossip.live_peers()

    def members(self) -> list[Member]:
        return self.gossip.membership.members()

    def known_count(self) -> int:
        return self.gossip.membership.known_count()

    def is_leader(self) -> bool:
        return self.gossip.is_leader()

    def check_joined(self) -> None:
        """A node started with seeds serves clients only once it knows its cluster: alone, it
        would take writes onto itself with one copy, and answer reads with "not found"."""
        if (refused := self.gossip.refused()) is not None:
            raise Unavailable(f"this node is not part of its cluster: {refused}; check --cluster-secret")
        if not self.gossip.membership.joined():
            seeds = ", ".join(self.gossip.membership.seeds)
            raise Unavailable(
                f"this node has not joined its cluster yet (no answer from its seeds: {seeds}); "
                "retry, or use another node"
            )

    def reachable(self, node_ids: list[str], for_write: bool = False) -> list[str]:
        """The nodes believed up: live to the failure detector and, for a write, not refusing
        connections right now (a crashed peer is refused at once but declared dead only
        seconds later; a write sent to it could only end "outcome unknown"). Reads still ask
        such a peer: it costs one refused connection, and just after a partition heals it may
        hold the newest version."""
        me = self.me
        return [
            n for n in node_ids
            if n == me or (self.gossip.is_live(n) and not (for_write and self._refusing(n)))
        ]  # fmt: skip

    def _refusing(self, node_id: str) -> bool:
        addr = self.gossip.address_of(node_id)
        return addr is not None and self.transport.refusing(addr)

    # ---- calling them ----
    def address(self, node_id: str) -> str:
        addr = self.gossip.address_of(node_id)
        if addr is None:
            raise PeerError(node_id, "unknown member")
        return addr

    async def call(self, node_id: str, path: str, message: Any, timeout: float | None = None) -> Any:
        """One message to the member ``node_id``; PeerError when it cannot be reached or refuses."""
        return await self.transport.call(self.address(node_id), path, message, timeout)

    async def views(
        self, node_id: str, keys: list[str], timeout: float | None = None
    ) -> list[dict[str, Any]]:
        """What ``node_id`` holds for each key (``{"entry": wire | None, "complete": bool}``),
        answered locally for this node itself."""
        if node_id == self.me:
            return [self._local_view(k) for k in keys]
        reply = await self.call(node_id, "/entries", {"keys": keys}, timeout)
        views = reply.get("views") if isinstance(reply, dict) else None
        if not isinstance(views, list) or len(views) != len(keys):
            raise PeerError(node_id, "malformed entries reply")
        return views
