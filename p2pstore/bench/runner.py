"""The benchmark runner: HTTP throughput and latency of p2pstore nodes, PUT and GET phases at
4 KiB, 1 MiB and 64 MiB, and the 1 GiB memory check.

``p2pstore bench`` (which ``benchmarks/bench_http.py`` runs) calls :func:`run_bench` with the
BenchOptions of p2pstore/bench/options.py. ``local=N`` starts N real node processes in a temp
dir and stops them at the end; ``urls`` targets running nodes. Requests are spread round-robin
over the URLs; a GET goes through the gateway after the one its PUT used. Every downloaded byte
is checked against what was sent (its xxh3-128, as cheap as comparing bytes; the sha256 of what
was sent goes with each PUT for the node to check, and must come back as the GET's ETag); a
mismatch counts as an error. MB means 10**6 bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import os
import random
import resource
import shutil
import signal
import tempfile
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import xxhash

from ..launcher import LocalNode, NodeNotReady, free_ports, http_json, start_all, stop_all
from .client import Client, ClientError
from .options import SIZES, BenchError, BenchOptions, check_options
from .s3sign import Signer

KiB, MiB, GiB = 1024, 1024 * 1024, 1024 * 1024 * 1024
MB = 1_000_000
PIECE = MiB  # streamed bodies go in 1 MiB pieces
DISTINCT = 8  # distinct base buffers per size
HEADER = 16  # bytes at the start of every piece that make it unique (no chunk dedup)
MEM_LIMIT = 150 * MiB
# A failed request is counted and reported, never a traceback (a node may die mid-body).
REQUEST_ERRORS = (ClientError, OSError, EOFError, asyncio.LimitOverrunError, ValueError)


@dataclass(frozen=True)
class Expected:
    sha256: str
    xxh3: bytes
    md5: str = ""  # the S3 ETag of a single-part object


# ---- content: deterministic, pseudo-random, unique per object and per piece ----
class Content:
    """Deterministic object bodies: a few random base buffers, each piece stamped with its id.

    The stamp (object index, piece index, size) in the first 16 bytes of each piece keeps every
    object, and every 1 MiB piece of a large one, distinct, so content-addressed chunk dedup
    cannot flatter the figures; nothing larger than one piece is ever held in memory.
    """

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size = size
        piece = min(size, PIECE)
        rng = random.Random(f"{seed}-{size}")
        self.bases = [rng.randbytes(piece) for _ in range(DISTINCT)]

    def pieces(self, index: int) -> Iterator[bytes]:
        """Yield object ``index`` in pieces of at most 1 MiB."""
        sent, n = 0, 0
        while sent < self.size:
            base = self.bases[(index + n) % DISTINCT]
            length = min(len(base), self.size - sent)
            stamp = f"{index:08x}{n:04x}{self.size % 0xFFFF:04x}".encode()[:HEADER]
            yield stamp[:length] + memoryview(base)[len(stamp) : length]  # one copy, not two
            sent += length
            n += 1

    def digests(self, index: int) -> Expected:
        """Object ``index``'s sha256 (sent with its PUT) and xxh3-128 (what GETs check)."""
        sha, xxh, md5 = hashlib.sha256(), xxhash.xxh3_128(), hashlib.md5()
        for piece in self.pieces(index):
            sha.update(piece)
            xxh.update(piece)
            md5.update(piece)
        return Expected(sha.hexdigest(), xxh.digest(), md5.hexdigest())

    async def body(self, index: int) -> AsyncIterator[bytes]:
        for piece in self.pieces(index):
            yield piece


# ---- results ----
@dataclass
class PhaseResult:
    """One phase's figures (latencies in ms)."""

    phase: str
    ops: int
    errors: int
    seconds: float
    bytes: int
    ops_per_s: float
    mb_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    concurrency: int
    urls: list[str]
    fsync: str | None
    read_quorum: int | None = None  # replicas each GET consulted (?r=); None = the nodes' default
    nodes_peak_rss_mib: dict[str, float] = field(default_factory=dict)
    first_errors: list[str] = field(default_factory=list)
    # CPU (user + system) per request: all measured nodes together (None without their pids),
    # and this load generator. Steadier than ops/s on a machine whose speed moves.
    nodes_cpu_ms_per_op: float | None = None
    client_cpu_ms_per_op: float | None = None
    # Share of all this machine's CPUs busy during the phase (Linux /proc/stat), whoever used
    # them: near 100 % with --local, the phase was bound by CPU; well below, by something else.
    host_busy_pct: float | None = None


def quantile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank quantile; 0 for no values."""
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))]


def peak_rss_mib(pid: int) -> float | None:
    """VmHWM (peak resident set) of a process in MiB, or None when it cannot be read."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a process has used so far, or None when it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def host_cpu_times() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of all this machine's CPUs so far (idle and iowait are not
    busy), or None where /proc/stat cannot be read."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    if len(ticks) < 5:
        return None
    hz = os.sysconf("SC_CLK_TCK")
    total = sum(ticks[:8])  # guest time is already counted in user time
    return (total - ticks[3] - ticks[4]) / hz, total / hz


def busy_pct(before: tuple[float, float] | None, after: tuple[float, float] | None) -> float | None:
    if before is None or after is None or after[1] <= before[1]:
        return None
    return round((after[0] - before[0]) / (after[1] - before[1]) * 100, 1)


def own_cpu_seconds() -> float:
    """This process's user + system CPU seconds (getrusage: finer than clock ticks)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class ErrorLog:
    """Counts errors and keeps the first few messages."""

    def __init__(self) -> None:
        self.count = 0
        self.first: list[str] = []

    def add(self, message: str) -> None:
        self.count += 1
        if len(self.first) < 5:
            self.first.append(message)


# ---- requests ----
def auth_headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


async def put_one(
    session: Client,
    url: str,
    key: str,
    content: Content,
    index: int,
    sha: str,
    token: str | None,
) -> str | None:
    """Upload one object (``sha``: its sha256); None on success, else an error message."""
    headers = {
        "Content-Length": str(content.size),
        "Content-Type": "application/octet-stream",
        "X-Content-SHA256": sha,
        **auth_headers(token),
    }
    data: Any = next(content.pieces(index)) if content.size <= PIECE else content.body(index)
    async with session.put(f"{url}/files/{key}", data=data, headers=headers) as resp:
        raw = await resp.read()
        if resp.status != 201:
            return f"PUT {key}: HTTP {resp.status}: {raw[:200].decode(errors='replace')}"
        got = json.loads(raw)
        if got.get("sha256") != sha or got.get("size") != content.size:
            return f"PUT {key}: node reports sha256 {got.get('sha256')} size {got.get('size')}"
    return None


async def get_one(
    session: Client, url: str, key: str, size: int, expected: Expected, token: str | None, query: str = ""
) -> str | None:
    """Download one object and check every byte against what was sent; None on success."""
    async with session.get(f"{url}/files/{key}{query}", headers=auth_headers(token)) as resp:
        return await check_body(resp, key, size, expected, expected.sha256)


async def check_body(resp: Any, key: str, size: int, expected: Expected, etag: str) -> str | None:
    """Read a GET's answer; None when it is every byte sent, with ETag ``etag``."""
    if resp.status != 200:
        return f"GET {key}: HTTP {resp.status}: {(await resp.text())[:200]}"
    digest, got = xxhash.xxh3_128(), 0
    async for piece in resp.iter_views(PIECE):  # hashed where it was received: no copy
        digest.update(piece)
        got += len(piece)
    if got != size or digest.digest() != expected.xxh3:
        return f"GET {key}: {got} bytes, not the {size} bytes sent"
    if resp.headers.get("ETag") != f'"{etag}"':
        return f'GET {key}: ETag {resp.headers.get("ETag")!r}, expected "{etag}"'
    return None


# ---- the same requests through the S3 API ----
@dataclass
class S3Api:
    """``--api s3``: objects are ``/<bucket>/<key>`` on the S3 ports, every request SigV4-signed
    with the body's sha256 (the node checks it as the body streams, like X-Content-SHA256)."""

    signer: Signer
    bucket: str

    def path(self, key: str) -> str:
        return f"/{self.bucket}/{key}"

    async def put_one(self, session: Client, url: str, key: str, content: Content, index: int,
                      expected: Expected) -> str | None:  # fmt: skip
        path = self.path(key)
        headers = {"Content-Length": str(content.size), "Content-Type": "application/octet-stream",
                   **self.signer.headers("PUT", netloc(url), path, expected.sha256)}  # fmt: skip
        data: Any = next(content.pieces(index)) if content.size <= PIECE else content.body(index)
        async with session.put(url + path, data=data, headers=headers) as resp:
            raw = await resp.read()
            if resp.status != 200:
                return f"PUT {key}: HTTP {resp.status}: {raw[:300].decode(errors='replace')}"
            if resp.headers.get("ETag") != f'"{expected.md5}"':
                return f"PUT {key}: ETag {resp.headers.get('ETag')!r}, expected the MD5 {expected.md5}"
        return None

    async def get_one(self, session: Client, url: str, key: str, size: int, expected: Expected) -> str | None:
        path = self.path(key)
        async with session.get(url + path, headers=self.signer.headers("GET", netloc(url), path)) as resp:
            return await check_body(resp, key, size, expected, expected.md5)

    async def create_bucket(self, session: Client, url: str) -> None:
        """Create the bucket (or find it ours already); BenchError when the node refuses."""
        path = f"/{self.bucket}"
        async with session.put(
            url + path, data=b"", headers=self.signer.headers("PUT", netloc(url), path)
        ) as resp:
            raw = (await resp.read()).decode(errors="replace")
        if resp.status != 200 and "BucketAlreadyOwnedByYou" not in raw:
            raise BenchError(f"cannot create bucket {self.bucket} on {url}: HTTP {resp.status}: {raw[:300]}")


def netloc(url: str) -> str:
    """``host:port`` of a URL, as the client's Host header sends it."""
    return url.split("://", 1)[-1].split("/", 1)[0]


# ---- phases ----
class Bench:
    """Runs phases against a list of gateway URLs; remembers what was uploaded for the GETs."""

    def __init__(self, opts: BenchOptions, urls: list[str], pids: dict[str, int],
                 s3: S3Api | None = None) -> None:  # fmt: skip
        self.opts = opts
        self.s3 = s3
        self.urls = urls
        self.pids = pids
        self.run_id = uuid.uuid4().hex[:8]
        self.contents: dict[str, Content] = {}
        self.expected: dict[str, list[Expected]] = {}
        self.uploaded: dict[str, list[bool]] = {}

    def key(self, size_name: str, index: int) -> str:
        return f"bench/{self.run_id}/{size_name}/{index:06d}"

    def count(self, size_name: str) -> int:
        return self.opts.count(size_name)

    def prepare(self, size_name: str) -> None:
        """Build the base buffers and the digests of every object (not timed)."""
        if size_name in self.contents:
            return
        content = Content(SIZES[size_name])
        self.contents[size_name] = content
        self.expected[size_name] = [content.digests(i) for i in range(self.count(size_name))]
        self.uploaded[size_name] = [False] * self.count(size_name)

    async def phase(self, session: Client, name: str) -> PhaseResult:
        """Run one ``put-<size>`` or ``get-<size>`` phase with ``concurrency`` workers."""
        op, _, size_name = name.partition("-")
        if op not in ("put", "get") or size_name not in SIZES:
            raise BenchError(f"unknown phase {name!r}: use (put|get)-(4k|1m|64m)")
        self.prepare(size_name)
        content, expected = self.contents[size_name], self.expected[size_name]
        if op == "get" and not any(self.uploaded[size_name]):
            raise BenchError(f"phase {name} needs put-{size_name} before it")
        todo = list(range(len(expected))) if op == "put" else [
            i for i, ok in enumerate(self.uploaded[size_name]) if ok
        ]  # fmt: skip
        errors = ErrorLog()
        latencies: list[float] = []
        moved = 0
        cursor = iter(todo)
        n_urls = len(self.urls)
        token = self.opts.token
        query = f"?r={self.opts.read_quorum}" if self.opts.read_quorum else ""
        s3 = self.s3

        async def worker() -> None:
            nonlocal moved
            for i in cursor:
                key = self.key(size_name, i)
                t0 = time.perf_counter()
                try:
                    if s3 is not None and op == "put":
                        msg = await s3.put_one(session, self.urls[i % n_urls], key, content, i, expected[i])
                    elif s3 is not None:
                        url = self.urls[(i + 1) % n_urls]
                        msg = await s3.get_one(session, url, key, content.size, expected[i])
                    elif op == "put":
                        sha = expected[i].sha256
                        msg = await put_one(session, self.urls[i % n_urls], key, content, i, sha, token)
                    else:
                        url = self.urls[(i + 1) % n_urls]  # another gateway than the PUT's
                        msg = await get_one(session, url, key, content.size, expected[i], token, query)
                except REQUEST_ERRORS as exc:
                    msg = f"{op.upper()} {key}: {type(exc).__name__}: {exc}"
                latencies.append((time.perf_counter() - t0) * 1000)
                if msg is None:
                    moved += content.size
                    if op == "put":
                        self.uploaded[size_name][i] = True
                else:
                    errors.add(msg)

        nodes_cpu0 = [cpu_seconds(pid) for pid in self.pids.values()]
        client_cpu0 = own_cpu_seconds()
        host0 = host_cpu_times()
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(self.opts.concurrency)))
        seconds = time.perf_counter() - t0
        host_busy = busy_pct(host0, host_cpu_times())
        client_cpu = own_cpu_seconds() - client_cpu0
        nodes_cpu1 = [cpu_seconds(pid) for pid in self.pids.values()]
        latencies.sort()
        ops = len(latencies)
        rss = {url: v for url, pid in self.pids.items() if (v := peak_rss_mib(pid)) is not None}
        pairs = zip(nodes_cpu0, nodes_cpu1, strict=True)
        deltas = [b - a for a, b in pairs if a is not None and b is not None]
        nodes_cpu = sum(deltas) if deltas and len(deltas) == len(self.pids) else None  # all nodes, or none
        return PhaseResult(
            phase=name, ops=ops, errors=errors.count, seconds=round(seconds, 3), bytes=moved,
            ops_per_s=round(ops / seconds, 1), mb_per_s=round(moved / seconds / MB, 1),
            p50_ms=round(quantile(latencies, 0.5), 2), p99_ms=round(quantile(latencies, 0.99), 2),
            max_ms=round(latencies[-1] if latencies else 0.0, 2), concurrency=self.opts.concurrency,
            urls=self.urls, fsync=self.opts.fsync if self.opts.local else None,
            read_quorum=self.opts.read_quorum,
            nodes_peak_rss_mib={u: round(v, 1) for u, v in rss.items()}, first_errors=errors.first,
            nodes_cpu_ms_per_op=round(nodes_cpu / ops * 1000, 3) if nodes_cpu is not None and ops else None,
            client_cpu_ms_per_op=round(client_cpu / ops * 1000, 3) if ops else None,
            host_busy_pct=host_busy,
        )  # fmt: skip


def print_header() -> None:
    print(f"{'phase':<9} {'ops':>6} {'ops/s':>9} {'MB/s':>8} {'p50 ms':>9} {'p99 ms':>9} "
          f"{'max ms':>9} {'errors':>6} {'cpu ms/op: nodes':>16} {'client':>6} {'host busy':>9}",
          flush=True)  # fmt: skip


def print_result(r: PhaseResult) -> None:
    nodes = f"{r.nodes_cpu_ms_per_op:.2f}" if r.nodes_cpu_ms_per_op is not None else "?"
    client = f"{r.client_cpu_ms_per_op:.2f}" if r.client_cpu_ms_per_op is not None else "?"
    busy = f"{r.host_busy_pct:.0f} %" if r.host_busy_pct is not None else "?"
    print(f"{r.phase:<9} {r.ops:>6} {r.ops_per_s:>9.1f} {r.mb_per_s:>8.1f} {r.p50_ms:>9.2f} "
          f"{r.p99_ms:>9.2f} {r.max_ms:>9.2f} {r.errors:>6} {nodes:>16} {client:>6} {busy:>9}",
          flush=True)  # fmt: skip
    for msg in r.first_errors:
        print(f"    error: {msg}", flush=True)


def append_json(path: Path | None, record: dict[str, Any]) -> None:
    if path is None:
        return
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **record}
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def make_session(concurrency: int) -> Client:
    """The load generator's connections: a lean keep-alive client (see bench/client.py)."""
    return Client(limit=concurrency)


def enable_versioning(urls: list[str], token: str | None, timeout: float = 30.0) -> None:
    """Versioning on for the ``bench`` folder, seen by every node measured (not timed)."""
    body = json.dumps({"status": "Enabled"}).encode()
    headers = auth_headers(token)
    req = urllib.request.Request(f"{urls[0]}/versioning/bench", data=body, method="PUT", headers=headers)
    with urllib.request.urlopen(req, timeout=timeout):
        pass
    deadline = time.monotonic() + timeout
    for url in urls:
        while True:
            get = urllib.request.Request(f"{url}/versioning/bench", headers=auth_headers(token))
            with urllib.request.urlopen(get, timeout=timeout) as resp:
                if json.loads(resp.read())["status"] == "Enabled":
                    break
            if time.monotonic() > deadline:
                raise BenchError(f"{url} did not see versioning turned on within {timeout:.0f} s")
            time.sleep(0.05)  # polling a condition with a deadline, not timing


async def run_phases(
    opts: BenchOptions, urls: list[str], pids: dict[str, int], s3: S3Api | None = None
) -> int:
    """All requested phases; returns the total error count."""
    bench = Bench(opts, urls, pids, s3)
    total_errors = 0
    if opts.versioned:
        await asyncio.to_thread(enable_versioning, urls, opts.token)
    async with make_session(opts.concurrency) as session:
        if s3 is not None:
            await s3.create_bucket(session, urls[0])
        print_header()
        for name in opts.phases:
            result = await bench.phase(session, name)
            total_errors += result.errors
            print_result(result)
            append_json(opts.json, {"kind": "phase", **asdict(result)})
    if pids:
        print()
        for url, pid in pids.items():
            rss = peak_rss_mib(pid)
            shown = f"{rss:.1f} MiB" if rss is not None else "unknown (process gone?)"
            print(f"node {url} (pid {pid}) peak RSS (VmHWM): {shown}")
    return total_errors


async def run_mem_1g(opts: BenchOptions, url: str, pid: int | None) -> int:
    """Upload then download one 1 GiB file through one node; report the node's peak RSS."""
    content = Content(GiB, seed=1)
    print("computing the digests of the 1 GiB body ...", flush=True)
    digests = content.digests(0)
    key = f"bench/{uuid.uuid4().hex[:8]}/mem-1g"
    before = peak_rss_mib(pid) if pid else None
    errors = 0
    async with make_session(1) as session:
        for op in ("put", "get"):
            t0 = time.perf_counter()
            try:
                if op == "put":
                    msg = await put_one(session, url, key, content, 0, digests.sha256, opts.token)
                else:
                    msg = await get_one(session, url, key, GiB, digests, opts.token)
            except REQUEST_ERRORS as exc:
                msg = f"{op.upper()} {key}: {type(exc).__name__}: {exc}"
            seconds = time.perf_counter() - t0
            status = "ok" if msg is None else f"ERROR {msg}"
            print(f"{op.upper()} 1 GiB: {seconds:.1f} s, {GiB / seconds / MB:.1f} MB/s, {status}", flush=True)
            errors += msg is not None
            append_json(opts.json, {"kind": "mem-1g", "op": op, "seconds": round(seconds, 3),
                                    "mb_per_s": round(GiB / seconds / MB, 1), "error": msg})  # fmt: skip
    if pid is None:
        print("peak RSS unknown: give --pids (or use --local) to read the node's VmHWM")
        return errors
    peak = peak_rss_mib(pid)
    if peak is None:
        print(f"cannot read /proc/{pid}/status")
        return errors + 1
    verdict = "OK" if peak < MEM_LIMIT / MiB else "OVER LIMIT"
    print(f"node peak RSS (VmHWM): before {before:.1f} MiB, after 1 GiB up+down {peak:.1f} MiB "
          f"(limit {MEM_LIMIT // MiB} MiB): {verdict}")  # fmt: skip
    append_json(opts.json, {"kind": "mem-1g", "peak_rss_mib_before": before, "peak_rss_mib": peak,
                            "limit_mib": MEM_LIMIT // MiB, "ok": peak < MEM_LIMIT / MiB})  # fmt: skip
    return errors + (peak >= MEM_LIMIT / MiB)


# ---- running ----
def make_local_certs(folder: Path, n: int) -> Path:
    """A CA and node0..n-1 certificates in ``folder`` (what ``p2pstore cluster certs`` makes)."""
    from ..cluster.tls import make_cluster_certs

    make_cluster_certs(folder, n)
    return folder


def s3_api(opts: BenchOptions, nodes: list[LocalNode]) -> S3Api:
    """The S3 credentials: for local nodes a fresh admin key made through the native API, else
    --access-key/--secret-key or the AWS_* variables."""
    if nodes:
        status, body = http_json(nodes[0].url + "/s3/keys", "POST", {"name": f"bench-{uuid.uuid4().hex[:8]}",
                                 "admin": True}, token=opts.token, timeout=30)  # fmt: skip
        if status != 201 or not isinstance(body, dict):
            raise BenchError(f"cannot create an S3 key on {nodes[0].url}: HTTP {status}: {body}")
        key_id, secret = body["key_id"], body["secret"]
    else:
        key_id = opts.access_key or os.environ.get("AWS_ACCESS_KEY_ID")
        secret = opts.secret_key or os.environ.get("AWS_SECRET_ACCESS_KEY")
        if not key_id or not secret:
            raise BenchError("--api s3 with --url needs --access-key and --secret-key (or AWS_* variables)")
    return S3Api(Signer(key_id, secret, opts.region), opts.bucket)


def start_local(opts: BenchOptions, parent: Path) -> list[LocalNode]:
    """Start ``opts.local`` nodes under ``parent``; node 0 is the seed the others join through."""
    n = opts.local or 1
    replicas = opts.replicas or min(3, n)
    write_quorum = opts.write_quorum or min(2, replicas)
    flags: dict[str, Any] = {"fsync": opts.fsync, "replicas": replicas, "write_quorum": write_quorum,
                             "api_token": opts.token}  # fmt: skip
    leases = ""
    if opts.read_lease is not None:
        flags["read_lease"] = opts.read_lease
        leases += f" read-lease={opts.read_lease:g}"
    if opts.cache_written is not None:
        flags["cache_written"] = opts.cache_written
        leases += f" cache-written={opts.cache_written}"
    tls = make_local_certs(parent / "certs", n) if opts.tls else None
    security = "mutual TLS" if tls else "plain+HMAC"
    print(f"starting {n} node(s): R={replicas} W={write_quorum} fsync={opts.fsync}{leases} {security} "
          f"in {parent}", flush=True)  # fmt: skip
    s3_ports = free_ports(n) if opts.api == "s3" else None
    if s3_ports is not None:
        flags["s3_region"] = opts.region
    nodes = LocalNode.cluster(parent, n, flags, tls=tls, s3_ports=s3_ports)
    try:
        start_all(nodes, timeout=60.0, converged=True)
    except NodeNotReady as exc:
        raise BenchError(f"local nodes did not start: {exc.summary}") from exc
    except (RuntimeError, TimeoutError, OSError) as exc:
        raise BenchError(f"local nodes did not start: {exc}") from exc
    return nodes


def run_loop(coro: Any) -> Any:
    """Run ``coro`` on uvloop when it is installed (as the node does), else asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def run_bench(opts: BenchOptions) -> int:
    """Start or find the nodes, run the phases (or the 1 GiB memory check), stop local nodes.

    Returns the number of failed requests (plus 1 when ``mem_1g`` finds the node over the limit).
    Raises BenchError on bad options or a failed set-up; KeyboardInterrupt passes through, after
    the local nodes are stopped and their temp dir removed.
    """
    check_options(opts)
    nodes: list[LocalNode] = []
    tmp: Path | None = None
    try:
        if opts.local:
            if opts.data_dir:
                parent = opts.data_dir
                parent.mkdir(parents=True, exist_ok=True)
            else:
                tmp = parent = Path(tempfile.mkdtemp(prefix="p2pstore-bench-"))
            nodes = start_local(opts, parent)
            urls = [n.s3_url if opts.api == "s3" else n.url for n in nodes]
            pids = {url: n.pid for url, n in zip(urls, nodes, strict=True) if n.pid is not None}
        else:
            urls = list(opts.urls)
            pids = dict(zip(urls, opts.pids, strict=False))
        s3 = s3_api(opts, nodes) if opts.api == "s3" else None
        reads = f"r={opts.read_quorum}" if opts.read_quorum else "default reads (read leases where held)"
        reads = "quorum reads" if opts.read_lease == 0 and not opts.read_quorum else reads
        print(f"{opts.api} API at {', '.join(urls)}; concurrency {opts.concurrency}; {reads}", flush=True)
        if opts.mem_1g:
            return int(run_loop(run_mem_1g(opts, urls[0], pids.get(urls[0]))))
        return int(run_loop(run_phases(opts, urls, pids, s3)))
    finally:
        with contextlib.suppress(Exception):
            stop_all(nodes, timeout=10)
        if tmp is not None:
            if opts.keep:
                print(f"kept node data in {tmp}")
            else:
                shutil.rmtree(tmp, ignore_errors=True)


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def handle_signals() -> None:
    """Ctrl-C (even when SIGINT was inherited as ignored), SIGTERM and SIGHUP all end the run
    through KeyboardInterrupt, so run_bench's clean-up always stops the local nodes."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)


__all__ = ["Bench", "BenchError", "BenchOptions", "handle_signals", "run_bench", "run_loop"]
