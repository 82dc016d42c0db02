"""The status page's cluster view: each node's recent activity, disk and re-sync, and the
warnings an operator must see.

``GET /status/series``: this node's per-second samples (core/series.py), taken once a second by
``sample_activity``. ``GET /status/cluster``: this node's summary and every live peer's (asked on
the RPC stream, ``summary`` method, a short deadline each), with the warnings and re-sync
sentences of core/health.py. Neither reads the file listing: both cost the same at 100 files
or 100,000.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiohttp import web

from ..cluster.transport import PeerError
from ..core.health import cluster_warnings, repair_sentence
from ..node import Node
from .metrics import CLIENT_BYTES, CLIENT_REQUESTS, REQUESTS
from .public import get_node

log = logging.getLogger("p2pstore.api")
SAMPLE_EVERY = 1.0  # seconds between samples: the charts' resolution
PEER_TIMEOUT = 2.0  # a peer that does not answer its summary by then is shown as not answering


def counters(node: Node) -> dict[str, float]:
    """Cumulative client requests (native file requests and S3), bytes in and out, repair bytes."""
    s3 = sum(n for (api, _, _), n in REQUESTS.items() if api == "s3")
    return {
        "requests": CLIENT_REQUESTS["public"] + s3,
        "bytes_in": CLIENT_BYTES["in"],
        "bytes_out": CLIENT_BYTES["out"],
        "repair_bytes": node.cluster.repairer.stats.bytes_copied,
    }


def gauges(node: Node) -> dict[str, float]:
    rep = node.cluster.repairer.stats
    left = max(0, rep.bytes_to_copy - rep.pass_copied) if rep.running else 0
    return {"repair_left_bytes": left, "repair_left_files": rep.queue if rep.running else 0}


async def sample_activity(node: Node) -> None:
    """Sample the counters once a second for the life of the node (a task of server.serve)."""
    while True:
        node.series.add(time.time(), counters(node), gauges(node))
        await asyncio.sleep(SAMPLE_EVERY)


def node_summary(node: Node) -> dict[str, Any]:
    """What this node tells the page (through whichever node serves it): disk, re-sync, activity."""
    rep = node.cluster.repairer.stats
    rate = node.series.recent_rate("repair_bytes")
    repair = {
        "running": rep.running,
        "queue": rep.queue,
        "bytes_to_copy": rep.bytes_to_copy,
        "pass_copied": rep.pass_copied,
        "bytes_copied": rep.bytes_copied,
        "files_repaired": rep.files_repaired,
        "failures": rep.failures,
        "last_error": rep.last_error,
        "last_pass_started": rep.last_pass_started,
    }
    return {
        "node_id": node.node_id,
        "ok": True,
        "disk": node.store.chunks.disk_usage(),
        "min_free_bytes": node.config.min_free_bytes,
        "repair": repair,
        "repair_rate": round(rate, 1),
        "repair_text": repair_sentence(node.node_id, repair, rate),
        "security_warning": node.config.plain_warning,
        "join_error": node.cluster.gossip.refused(),
        "series": node.series.rates(),
    }


async def peer_summary(node: Node, member_id: str, address: str) -> dict[str, Any]:
    try:
        reply = await node.cluster.peers.transport.call(address, "/summary", {}, timeout=PEER_TIMEOUT)
    except PeerError as exc:
        return {"node_id": member_id, "ok": False, "error": str(exc), "status": exc.status}
    if not isinstance(reply, dict):
        return {"node_id": member_id, "ok": False, "error": "malformed summary", "status": None}
    return {**reply, "node_id": member_id, "ok": True}


async def cluster_overview(node: Node) -> dict[str, Any]:
    """Every member's summary (a dead or departed one as not answering) and the warnings."""
    gossip = node.cluster.gossip
    members = gossip.members_json()
    mine = node_summary(node)
    asks = []
    for m in members:
        if m["self"]:
            continue
        if m["state"] in ("alive", "suspect"):
            asks.append(peer_summary(node, m["id"], m["address"]))
        else:
            asks.append(_down(m))
    others = list(await asyncio.gather(*asks))
    summaries = [mine, *others]
    return {
        "node_id": node.node_id,
        "now": time.time(),
        "nodes": summaries,
        "warnings": cluster_warnings(members, summaries, time.time()),
    }


async def _down(member: dict[str, Any]) -> dict[str, Any]:
    return {"node_id": member["id"], "ok": False, "error": f"{member['state']}", "status": None}


async def series_route(request: web.Request) -> web.Response:
    node = get_node(request)
    series = node.series
    body = {"node_id": node.node_id, "interval": SAMPLE_EVERY, "totals": series.totals(), **series.rates()}
    return web.json_response(body)


async def cluster_route(request: web.Request) -> web.Response:
    return web.json_response(await cluster_overview(get_node(request)))


def add_overview_routes(app: web.Application) -> None:
    app.router.add_get("/status/series", series_route)
    app.router.add_get("/status/cluster", cluster_route)
