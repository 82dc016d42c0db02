"""CPU per 4 KiB GET on one node: the S3 API's GetObject against the native API's GET of the
same objects, so the S3 layer's own cost per request shows in microseconds.

    python benchmarks/bench_s3_layer.py --objects 2000 --requests 2000 --rounds 15

Starts one real node process (R=1, fsync=never, an S3 port), makes an admin key and a bucket,
writes ``--objects`` 4 KiB objects through S3 (so each carries its MD5, as the bench's do), then
runs ``--rounds`` rounds; each round GETs ``--requests`` objects through the native API and the
same number through S3 (which goes first alternates), ``--connections`` keep-alive connections
in flight. The requests are built (and the S3 ones SigV4-signed, with the bench's signer) before
a round starts, and the client is a plain non-blocking socket loop in this process: what is
measured is the node's CPU, read from ``/proc/<pid>/task/*/schedstat`` (nanoseconds, every
thread) around each half-round. Every answer's status and length are checked. Prints each
round's µs per request and the medians: the S3 figure minus the native one is what the S3 layer
costs. A script that prints figures, not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import selectors
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from p2pstore.bench.s3sign import Signer  # noqa: E402
from p2pstore.launcher import LocalNode, free_ports, http_json, start_all, stop_all, wait_converged  # noqa: E402

SIZE = 4096
BUCKET = "layer"


def node_cpu_ns(pid: int) -> int:
    """CPU nanoseconds the node's live threads have run (schedstat: finer than clock ticks)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError, ValueError, IndexError):  # a thread that ended meanwhile
            total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
    return total


def node_ticks(pid: int) -> int:
    """User + system clock ticks of the whole process (dead threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])


def request_bytes(method: str, host: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    if body or method == "PUT":
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class Conn:
    """One keep-alive connection: sends a request, reads its answer (Content-Length bodies)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.buf = b""

    def answer(self) -> tuple[int, bytes] | None:
        """(status, body) once a whole answer is buffered, else None."""
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = self.buf[:end].decode("latin-1").split("\r\n")
        length = 0
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if len(self.buf) < end + 4 + length:
            return None
        body = self.buf[end + 4 : end + 4 + length]
        self.buf = self.buf[end + 4 + length :]
        return int(head[0].split()[1]), body


def run(jobs: list[tuple[int, list[bytes]]]) -> list[tuple[int, bytes]]:
    """One connection per (port, requests), each with one request in flight; the answers."""
    sel = selectors.DefaultSelector()
    conns = [(Conn(port), iter(reqs)) for port, reqs in jobs]
    total = sum(len(reqs) for _, reqs in jobs)
    answers: list[tuple[int, bytes]] = []
    try:
        for c, todo in conns:
            req = next(todo, None)
            if req is not None:
                c.sock.sendall(req)
                sel.register(c.sock, selectors.EVENT_READ, (c, todo))
        while len(answers) < total:
            for key, _ in sel.select(timeout=30):
                c, todo = key.data
                data = c.sock.recv(1 << 16)
                if not data:
                    raise ConnectionError("the node closed a connection")
                c.buf += data
                got = c.answer()
                if got is None:
                    continue
                answers.append(got)
                req = next(todo, None)
                if req is None:
                    sel.unregister(c.sock)
                else:
                    c.sock.sendall(req)
    finally:
        sel.close()
        for c, _ in conns:
            c.sock.close()
    return answers


class Target:
    """One cluster under test (the code of one checkout): its key, its bucket of objects, and
    the requests of both APIs, spread over its nodes (connection j goes to node j mod N)."""

    def __init__(self, name: str, nodes: list[LocalNode], args: argparse.Namespace) -> None:
        self.name, self.nodes, self.args = name, nodes, args
        self.pids = [n.pid for n in nodes if n.pid is not None]
        first = nodes[0]
        status, body = http_json(first.url + "/s3/keys", "POST", {"name": "layer", "admin": True}, timeout=30)
        if status != 201 or not isinstance(body, dict):
            raise SystemExit(f"cannot create a key: HTTP {status}: {body}")
        self.signer = Signer(body["key_id"], body["secret"])
        self.round = 0
        got = run([(first.s3_port, [self.signed(first, "PUT", f"/{BUCKET}")])])[0]
        if got[0] != 200:
            raise SystemExit(f"cannot create the bucket: HTTP {got[0]}: {got[1][:300]!r}")
        self.keys = [f"obj-{i:05d}" for i in range(args.objects)]
        bodies = [(f"{i:016d}".encode() * (SIZE // 16))[:SIZE] for i in range(args.objects)]
        bad = [a for a in run(self.jobs("s3", "PUT", self.keys, bodies)) if a[0] != 200]
        if bad:
            raise SystemExit(f"{len(bad)} PUTs failed: {bad[0]}")
        if len(nodes) > 1:  # every replica has every object before GETs are measured
            wait_converged(nodes, timeout=120)

    def signed(self, node: LocalNode, method: str, path: str, body: bytes = b"") -> bytes:
        host = f"127.0.0.1:{node.s3_port}"
        sha = hashlib.sha256(body).hexdigest()
        return request_bytes(method, host, path, self.signer.headers(method, host, path, sha), body)

    def one(self, api: str, node: LocalNode, method: str, key: str, body: bytes | None) -> bytes:
        if api == "s3":
            return self.signed(node, method, f"/{BUCKET}/{key}", body or b"")
        head = {"X-Content-SHA256": hashlib.sha256(body).hexdigest()} if body is not None else {}
        return request_bytes(method, f"127.0.0.1:{node.port}", f"/files/{BUCKET}/{key}", head, body or b"")

    def jobs(self, api: str, method: str, keys: list[str], bodies: list[bytes] | None = None
             ) -> list[tuple[int, list[bytes]]]:  # fmt: skip
        """Requests of ``keys`` for each connection, built and signed before a round starts."""
        out = []
        for j in range(self.args.connections):
            node = self.nodes[j % len(self.nodes)]
            port = node.s3_port if api == "s3" else node.port
            mine = range(j, len(keys), self.args.connections)
            reqs = [self.one(api, node, method, keys[i], bodies[i] if bodies else None) for i in mine]
            out.append((port, reqs))
        return out

    def half(self, api: str) -> float:
        """Nodes' CPU µs per request of one API's requests (summed over the nodes)."""
        n = self.args.requests
        if self.args.op == "put":  # new keys each round, as the bench writes them
            self.round += 1
            keys = [f"{api}-{self.round}-{i:05d}" for i in range(n)]
            bodies = [(f"{self.round:08d}{i:08d}".encode() * (SIZE // 16))[:SIZE] for i in range(n)]
            jobs, ok = self.jobs(api, "PUT", keys, bodies), (201 if api == "native" else 200)
        else:
            jobs, ok = self.jobs(api, "GET", [self.keys[i % len(self.keys)] for i in range(n)]), 200
        before = sum(node_cpu_ns(pid) for pid in self.pids)
        answers = run(jobs)
        spent = sum(node_cpu_ns(pid) for pid in self.pids) - before
        wrong = [a for a in answers if a[0] != ok or (self.args.op == "get" and len(a[1]) != SIZE)]
        if wrong:
            raise SystemExit(f"{api}: {len(wrong)} bad answers, first: {wrong[0][0]} {wrong[0][1][:300]!r}")
        return spent / n / 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--objects", type=int, default=2000)
    ap.add_argument("--requests", type=int, default=2000, help="requests per API per round")
    ap.add_argument("--op", choices=("get", "put"), default="get", help="GET the objects or PUT new ones")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--nodes", type=int, default=1, help="nodes per cluster (R=min(3,N), W=min(2,R))")
    ap.add_argument("--only", choices=("native", "s3"), help="one API only (to profile the node meanwhile)")
    ap.add_argument("--compare", type=Path, default=None,
                    help="another checkout: a second node runs its code in the same rounds")  # fmt: skip
    args = ap.parse_args()
    setups = [("this", None)]
    if args.compare:
        setups.append((args.compare.name, {"PYTHONPATH": str(args.compare.resolve())}))
    nodes: list[LocalNode] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            replicas = min(3, args.nodes)
            flags = {"fsync": "never", "replicas": replicas, "write_quorum": min(2, replicas)}
            clusters = []
            for i, (_, env) in enumerate(setups):
                cluster = LocalNode.cluster(Path(tmp), args.nodes, flags, s3_ports=free_ports(args.nodes),
                                            env=env, name=f"c{i}-node")  # fmt: skip
                nodes.extend(cluster)
                clusters.append(cluster)
                start_all(cluster, converged=True)
            measure([Target(name, c, args) for (name, _), c in zip(setups, clusters, strict=True)], args)
        finally:
            stop_all(nodes)


def measure(targets: list[Target], args: argparse.Namespace) -> None:
    apis = [args.only] if args.only else ["native", "s3"]
    halves = [(t, api) for t in targets for api in apis]
    for t, api in halves:  # warm-up: caches, connections, the registry's records
        t.half(api)
    op = args.op.upper()
    print(f"node pids {', '.join(f'{t.name} {t.pids}' for t in targets)}; {args.requests} {op}s of {SIZE} B "
          f"per API per round, {args.connections} connections; load average {os.getloadavg()[0]:.1f}",
          flush=True)  # fmt: skip
    results: dict[tuple[str, str], list[float]] = {(t.name, api): [] for t, api in halves}
    t0 = time.monotonic()
    ticks0 = [sum(node_ticks(pid) for pid in t.pids) for t in targets]
    for r in range(args.rounds):
        shift = r % len(halves)  # each half takes each place in the order in turn
        for t, api in halves[shift:] + halves[:shift]:
            results[(t.name, api)].append(t.half(api))
        shown = "  ".join(f"{name} {api} {v[-1]:6.1f}" for (name, api), v in results.items())
        print(f"round {r + 1:2d} (µs): {shown}", flush=True)
    clock = os.sysconf("SC_CLK_TCK")
    for t, ticks in zip(targets, ticks0, strict=True):
        spent = sum(sum(results[(t.name, api)]) for api in apis) * args.requests / 1e6
        now = sum(node_ticks(pid) for pid in t.pids)
        print(f"cross-check {t.name}: /proc/<pid>/stat {(now - ticks) / clock:.2f} s, "
              f"schedstat {spent:.2f} s over {time.monotonic() - t0:.1f} s")  # fmt: skip
    print(f"load average {os.getloadavg()[0]:.1f}; medians over {args.rounds} rounds, node CPU per {op}:")
    for t in targets:
        line = "  ".join(f"{api} {statistics.median(results[(t.name, api)]):.1f} µs" for api in apis)
        if not args.only:
            native, s3 = results[(t.name, "native")], results[(t.name, "s3")]
            n, s = statistics.median(native), statistics.median(s3)
            diffs = sorted(b - a for a, b in zip(native, s3, strict=True))
            line += (f"  s3 - native {statistics.median(diffs):+.1f} µs (paired, median; "
                     f"{diffs[len(diffs) // 4]:+.1f} .. {diffs[3 * len(diffs) // 4]:+.1f} quartiles)"
                     f"  s3 / native {(s / n - 1) * 100:+.0f} %")  # fmt: skip
        print(f"  {t.name}: {line}")
    this = targets[0].name
    for other in targets[1:]:
        paired = {api: [a - b for a, b in zip(results[(this, api)], results[(other.name, api)], strict=True)]
                  for api in apis}  # fmt: skip
        line = "  ".join(f"{api} {statistics.median(v):+.1f} µs" for api, v in paired.items())
        print(f"  {this} - {other.name} (paired, median): {line}")


if __name__ == "__main__":
    main()
