"""The chaos workload: concurrent clients doing put/get/delete on a small key space.

A small key space makes overwrites and read/write races common, which is where lost updates
hide. Every value is unique (client, op id and random bytes), so a sha256 names exactly one
write and the checker can tell which write a read returned. Each operation is recorded when it
ends, with its outcome classified conservatively: anything the node did not clearly refuse
before committing is ``unknown``, never ``fail``.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiohttp

from .history import HistoryWriter, Op

# 503 messages that the node raises before anything was committed anywhere (nothing visible).
_REFUSED_BEFORE_COMMIT = ("replicas reachable", "stored the upload")


@dataclass
class WorkloadConfig:
    clients: int = 4
    keys: int = 8
    key_prefix: str = "chaos/"
    min_size: int = 1
    max_size: int = 48 * 1024
    put_weight: float = 0.45
    get_weight: float = 0.45
    delete_weight: float = 0.10
    op_timeout: float = 5.0
    think: float = 0.02  # pause between one client's operations (keeps 2 cores usable)
    w: int | None = None
    seed: int | None = None


def classify_error_status(status: int, message: str) -> str:
    """Outcome of a write answered with an error status (4xx refused, 503 only if pre-commit)."""
    if 400 <= status < 500:
        return "fail"
    if status == 503 and any(s in message for s in _REFUSED_BEFORE_COMMIT):
        return "fail"
    return "unknown"


class Workload:
    """Run ``clients`` loops against random gateways until ``duration`` has passed."""

    def __init__(
        self,
        gateways: Callable[[], Sequence[str]],
        history: HistoryWriter,
        config: WorkloadConfig | None = None,
    ) -> None:
        self.gateways = gateways
        self.history = history
        self.config = config or WorkloadConfig()
        self.rng = random.Random(self.config.seed)
        self._ids = itertools.count(1)
        self.t0 = time.monotonic()

    @property
    def keys(self) -> list[str]:
        return [f"{self.config.key_prefix}k{i:02d}" for i in range(self.config.keys)]

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 6)

    async def run(self, duration: float) -> None:
        timeout = aiohttp.ClientTimeout(total=self.config.op_timeout, sock_connect=2.0)
        connector = aiohttp.TCPConnector(limit=0, force_close=True)  # no stale pooled sockets to dead nodes
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            # aiohttp >= 3.10 silently resends an idempotent request (PUT, DELETE) once when the
            # server drops the connection; the resend's "connection refused" would then hide that
            # the first attempt was committed. One attempt per recorded operation, always.
            if hasattr(session, "_retry_connection"):
                session._retry_connection = False
            deadline = time.monotonic() + duration
            await asyncio.gather(*(self._client(i, session, deadline) for i in range(self.config.clients)))

    async def _client(self, client: int, session: aiohttp.ClientSession, deadline: float) -> None:
        cfg = self.config
        while time.monotonic() < deadline:
            kind = self.rng.choices(
                ("put", "get", "delete"), (cfg.put_weight, cfg.get_weight, cfg.delete_weight)
            )[0]
            key = self.rng.choice(self.keys)
            gateway = self.rng.choice(list(self.gateways()))
            op = await self.do(session, client, kind, key, gateway)
            self.history.record(op)
            backoff = 0.2 if (op.error or "").startswith("connect") else 0.0  # a dead gateway refuses fast
            await asyncio.sleep(backoff + cfg.think * self.rng.random())

    async def do(self, session: aiohttp.ClientSession, client: int, kind: str, key: str, gateway: str) -> Op:
        """Run one operation and return its record (never raises for node or network errors)."""
        op_id = next(self._ids)
        op = Op(
            id=op_id,
            client=client,
            op=kind,
            key=key,
            start=self.now(),
            end=0.0,
            outcome="unknown",
            gateway=gateway,
        )  # type: ignore[arg-type]
        query = f"?w={self.config.w}" if self.config.w else ""
        url = f"{gateway}/files/{key}{query}"
        try:
            if kind == "put":
                await self._put(session, url, op)
            elif kind == "delete":
                await self._delete(session, url, op)
            else:
                await self._get(session, f"{gateway}/files/{key}", op)
        except aiohttp.ClientConnectorError as exc:
            # Never connected: the request did not reach any node, so nothing happened.
            op.outcome, op.error = "fail", f"connect: {exc.strerror or exc}"
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            op.outcome, op.error = ("fail" if kind == "get" else "unknown"), f"{type(exc).__name__}: {exc}"
        op.end = self.now()
        return op

    def _value(self, op: Op) -> bytes:
        size = self.rng.randint(self.config.min_size, self.config.max_size)
        head = f"{op.client}:{op.id}:".encode()
        return (head + os.urandom(max(size - len(head), 16)))[: max(size, len(head) + 16)]

    async def _put(self, session: aiohttp.ClientSession, url: str, op: Op) -> None:
        body = self._value(op)
        sha = hashlib.sha256(body).hexdigest()
        op.sha256, op.size = sha, len(body)
        headers = {"X-Content-SHA256": sha, "Content-Type": "application/octet-stream"}
        async with session.put(url, data=body, headers=headers) as resp:
            op.status = resp.status
            payload = await _json(resp)
            if resp.status == 201:
                op.outcome, op.version = "ok", payload.get("version")
                op.extra["replicas"] = payload.get("replicas")
                if payload.get("sha256") != sha:
                    op.error = f"ack names sha256 {payload.get('sha256')}"
            else:
                op.error = str(payload.get("error", ""))[:200]
                op.outcome = classify_error_status(resp.status, op.error)  # type: ignore[assignment]

    async def _delete(self, session: aiohttp.ClientSession, url: str, op: Op) -> None:
        async with session.delete(url) as resp:
            op.status = resp.status
            payload = await _json(resp)
            if resp.status == 200:
                op.outcome, op.version = "ok", payload.get("version")
            else:
                op.error = str(payload.get("error", ""))[:200]
                op.outcome = classify_error_status(resp.status, op.error)  # type: ignore[assignment]

    async def _get(self, session: aiohttp.ClientSession, url: str, op: Op) -> None:
        async with session.get(url) as resp:
            op.status = resp.status
            if resp.status == 404:
                op.outcome = "ok"  # observed absent
                return
            if resp.status != 200:
                op.outcome = "fail"
                op.error = str((await _json(resp)).get("error", ""))[:200]
                return
            h = hashlib.sha256()
            size = 0
            try:
                async for piece in resp.content.iter_chunked(64 * 1024):
                    h.update(piece)
                    size += len(piece)
            except aiohttp.ClientPayloadError as exc:
                op.outcome, op.error = "fail", f"short body: {exc}"  # the node cut it: nothing served
                return
            if resp.content_length is not None and size != resp.content_length:
                op.outcome, op.error = "fail", f"short body: {size} of {resp.content_length} bytes"
                return
            op.outcome, op.sha256, op.size = "ok", h.hexdigest(), size
            op.etag = (resp.headers.get("ETag") or "").strip('W/"') or None
            op.version = resp.headers.get("X-P2PStore-Version")


async def _json(resp: aiohttp.ClientResponse) -> dict:
    try:
        data = await resp.json(content_type=None)
    except (ValueError, aiohttp.ClientError):
        return {}
    return data if isinstance(data, dict) else {}
