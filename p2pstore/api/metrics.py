"""Prometheus text exposition of a node's counters and gauges (no client library needed)."""

from __future__ import annotations

import gc
from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..node import Node

REQUESTS: Counter[tuple[str, str, str]] = Counter()  # (api, method, status class) -> count
BYTES_IN: Counter[str] = Counter()  # api -> request body bytes announced by Content-Length
CLIENT_REQUESTS: Counter[str] = Counter()  # api -> file requests of clients (not status polls)
CLIENT_BYTES: Counter[str] = Counter()  # "in"/"out" -> file bytes received from / sent to clients
RPC_READ_PAUSES: Counter[str] = Counter()  # why a peer's RPC stream stopped being read -> times


STATES = ("alive", "suspect", "dead", "left")


def render_metrics(node: Node) -> str:
    """One scrape: every value read fresh from the node's state."""
    cluster = node.cluster
    counts = node.store.db.counts()
    disk = node.store.chunks.disk_usage()
    members = cluster.gossip.membership.members()
    rep, scrub = cluster.repairer.stats, cluster.scrubber.stats
    labels = f'node="{node.node_id}"'
    rows: list[tuple[str, str, str, float]] = [
        ("p2pstore_files", "gauge", "Live files in this node's manifest", counts["files"]),
        ("p2pstore_file_bytes", "gauge", "Bytes of live files in the manifest", counts["bytes"]),
        ("p2pstore_tombstones", "gauge", "Deleted keys still remembered", counts["tombstones"]),
        ("p2pstore_disk_free_bytes", "gauge", "Free bytes on the data disk", disk["free"]),
        ("p2pstore_leader_term", "gauge", "Current election term", cluster.gossip.term),
        ("p2pstore_is_leader", "gauge", "1 while leader (lease held)", int(cluster.gossip.is_leader())),
        ("p2pstore_repair_queue", "gauge", "Files waiting for repair", rep.queue),
        ("p2pstore_repair_bytes_copied_total", "counter", "Bytes copied by repair", rep.bytes_copied),
        ("p2pstore_repair_files_total", "counter", "Files repaired", rep.files_repaired),
        ("p2pstore_repair_failures_total", "counter", "Repairs that failed", rep.failures),
        ("p2pstore_scrub_bytes_total", "counter", "Bytes verified by the scrubber", scrub.bytes_checked),
        ("p2pstore_scrub_corrupt_total", "counter", "Corrupt chunks found by scrub", scrub.corrupt_found),
        ("p2pstore_corrupt_reads_total", "counter", "Corrupt chunks met while reading",
         node.store.stats.corrupt_chunks_found),
        ("p2pstore_bad_copies_reported_total", "counter", "Replica copies that failed a read",
         cluster.fetcher.bad_copies_reported),
        ("p2pstore_composed_objects_total", "counter",
         "Objects this node committed by reference to chunks the cluster held (S3 Complete, Copy)",
         cluster.composer.composed),
        ("p2pstore_compose_fetched_bytes_total", "counter",
         "Chunk bytes this node fetched from other nodes to commit composed objects (S3 Complete, Copy)",
         cluster.composer.local.bytes_fetched),
        ("p2pstore_read_buffer_bytes", "gauge", "Bytes of chunk buffers reads hold now (read budget)",
         cluster.reads.budget.held),
        ("p2pstore_read_buffer_waits_total", "counter", "Reads that waited for room in the read budget",
         cluster.reads.budget.waits),
        ("p2pstore_read_buffer_overdrafts_total", "counter",
         "Reads that waited the longest allowed and went over the read budget",
         cluster.reads.budget.overdrafts),
        ("p2pstore_read_repairs_total", "counter", "Newest entries sent to replicas a read found behind",
         cluster.reads.read_repairs_pushed),
        ("p2pstore_manifest_syncs_total", "counter", "Manifest exchanges this node started and completed",
         cluster.antientropy.manifest_syncs),
        ("p2pstore_entries_announced_total", "counter",
         "New entries sent to members outside their replica set", cluster.announcer.sent),
        ("p2pstore_announced_entries_applied_total", "counter",
         "Announced entries this node applied (news here)", cluster.announcer.received),
        ("p2pstore_lease_reads_total", "counter", "GETs answered from the local copy under read leases",
         cluster.leases.lease_reads),
        ("p2pstore_lease_write_waits_total", "counter", "Writes that waited for a leaseholder past W",
         cluster.leases.writes_waited),
        ("p2pstore_lease_revocations_total", "counter", "Read leases this node revoked as a grantor",
         cluster.leases.grantor.revocations),
        ("p2pstore_read_leases_held", "gauge", "Other nodes whose read lease this node holds now",
         len(cluster.leases.held_from())),
        ("p2pstore_staged_uploads", "gauge", "Uploads staged, waiting for commit",
         len(cluster.replica.staged)),
        ("p2pstore_replication_pending", "gauge",
         "Replica writes still running after the ack, and pending read repairs", len(cluster.background)),
        ("p2pstore_commit_batches_total", "counter", "Group commits (SQLite transactions)",
         node.store.committer.batches),
        ("p2pstore_gc_frozen_objects", "gauge", "Objects kept out of Python's cyclic GC (gc.freeze)",
         gc.get_freeze_count()),
        *((f"p2pstore_lifecycle_{name}_total", "counter", f"Lifecycle (leader): {name.replace('_', ' ')}", n)
          for name, n in cluster.versions.lifecycle.items()),
    ]  # fmt: skip
    lines: list[str] = []
    for name, kind, help_text, value in rows:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name}{{{labels}}} {value}"]
    lines += ["# HELP p2pstore_requests_total HTTP requests served", "# TYPE p2pstore_requests_total counter"]
    for (api, method, status), n in sorted(REQUESTS.items()):
        lines.append(
            f'p2pstore_requests_total{{{labels},api="{api}",method="{method}",status="{status}"}} {n}'
        )
    lines += ["# HELP p2pstore_request_bytes_total Request body bytes received",
              "# TYPE p2pstore_request_bytes_total counter"]  # fmt: skip
    for api, n in sorted(BYTES_IN.items()):
        lines.append(f'p2pstore_request_bytes_total{{{labels},api="{api}"}} {n}')
    lines += ["# HELP p2pstore_rpc_read_pauses_total Times a peer's RPC stream was not read for a while: "
              "too many of its calls in flight, or too many answers it left unread",
              "# TYPE p2pstore_rpc_read_pauses_total counter"]  # fmt: skip
    for reason in ("calls", "answers"):
        n = RPC_READ_PAUSES[reason]
        lines.append(f'p2pstore_rpc_read_pauses_total{{{labels},reason="{reason}"}} {n}')
    lines += ["# HELP p2pstore_gc_collections_total Python cyclic GC passes by generation (2: full)",
              "# TYPE p2pstore_gc_collections_total counter"]  # fmt: skip
    for generation, stats in enumerate(gc.get_stats()):
        n = stats["collections"]
        lines.append(f'p2pstore_gc_collections_total{{{labels},generation="{generation}"}} {n}')
    lines += ["# HELP p2pstore_members Members by state", "# TYPE p2pstore_members gauge"]
    for state in STATES:
        n = sum(1 for m in members if m.state == state)
        lines.append(f'p2pstore_members{{{labels},state="{state}"}} {n}')
    return "\n".join(lines) + "\n"
