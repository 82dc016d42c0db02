"""Buckets and access keys: cluster metadata kept as small JSON entries under the reserved
``.p2pstore/s3/`` folder, written through the coordinator (W quorum, replicated, converged by
anti-entropy, deleted as tombstones) and read with quorum reads, cached for a few seconds.

A bucket is ``.p2pstore/s3/buckets/<name>`` (owner, created); an access key is
``.p2pstore/s3/keys/<access key id>`` (name, secret, admin flag, per-bucket permissions).
"""

from __future__ import annotations

import asyncio
import functools
import json
import secrets
import string
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import NotFound
from ..node import Node

PREFIX = ".p2pstore/s3/"
BUCKETS = PREFIX + "buckets/"
KEYS = PREFIX + "keys/"
CACHE_SECONDS = 5.0  # how long a node trusts a record it read (its own writes refresh it)
MAX_RECORD = 64 * 1024
LIST_LIMIT = 10_000
ACCESS_KEY_ALPHABET = string.ascii_uppercase + string.digits
PERMISSIONS = ("read", "write")


@dataclass
class AccessKey:
    """An S3 credential. An admin key may create buckets and reaches every bucket; any key owns
    what it created; other buckets only as ``buckets`` allows (bucket -> ["read", "write"])."""

    key_id: str
    name: str
    secret: str
    admin: bool = False
    buckets: dict[str, list[str]] = field(default_factory=dict)
    created: float = 0.0

    def public(self) -> dict[str, Any]:
        """What may be shown: everything but the secret."""
        return {k: v for k, v in asdict(self).items() if k != "secret"}

    def may(self, bucket: Bucket, action: str) -> bool:
        return self.admin or bucket.owner == self.key_id or action in self.buckets.get(bucket.name, ())


@dataclass
class Bucket:
    name: str
    owner: str  # access key id of its creator
    created: float
    cors: list[dict[str, Any]] = field(default_factory=list)  # PutBucketCors rules (s3/cors.py)

    def record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"owner": self.owner, "created": self.created}
        if self.cors:
            record["cors"] = self.cors
        return record


def new_key_id() -> str:
    return "P2P" + "".join(secrets.choice(ACCESS_KEY_ALPHABET) for _ in range(17))


def new_secret() -> str:
    return secrets.token_urlsafe(30)  # 40 characters


class Registry:
    """Reads and writes of bucket and key records through this node's coordinator."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._cache: dict[str, tuple[float, bytes]] = {}
        # the record each cached text was parsed into: every S3 request reads its key and bucket,
        # and parsing them again each time cost more than the lookup. Shared: never mutate one
        # (copy with dataclasses.replace, change the copy, write it).
        self._parsed: dict[str, tuple[bytes, Any]] = {}
        self._pending: dict[str, asyncio.Future[bytes | None]] = {}  # reads in flight, shared

    def _memo(self, key: str, data: bytes, parse: Callable[[bytes], Any]) -> Any:
        hit = self._parsed.get(key)
        if hit is not None and hit[0] is data:
            return hit[1]
        value = parse(data)
        self._parsed[key] = (data, value)
        return value

    # ---- records ----
    async def _read(self, key: str) -> bytes | None:
        hit = self._cache.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        # Every request in flight reads the same few records: when one expires they all miss at
        # once, and one read answers them all (a shielded task: one caller's cancellation must not
        # fail the others).
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = asyncio.ensure_future(self._fetch(key))
            pending.add_done_callback(functools.partial(self._fetched, key))
        return await asyncio.shield(pending)

    def _fetched(self, key: str, task: asyncio.Future[bytes | None]) -> None:
        if self._pending.get(key) is task:
            del self._pending[key]
        if not task.cancelled():
            task.exception()  # retrieved here too: every caller may have gone

    async def _fetch(self, key: str) -> bytes | None:
        """Read a record through the coordinator; cached unless a write of it came meanwhile."""
        reads = self.node.cluster.reads
        try:  # a quorum read, which neither needs nor asks for read leases (cluster/reads.py)
            resolved = await reads.resolve(key, lease=False)
        except NotFound:
            self._cache.pop(key, None)
            return None
        if resolved.entry.size > MAX_RECORD:
            return None
        data = b"".join([piece async for piece in reads.read_range(resolved, 0, resolved.entry.size)])
        if self._pending.get(key) is asyncio.current_task():  # no write of it since it started
            self._cache[key] = (time.monotonic() + CACHE_SECONDS, data)
        return data

    async def _write(self, key: str, record: dict[str, Any]) -> None:
        data = json.dumps(record, sort_keys=True).encode()

        async def body() -> AsyncIterator[bytes]:
            yield data

        self._cache.pop(key, None)
        self._pending.pop(key, None)  # a read in flight may predate this write: not shared further
        await self.node.cluster.writes.put(key, body(), "application/json", None, len(data))
        self._cache[key] = (time.monotonic() + CACHE_SECONDS, data)

    async def _delete(self, key: str) -> bool:
        self._cache.pop(key, None)
        self._pending.pop(key, None)
        try:
            await self.node.cluster.writes.delete(key)
        except NotFound:
            return False
        return True

    def _names(self, prefix: str) -> list[str]:
        """Record names under ``prefix`` in this node's manifest (every node keeps all of it)."""
        return [e.key[len(prefix) :] for e in self.node.store.db.list(prefix, "", LIST_LIMIT)]

    def _fresh(self, key: str) -> Any:
        """The parsed record of ``key`` when its cached text is still fresh, else None: the
        common case of every S3 request, answered without a coroutine. The caller falls back
        to get_key/get_bucket, which read (and account for missing records)."""
        hit = self._cache.get(key)
        if hit is None or hit[0] <= time.monotonic():
            return None
        parsed = self._parsed.get(key)
        return parsed[1] if parsed is not None and parsed[0] is hit[1] else None

    def cached_key(self, key_id: str) -> AccessKey | None:
        """The access key from a fresh cache entry (None: ask get_key)."""
        return self._fresh(KEYS + key_id)

    def cached_bucket(self, name: str) -> Bucket | None:
        """The bucket from a fresh cache entry (None: ask get_bucket)."""
        return self._fresh(BUCKETS + name)

    # ---- access keys ----
    async def get_key(self, key_id: str) -> AccessKey | None:
        if not key_id or "/" in key_id:
            return None
        data = await self._read(KEYS + key_id)
        if data is None:
            return None

        def parse(data: bytes) -> AccessKey | None:
            try:
                return AccessKey(**{**json.loads(data), "key_id": key_id})
            except (ValueError, TypeError):
                return None

        return self._memo(KEYS + key_id, data, parse)

    async def put_key(self, key: AccessKey) -> None:
        record = asdict(key)
        record.pop("key_id")
        await self._write(KEYS + key.key_id, record)

    async def delete_key(self, key_id: str) -> bool:
        return await self._delete(KEYS + key_id)

    async def list_keys(self) -> list[AccessKey]:
        keys = [await self.get_key(k) for k in self._names(KEYS)]
        return [k for k in keys if k is not None]

    async def find_key(self, id_or_name: str) -> AccessKey | None:
        """A key by its access key id, else by its name."""
        key = await self.get_key(id_or_name)
        if key is not None:
            return key
        return next((k for k in await self.list_keys() if k.name == id_or_name), None)

    # ---- buckets ----
    async def get_bucket(self, name: str) -> Bucket | None:
        data = await self._read(BUCKETS + name)
        if data is None:
            return None

        def parse(data: bytes) -> Bucket | None:
            try:
                obj = json.loads(data)
                cors = obj.get("cors") or []
                if not isinstance(cors, list):
                    cors = []
                return Bucket(name=name, owner=str(obj["owner"]), created=float(obj["created"]), cors=cors)
            except (ValueError, TypeError, KeyError, AttributeError):
                return None

        return self._memo(BUCKETS + name, data, parse)

    async def create_bucket(self, name: str, owner: str) -> Bucket:
        bucket = Bucket(name, owner, time.time())
        await self._write(BUCKETS + name, bucket.record())
        return bucket

    async def put_bucket(self, bucket: Bucket) -> None:
        """Rewrite a bucket's record (its CORS rules changed)."""
        await self._write(BUCKETS + bucket.name, bucket.record())

    async def delete_bucket(self, name: str) -> bool:
        return await self._delete(BUCKETS + name)

    async def list_buckets(self) -> list[Bucket]:
        buckets = [await self.get_bucket(n) for n in self._names(BUCKETS)]
        return [b for b in buckets if b is not None]
