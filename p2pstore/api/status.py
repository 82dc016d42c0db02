"""GET /status: one node's view of itself and its cluster, as JSON (the page draws it)."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from .. import __version__
from ..node import Node

SLOW_COUNT = 0.02  # seconds: a count that took longer is reused for a while
COUNTS_REUSE_FACTOR = 20  # for 20 times what it took (so counting costs at most ~5 % of the node)
COUNTS_MAX_AGE = 10.0  # and never longer than this
_counts: dict[str, tuple[float, dict[str, int]]] = {}  # node id -> (reuse until, counts)


def file_counts(node: Node) -> dict[str, int]:
    """Files, bytes, tombstones, chunks: exact in a small store; in a large one (a full count of
    100,000 files takes ~0.1-0.2 s, and every open status page asks each second) reused for a
    few seconds."""
    now = time.monotonic()
    cached = _counts.get(node.node_id)
    if cached is not None and now < cached[0]:
        return cached[1]
    counts = node.store.db.counts()
    took = time.monotonic() - now
    if took > SLOW_COUNT:
        _counts[node.node_id] = (now + took + min(COUNTS_MAX_AGE, took * COUNTS_REUSE_FACTOR), counts)
    else:
        _counts.pop(node.node_id, None)
    return counts


def status_json(node: Node) -> dict[str, Any]:
    counts = file_counts(node)
    cluster = node.cluster
    gossip = cluster.gossip
    return {
        "node_id": node.node_id,
        "address": node.config.advertise_address,
        "url": node.config.url,
        "security": {
            "internal": "mutual TLS" if node.config.internal_tls else "plain HTTP, signed",
            "public": "HTTPS" if node.config.tls_cert else "HTTP",
            "warning": node.config.plain_warning,
        },
        "version": __version__,
        "uptime": round(time.time() - node.started, 3),
        **counts,
        "disk": node.store.chunks.disk_usage(),
        "joined": gossip.joined(),
        "join_error": gossip.refused(),
        "members": gossip.members_json(),
        "leader": gossip.leader,
        "term": gossip.term,
        "is_leader": gossip.is_leader(),
        "replication": {
            "replicas": node.config.replicas,
            "write_quorum": node.config.write_quorum,
            "bad_copies_reported": cluster.fetcher.bad_copies_reported,
            "read_repairs_pushed": cluster.reads.read_repairs_pushed,
            "announced": cluster.announcer.stats(),
            "read_buffers": cluster.reads.budget.stats(),
        },
        "manifest": {  # equal roots on two nodes: equal manifests (anti-entropy's first check)
            "root": node.store.merkle().root().hex(),
            "entries": node.store.merkle().entries,
            "syncs": cluster.antientropy.manifest_syncs,
            "entries_learned": cluster.antientropy.entries_learned,
            "entries_served": cluster.antientropy.entries_served,
        },
        "repair": {**asdict(cluster.repairer.stats), **cluster.housekeeper.stats()},
        "scrub": {
            **asdict(cluster.scrubber.stats),
            "rate": node.config.scrub_rate,
            "chunk_rate": node.config.scrub_chunk_rate,
        },
        "lifecycle": dict(cluster.versions.lifecycle),
        "read_leases": cluster.leases.stats(),
        "storage": {
            "corrupt_chunks_found": node.store.stats.corrupt_chunks_found,
            "restored_from_checkpoint": node.store.stats.restored_from,
            "last_checkpoint": node.store.stats.last_checkpoint,
        },
    }
