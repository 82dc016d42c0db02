"""What an operator should be told about the cluster, in words: the warnings at the top of the
status page and the sentence for each node's re-sync.

Pure functions over what the nodes report (their summaries, the member list), so the rules are
unit-tested without a cluster; the page only shows the words. A node's summary is the dict
``api/overview.py`` builds: ``ok``, ``disk``, ``min_free_bytes``, ``repair``, ``repair_rate``,
``security_warning``, ``join_error`` (or ``ok: False`` and ``error`` for a node that did not
answer).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

DISK_WARN_FRACTION = 0.05  # warn below 5 % free ...
DISK_WARN_FACTOR = 2  # ... or below twice the free space a node keeps (--min-free-bytes)
REFUSED_STATUSES = (401, 403, 426, 495)  # wrong secret, forbidden, other protocol, TLS refused


def human_bytes(n: float) -> str:
    """Decimal units, as a person reads a disk: ``1.2 GB``."""
    units = ("B", "kB", "MB", "GB", "TB", "PB")
    value, i = float(max(0.0, n)), 0
    while value >= 1000 and i < len(units) - 1:
        value /= 1000
        i += 1
    if i == 0:
        return f"{int(value)} B"
    return f"{value:.1f} {units[i]}" if value < 100 else f"{value:.0f} {units[i]}"


def human_seconds(s: float) -> str:
    """``40 s``, ``3 min``, ``1 h 5 min``."""
    s = max(0, round(s))
    if s < 90:
        return f"{s} s"
    if s < 5400:
        return f"{round(s / 60)} min"
    return f"{s // 3600} h {round(s % 3600 / 60)} min"


def repair_sentence(node_id: str, repair: Mapping[str, Any], rate: float) -> str | None:
    """``re-syncing node3: 1.2 GB of 3.4 GB, 40 s left`` while a pass copies; None when idle."""
    total = int(repair.get("bytes_to_copy") or 0)
    files = int(repair.get("queue") or 0)
    if not repair.get("running") or (total <= 0 and files <= 0):
        return None
    done = min(total, int(repair.get("pass_copied") or 0))
    left = total - done
    text = f"re-syncing {node_id}: {human_bytes(done)} of {human_bytes(total)}"
    if files:
        text += f" ({files} file{'s' if files != 1 else ''} to go)"
    if rate > 0 and left > 0:
        text += f", {human_seconds(left / rate)} left"
    elif left > 0:
        text += ", estimating the time left"
    return text


def _warning(level: str, kind: str, text: str, node: str | None = None) -> dict[str, Any]:
    return {"level": level, "kind": kind, "text": text, "node": node}


def cluster_warnings(
    members: Iterable[Mapping[str, Any]], summaries: Iterable[Mapping[str, Any]], now: float
) -> list[dict[str, Any]]:
    """The warnings, most serious first: peers unreachable or refusing (a wrong secret or
    certificate), disks almost full, files under-replicated, plain node-to-node traffic."""
    out: list[dict[str, Any]] = []
    states = {m["id"]: m for m in members}
    for m in states.values():
        since = human_seconds(now - float(m.get("last_change") or now))
        if m.get("state") == "dead":
            out.append(_warning("danger", "unreachable",
                                f"{m['id']} is unreachable (down for {since}): the files it holds have "
                                "one copy fewer until it is back", m["id"]))  # fmt: skip
        elif m.get("state") == "suspect":
            out.append(_warning("warning", "unreachable",
                                f"{m['id']} is not answering probes (for {since})", m["id"]))  # fmt: skip
    plain: list[str] = []
    under = 0
    under_on: list[str] = []
    for s in summaries:
        nid = str(s.get("node_id"))
        if not s.get("ok"):
            if states.get(nid, {}).get("state") in ("dead", "suspect"):
                continue  # already said
            if s.get("status") in REFUSED_STATUSES:
                out.append(_warning("danger", "refused",
                                    f"{nid} refuses this node's requests (wrong cluster secret or "
                                    f"certificate?): {s.get('error')}", nid))  # fmt: skip
            else:
                out.append(_warning("warning", "unreachable", f"{nid} did not answer: {s.get('error')}", nid))
            continue
        if s.get("join_error"):
            out.append(_warning("danger", "refused",
                                f"{nid} is not part of the cluster: {s['join_error']} (wrong cluster "
                                "secret or certificate?)", nid))  # fmt: skip
        disk = s.get("disk") or {}
        total, free = float(disk.get("total") or 0), float(disk.get("free") or 0)
        floor = float(s.get("min_free_bytes") or 0)
        if total > 0 and free <= floor:
            out.append(_warning("danger", "disk",
                                f"disk full on {nid}: {human_bytes(free)} free, it refuses writes below "
                                f"{human_bytes(floor)}", nid))  # fmt: skip
        elif total > 0 and free < max(DISK_WARN_FRACTION * total, DISK_WARN_FACTOR * floor):
            text = (f"disk almost full on {nid}: {human_bytes(free)} free of {human_bytes(total)} "
                    f"(writes stop below {human_bytes(floor)})")  # fmt: skip
            out.append(_warning("warning", "disk", text, nid))
        queue = int((s.get("repair") or {}).get("queue") or 0)
        if queue:
            under += queue
            under_on.append(nid)
        if s.get("security_warning"):
            plain.append(nid)
    if under:
        out.append(_warning("warning", "under-replicated",
                            f"{under} file{'s' if under != 1 else ''} under-replicated: "
                            f"re-sync running on {', '.join(under_on)}"))  # fmt: skip
    if plain:
        out.append(_warning("warning", "plain",
                            f"node-to-node traffic is plain HTTP (signed, not encrypted) on "
                            f"{', '.join(plain)}: run with TLS on untrusted networks"))  # fmt: skip
    order = {"danger": 0, "warning": 1}
    return sorted(out, key=lambda w: order.get(w["level"], 2))
