"""CPU per 4 KiB GET on one node: the S3 API's GetObject against the native API's GET of the
same objects, so the S3 layer's own cost per request shows in microseconds.

    python benchmarks/bench_s3_layer.py --objects 200 --requests 2000 --rounds 15

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
from p2pstore.launcher import LocalNode, free_ports, http_json, start_all, stop_all  # noqa: E402

SIZE = 4096
BUCKET = "layer"


def node_cpu_ns(pid: int) -> int:
    """CPU nanoseconds the node's live threads have run (schedstat: finer than clock ticks)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that ended meanwhile
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


def run(port: int, requests: list[bytes], connections: int) -> list[tuple[int, bytes]]:
    """Send ``requests`` over ``connections`` connections, one in flight on each; the answers."""
    sel = selectors.DefaultSelector()
    conns = [Conn(port) for _ in range(connections)]
    todo = iter(requests)
    answers: list[tuple[int, bytes]] = []
    try:
        for c in conns:
            req = next(todo, None)
            if req is not None:
                c.sock.sendall(req)
                sel.register(c.sock, selectors.EVENT_READ, c)
        while len(answers) < len(requests):
            for key, _ in sel.select(timeout=30):
                c = key.data
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
        for c in conns:
            c.sock.close()
    return answers


def one_request(port: int, req: bytes) -> tuple[int, bytes]:
    return run(port, [req], 1)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--objects", type=int, default=200)
    ap.add_argument("--requests", type=int, default=2000, help="GETs per API per round")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--only", choices=("native", "s3"), help="one API only (to profile the node meanwhile)")
    ap.add_argument("--repo", type=Path, default=None, help="run the node from another checkout")
    args = ap.parse_args()
    env = {"PYTHONPATH": str(args.repo.resolve())} if args.repo else None
    with tempfile.TemporaryDirectory() as tmp:
        (s3_port,) = free_ports(1)
        (node,) = LocalNode.cluster(Path(tmp), 1, {"fsync": "never", "replicas": 1, "write_quorum": 1},
                                    s3_ports=[s3_port], env=env)  # fmt: skip
        start_all([node])
        try:
            measure(node, args)
        finally:
            stop_all([node])


def measure(node: LocalNode, args: argparse.Namespace) -> None:
    pid = node.pid
    assert pid is not None
    status, body = http_json(node.url + "/s3/keys", "POST", {"name": "layer", "admin": True}, timeout=30)
    if status != 201 or not isinstance(body, dict):
        raise SystemExit(f"cannot create a key: HTTP {status}: {body}")
    signer = Signer(body["key_id"], body["secret"])
    host = f"127.0.0.1:{node.s3_port}"
    got = one_request(node.s3_port, request_bytes("PUT", host, f"/{BUCKET}", signer.headers("PUT", host, f"/{BUCKET}")))
    if got[0] != 200:
        raise SystemExit(f"cannot create the bucket: HTTP {got[0]}: {got[1][:300]!r}")
    keys = [f"obj-{i:05d}" for i in range(args.objects)]
    puts = []
    for i, key in enumerate(keys):
        data = (f"{i:016d}".encode() * (SIZE // 16))[:SIZE]
        path = f"/{BUCKET}/{key}"
        sha = hashlib.sha256(data).hexdigest()
        puts.append(request_bytes("PUT", host, path, signer.headers("PUT", host, path, sha), data))
    bad = [a for a in run(node.s3_port, puts, args.connections) if a[0] != 200]
    if bad:
        raise SystemExit(f"{len(bad)} PUTs failed: {bad[0]}")
    native_host = f"127.0.0.1:{node.port}"

    def native_requests() -> list[bytes]:
        return [request_bytes("GET", native_host, f"/files/{BUCKET}/{keys[i % len(keys)]}", {})
                for i in range(args.requests)]  # fmt: skip

    def s3_requests() -> list[bytes]:
        out = []
        for i in range(args.requests):
            path = f"/{BUCKET}/{keys[i % len(keys)]}"
            out.append(request_bytes("GET", host, path, signer.headers("GET", host, path)))
        return out

    apis = {"native": (node.port, native_requests), "s3": (node.s3_port, s3_requests)}
    if args.only:
        apis = {args.only: apis[args.only]}

    def half(api: str) -> float:
        port, build = apis[api]
        reqs = build()
        before = node_cpu_ns(pid)
        answers = run(port, reqs, args.connections)
        spent = node_cpu_ns(pid) - before
        wrong = [a for a in answers if a[0] != 200 or len(a[1]) != SIZE]
        if wrong:
            raise SystemExit(f"{api}: {len(wrong)} bad answers, first: {wrong[0][0]} {wrong[0][1][:300]!r}")
        return spent / len(reqs) / 1000

    for api in apis:  # warm-up: caches, connections, the registry's records
        half(api)
    print(f"node pid {pid}; {args.requests} GETs of {SIZE} B per API per round, {args.connections} "
          f"connections; load average {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    results: dict[str, list[float]] = {api: [] for api in apis}
    ticks0, t0 = node_ticks(pid), time.monotonic()
    for r in range(args.rounds):
        for api in list(apis) if r % 2 == 0 else reversed(apis):
            results[api].append(half(api))
        if args.only:
            print(f"round {r + 1:2d}: {args.only} {results[args.only][-1]:6.1f} µs", flush=True)
            continue
        print(f"round {r + 1:2d}: native {results['native'][-1]:6.1f} µs  s3 {results['s3'][-1]:6.1f} µs  "
              f"diff {results['s3'][-1] - results['native'][-1]:+6.1f} µs", flush=True)  # fmt: skip
    ticks = (node_ticks(pid) - ticks0) / os.sysconf("SC_CLK_TCK")
    total = sum(sum(v) for v in results.values())
    print(f"cross-check: /proc/<pid>/stat {ticks:.2f} s over {time.monotonic() - t0:.1f} s, "
          f"schedstat {total * args.requests / 1e6:.2f} s")  # fmt: skip
    if args.only:
        return
    n, s = statistics.median(results["native"]), statistics.median(results["s3"])
    diffs = sorted(b - a for a, b in zip(results["native"], results["s3"], strict=True))
    print(f"median node CPU per GET: native {n:.1f} µs, s3 {s:.1f} µs, s3 - native {statistics.median(diffs):+.1f} µs "
          f"(+{(s / n - 1) * 100:.0f} %); paired differences {diffs[0]:+.1f} .. {diffs[-1]:+.1f} µs")  # fmt: skip


if __name__ == "__main__":
    main()
