"""Bucket lifecycle (docs/versions.md): Put/Get/DeleteBucketLifecycleConfiguration, and the
leader's runner that applies the rules (core/lifecycle.py) in bounded batches.

The rules are kept in the bucket's versioning setting (cluster/versioning.py), so every node
reads them from its own manifest. Only the leader acts, like the other cluster-wide
housekeeping; every action is an ordinary delete through the coordinator (a delete marker, or
the removal of one version), so it is idempotent, replicates, and frees chunk bytes through the
usual chunk GC once no version references them. ``--lifecycle-clock-offset`` shifts the time
the rules see (tests make 40 days pass without waiting).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import xml.etree.ElementTree as ET

from aiohttp import web

from ..cluster import versioning as folders
from ..cluster.background import BackgroundLoop
from ..core import lifecycle
from ..core.keys import RESERVED_PREFIX
from ..core.versions import version_id
from ..errors import NotFound
from ..node import Node
from . import uploads
from . import xml as s3xml
from .context import S3Call
from .errors import S3Error
from .payload import read_all

log = logging.getLogger("p2pstore.s3")
MAX_BODY = 256 * 1024
BATCH = 1000  # keys looked at per round and bucket
MAX_INTERVAL = 60.0


# ---- the configuration: S3's XML <-> rules ----
def _int(elem: ET.Element, name: str) -> int | None:
    text = s3xml.child_text(elem, name)
    if text is None:
        return None
    if not text.strip().isdigit():
        raise S3Error("MalformedXML", f"{name} must be a whole number")
    return int(text)


def _child(elem: ET.Element, name: str) -> ET.Element | None:
    return next((c for c in elem if s3xml.local(c.tag) == name), None)


def parse_rules(body: bytes) -> list[lifecycle.Rule]:
    root = s3xml.parse(body)
    if s3xml.local(root.tag) != "LifecycleConfiguration":
        raise S3Error("MalformedXML", "The root element must be <LifecycleConfiguration>")
    rules = []
    for i, elem in enumerate(c for c in root if s3xml.local(c.tag) == "Rule"):
        status = s3xml.child_text(elem, "Status")
        if status not in ("Enabled", "Disabled"):
            raise S3Error("MalformedXML", "Each rule needs a Status of Enabled or Disabled")
        prefix = s3xml.child_text(elem, "Prefix")
        flt = _child(elem, "Filter")
        if flt is not None:
            if any(s3xml.local(c.tag) != "Prefix" for c in flt):
                raise S3Error("NotImplemented", "Lifecycle filters by tag or size are not implemented")
            prefix = s3xml.child_text(flt, "Prefix") or prefix
        exp, nce, abort = _child(elem, "Expiration"), _child(elem, "NoncurrentVersionExpiration"), _child(
            elem, "AbortIncompleteMultipartUpload"
        )
        for unsupported in ("Transition", "NoncurrentVersionTransition"):
            if _child(elem, unsupported) is not None:
                raise S3Error("NotImplemented", f"{unsupported} is not implemented (one storage class)")
        if exp is not None and s3xml.child_text(exp, "Date") is not None:
            raise S3Error("NotImplemented", "Expiration by Date is not implemented; use Days")
        marker = (s3xml.child_text(exp, "ExpiredObjectDeleteMarker") or "").strip() if exp is not None else ""
        rule = lifecycle.Rule(
            id=s3xml.child_text(elem, "ID") or f"rule-{i + 1}",
            prefix=prefix or "",
            enabled=status == "Enabled",
            expiration_days=_int(exp, "Days") if exp is not None else None,
            expired_object_delete_marker=marker.lower() == "true",
            noncurrent_days=_int(nce, "NoncurrentDays") if nce is not None else None,
            newer_noncurrent_versions=(_int(nce, "NewerNoncurrentVersions") or 0) if nce is not None else 0,
            abort_upload_days=_int(abort, "DaysAfterInitiation") if abort is not None else None,
        )
        try:
            rules.append(rule.validate())
        except ValueError as exc:
            raise S3Error("InvalidArgument", str(exc)) from None
    if not rules or len(rules) > lifecycle.MAX_RULES:
        raise S3Error("MalformedXML", f"A lifecycle configuration holds 1 to {lifecycle.MAX_RULES} rules")
    return rules


def rules_xml(rules: list[lifecycle.Rule]) -> bytes:
    el = s3xml.el
    parts = []
    for r in rules:
        body = el("ID", r.id) + f"<Filter>{el('Prefix', r.prefix)}</Filter>"
        body += el("Status", "Enabled" if r.enabled else "Disabled")
        if r.expiration_days is not None:
            body += f"<Expiration>{el('Days', r.expiration_days)}</Expiration>"
        if r.expired_object_delete_marker:
            body += f"<Expiration>{el('ExpiredObjectDeleteMarker', 'true')}</Expiration>"
        if r.noncurrent_days is not None:
            n = r.newer_noncurrent_versions
            newer = el("NewerNoncurrentVersions", n) if n else ""
            body += f"<NoncurrentVersionExpiration>{el('NoncurrentDays', r.noncurrent_days)}{newer}"
            body += "</NoncurrentVersionExpiration>"
        if r.abort_upload_days is not None:
            body += f"<AbortIncompleteMultipartUpload>{el('DaysAfterInitiation', r.abort_upload_days)}"
            body += "</AbortIncompleteMultipartUpload>"
        parts.append(f"<Rule>{body}</Rule>")
    return s3xml.document("LifecycleConfiguration", "".join(parts))


# ---- the operations ----
async def put_lifecycle(call: S3Call) -> web.Response:
    await call.bucket_for("write")
    rules = parse_rules(await read_all(call.request, call.verified, MAX_BODY))
    await call.node.cluster.versions.set_settings(call.bucket, lifecycle=lifecycle.dumps(rules))
    return web.Response(status=200)


async def get_lifecycle(call: S3Call) -> web.Response:
    await call.bucket_for("read")
    rules = lifecycle.loads(folders.settings(call.node.store, call.bucket).get("lifecycle", ""))
    if not rules:
        raise S3Error("NoSuchLifecycleConfiguration", "The lifecycle configuration does not exist",
                      BucketName=call.bucket)  # fmt: skip
    return web.Response(body=rules_xml(rules), content_type="application/xml")


async def delete_lifecycle(call: S3Call) -> web.Response:
    await call.bucket_for("write")
    if folders.settings(call.node.store, call.bucket).get("lifecycle"):
        await call.node.cluster.versions.set_settings(call.bucket, lifecycle=None)
    return web.Response(status=204)


HANDLERS = {"GET": get_lifecycle, "PUT": put_lifecycle, "DELETE": delete_lifecycle}


# ---- the leader's runner ----
class LifecycleRunner(BackgroundLoop):
    """Applies every bucket's rules, BATCH keys per bucket per round, resuming where it left."""

    name = "s3-lifecycle"

    def __init__(self, node: Node) -> None:
        self.node = node
        self.offset = node.config.lifecycle_clock_offset
        self.cursors: dict[str, str] = {}
        self.progress = node.cluster.versions.lifecycle

    def interval(self) -> float:
        return max(1.0, min(MAX_INTERVAL, self.node.config.gossip_interval * 10))

    def now(self) -> float:
        return time.time() + self.offset

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval())
            try:
                await self.round()
            except Exception as exc:  # retried at the next round
                log.warning("lifecycle round failed: %s", exc)

    def buckets(self) -> dict[str, list[lifecycle.Rule]]:
        found = {}
        for entry in uploads.local_entries(self.node, folders.SETTINGS_PREFIX):
            text = dict(entry.meta).get("lifecycle")
            if text:
                found[entry.key.removeprefix(folders.SETTINGS_PREFIX)] = lifecycle.loads(text)
        return found

    async def round(self) -> int:
        """One bounded round over every bucket with rules (leader only); actions taken."""
        if not self.node.cluster.peers.is_leader():
            return 0
        taken = 0
        for bucket, rules in self.buckets().items():
            taken += await self._bucket(bucket, rules)
        self.progress["rounds"] += 1
        return taken

    async def _bucket(self, bucket: str, rules: list[lifecycle.Rule]) -> int:
        now, store = self.now(), self.node.store
        base = bucket + "/"
        after = self.cursors.get(bucket, "")
        page = store.db.list(base, after, BATCH, include_deleted=True)
        self.cursors[bucket] = page[-1].key if len(page) == BATCH else ""  # "" : from the start again
        taken = 0
        for entry in page:
            if entry.key.startswith(RESERVED_PREFIX):
                continue
            versions = folders.versions_of(store, entry.key)
            seen = [lifecycle.Version(version_id(v), v.modified, v.deleted) for v in versions]
            actions = lifecycle.decide(rules, entry.key[len(base):], seen, now)
            self.progress["keys_scanned"] += 1
            for action in actions:
                with contextlib.suppress(NotFound):
                    if action.kind == "expire":
                        await self.node.cluster.writes.delete(entry.key)
                        self.progress["objects_expired"] += 1
                    else:
                        await self.node.cluster.versions.remove(entry.key, action.vid)
                        self.progress["versions_removed"] += 1
                    taken += 1
        for rule in rules:
            if rule.enabled and rule.abort_upload_days is not None and rule.prefix == "":
                max_age = rule.abort_upload_days * lifecycle.DAY
                for b, upload_id in uploads.stale_uploads(self.node, max_age, now):
                    if b == bucket:
                        await uploads.remove_upload(self.node, b, upload_id)
                        self.progress["uploads_aborted"] += 1
                        taken += 1
        if taken:
            log.info("lifecycle of bucket %s: %d actions", bucket, taken)
        return taken
