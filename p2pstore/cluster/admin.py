"""Operator actions that span the cluster: recovery of a named member, checkpoints of every
member, and which replicas hold a verified copy of each key (the listing's and page's report).
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..errors import NotFound, Unavailable
from ..storage.store import LocalStore
from .antientropy import AntiEntropy
from .peers import Peers
from .repair import Repairer
from .transport import PeerError

RECOVER_TIMEOUT = 3600.0  # a re-sync copies data: as long as that takes
CHECKPOINT_TIMEOUT = 60.0


class Admin:
    def __init__(self, store: LocalStore, peers: Peers, antientropy: AntiEntropy, repairer: Repairer) -> None:
        self.store = store
        self.peers = peers
        self.antientropy = antientropy
        self.repairer = repairer

    async def recover(self, target: str) -> dict[str, Any]:
        """Run the re-sync on ``target`` (node id or address) now; returns its report."""
        member = next((m for m in self.peers.members() if target in (m.id, m.address)), None)
        if member is None:
            raise NotFound(f"no member named {target}")
        if member.id == self.peers.me:
            return await self.recover_here()
        if not self.peers.is_live(member.id):
            raise Unavailable(f"member {member.id} is {member.state}; start it and it re-syncs itself")
        try:
            return await self.peers.transport.call(member.address, "/recover", {}, timeout=RECOVER_TIMEOUT)
        except PeerError as exc:
            raise Unavailable(f"recovery on {member.id} failed: {exc}") from exc

    async def recover_here(self) -> dict[str, Any]:
        """The newest manifest from every live peer first, then a full repair pass."""
        await self.antientropy.sync_all()
        return await self.repairer.run_pass()

    async def checkpoint_peers(self) -> list[dict[str, Any]]:
        """Ask every live peer for a checkpoint; one result per peer, failures included."""

        async def one(member_id: str, address: str) -> dict[str, Any]:
            try:
                return await self.peers.transport.call(address, "/checkpoint", {}, timeout=CHECKPOINT_TIMEOUT)
            except PeerError as exc:
                return {"node_id": member_id, "ok": False, "checkpoint": None, "error": str(exc)}

        peers = self.peers.live_peers()
        return list(await asyncio.gather(*(one(m.id, m.address) for m in peers)))

    async def replica_report(self, keys: list[str]) -> dict[str, list[dict[str, Any]]]:
        """For each key: its replica nodes and whether each holds a complete current copy."""
        by_node: dict[str, list[str]] = {}
        for key in keys:
            for n in self.peers.replicas_for(key):
                by_node.setdefault(n, []).append(key)

        async def views_of(node_id: str, ks: list[str]) -> tuple[str, dict[str, dict]]:
            if node_id != self.peers.me and not self.peers.is_live(node_id):
                return node_id, {}
            try:
                return node_id, dict(zip(ks, await self.peers.views(node_id, ks), strict=True))
            except (PeerError, KeyError, ValueError):
                return node_id, {}

        results = dict(await asyncio.gather(*(views_of(n, ks) for n, ks in by_node.items())))
        report: dict[str, list[dict[str, Any]]] = {}
        for key in keys:
            local = self.store.get(key)
            version = local.version if local else None
            rows = []
            for n in self.peers.replicas_for(key):
                view = results.get(n, {}).get(key)
                ok = bool(view and view["complete"] and view["entry"] and view["entry"]["version"] == version)
                rows.append({"node": n, "verified": ok})
            report[key] = rows
        return report
