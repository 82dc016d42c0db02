"""Mutual TLS between nodes: a cluster whose certificates one CA signed works end to end
(writes, reads through any node, repair of a node that was down), a node holding a
certificate from another CA is refused and says so, and the public port serves no internal
request."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import aiohttp

from p2pstore.cluster.tls import make_cluster_certs
from p2pstore.launcher import http_json
from tests.support.processes import NodeProcess, start_nodes, wait_for

PERIOD = 0.2


def all_alive(nodes: list[NodeProcess]) -> None:
    def ok() -> bool:
        return all(
            sum(m["state"] == "alive" for m in n.get_json("/status")["members"]) == len(nodes) for n in nodes
        )

    wait_for(ok, 30, message="every node sees all alive")


async def test_an_mtls_cluster_writes_reads_and_repairs(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    make_cluster_certs(certs, 3)
    nodes = start_nodes(tmp_path, 3, tls=certs, fsync="never", gossip_interval=PERIOD, chunk_size="64KiB")
    try:
        all_alive(nodes)
        status = nodes[0].get_json("/status")
        assert status["security"] == {"internal": "mutual TLS", "public": "HTTP", "warning": None}
        assert all(m["address"].endswith(str(n.internal_port)) for m, n in
                   zip(sorted(status["members"], key=lambda m: m["address"]),
                       sorted(nodes, key=lambda n: f"127.0.0.1:{n.internal_port}"), strict=True))  # fmt: skip
        small, big = b"over tls" * 10, bytes(range(256)) * 4096  # one-phase and staged (1 MiB, 16 chunks)
        async with aiohttp.ClientSession() as s:
            for key, body in (("small", small), ("big", big)):
                async with s.put(f"{nodes[0].url}/files/{key}", data=body) as r:
                    assert r.status == 201, await r.text()
            for n in nodes:  # any node serves: the gateway fetches over TLS what it does not hold
                for key, body in (("small", small), ("big", big)):
                    async with s.get(f"{n.url}/files/{key}") as r:
                        assert r.status == 200 and await r.read() == body
            down = nodes[2]
            down.terminate()
            async with s.put(f"{nodes[0].url}/files/missed", data=big[::-1]) as r:
                assert r.status == 201  # W=2 of the two alive
            down.start()
            down.wait_ready(30)

            async def holds_it() -> bool:
                async with s.get(f"{down.url}/files/missed?local=1") as r:
                    return r.status == 200 and await r.read() == big[::-1]

            for _ in range(300):  # repaired by anti-entropy, over TLS, within a minute
                if await holds_it():
                    break
                await asyncio.sleep(0.2)
            assert await holds_it()
            # the public port takes no internal request, signed or not
            async with s.get(f"{nodes[0].url}/_internal/chunk/{'0' * 64}") as r:
                assert r.status == 401 and "TLS" in (await r.json())["error"]
        assert "Traceback" not in "".join(n.log_text() for n in nodes)
    finally:
        for n in nodes:
            n.terminate()


async def test_a_node_with_a_certificate_from_another_ca_is_refused(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    make_cluster_certs(ours, 2)
    make_cluster_certs(theirs, 1)
    a, b = start_nodes(tmp_path, 2, tls=ours, fsync="never", gossip_interval=PERIOD)
    flags = {"seeds": f"127.0.0.1:{a.internal_port}", "fsync": "never"}
    (intruder,) = NodeProcess.cluster(tmp_path, 1, flags, name="intruder", tls=theirs)
    try:
        intruder.start()

        def says_refused() -> bool:
            health = intruder.health()
            return bool(health and health["joined"] is False and health["join_error"])

        wait_for(says_refused, 30, message="the intruder reports that its peers refuse it")
        health = intruder.health()
        assert health is not None and "TLS" in health["join_error"], health
        code, answer = http_json(f"{intruder.url}/files")
        assert code == 503 and "not part of its cluster" in answer["error"]
        assert intruder.log_text().count("refused us (TLS)") == 1
        # a hears only that the intruder hung up on its certificate: one line a minute
        assert a.log_text().count("TLS connection from 127.0.0.1 ended during the handshake") == 1
        intruder_address = f"127.0.0.1:{intruder.internal_port}"
        assert all(m["address"] != intruder_address for m in a.get_json("/status")["members"])

        # a client that trusts our CA but holds their certificate: the handshake refuses it
        ctx = ssl.create_default_context(cafile=str(ours / "ca.pem"))
        ctx.load_cert_chain(theirs / "node0.pem", theirs / "node0-key.pem")
        refused = False
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", a.internal_port, ssl=ctx)
            writer.write(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
            refused = await asyncio.wait_for(reader.read(), 10) == b""
            writer.close()
        except (ssl.SSLError, ConnectionError):
            refused = True
        assert refused
        line = "refused a TLS connection from 127.0.0.1: CERTIFICATE_VERIFY_FAILED"
        wait_for(lambda: line in a.log_text(), 10, message="a logs the certificate it refused")
        # and one without any certificate
        bare = ssl.create_default_context(cafile=str(ours / "ca.pem"))
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", a.internal_port, ssl=bare)
            writer.write(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
            assert await asyncio.wait_for(reader.read(), 10) == b""
        except (ssl.SSLError, ConnectionError):
            pass
        assert a.health() is not None and a.health()["joined"] is True
    finally:
        for n in (a, b, intruder):
            n.terminate()


def test_a_member_back_with_another_cas_certificate_is_refused_and_both_log_it(tmp_path: Path) -> None:
    """The operator trap with certificates: b, a member, comes back with a certificate from
    another CA. It reports joined: false naming TLS; both log it once."""
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    make_cluster_certs(ours, 2)
    make_cluster_certs(theirs, 2)
    a, b = start_nodes(tmp_path, 2, tls=ours, fsync="never", gossip_interval=PERIOD)
    try:
        all_alive([a, b])
        b.terminate()
        b.args = [*b.args, "--cluster-ca", str(theirs / "ca.pem"), "--node-cert", str(theirs / "node1.pem"),
                  "--node-key", str(theirs / "node1-key.pem")]  # fmt: skip  (the last flag wins)
        b.start()

        def says_refused() -> bool:
            health = b.health()
            return bool(health and health["joined"] is False and "TLS" in (health["join_error"] or ""))

        wait_for(says_refused, 30, message="b reports that its peers refuse it (TLS)")
        # b does not trust a's certificate and hangs up in the handshake: a logs that, once a minute
        wait_for(lambda: "TLS connection from 127.0.0.1" in a.log_text(), 15, message="a logs b's failed TLS")
        assert a.log_text().count("TLS connection from 127.0.0.1") == 1
        assert b.log_text().count("refused us (TLS)") == 1
        assert "Traceback" not in a.log_text() + b.log_text()
    finally:
        a.terminate()
        b.terminate()


def test_the_public_and_s3_ports_serve_https_with_tls_cert(tmp_path: Path) -> None:
    """--tls-cert/--tls-key: the public API and the S3 port answer HTTPS (here with a node
    certificate of the cluster CA), and /status says so; node-to-node traffic is unaffected."""
    import json
    import socket
    import subprocess
    import sys
    import urllib.request

    from p2pstore.launcher import child_env, free_ports

    certs = tmp_path / "certs"
    make_cluster_certs(certs, 1)
    port, s3_port = free_ports(2)
    cmd = [sys.executable, "-m", "p2pstore", "node", "start", "--data-dir", str(tmp_path / "n"),
           "--port", str(port), "--s3-port", str(s3_port), "--fsync", "never",
           "--tls-cert", str(certs / "node0.pem"), "--tls-key", str(certs / "node0-key.pem")]  # fmt: skip
    log = (tmp_path / "n.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=child_env())
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    try:
        def status() -> dict:
            with urllib.request.urlopen(f"https://127.0.0.1:{port}/status", context=ctx, timeout=2) as r:
                return json.loads(r.read())

        body = wait_for(status, 30, message="the node answers HTTPS")
        assert body["security"]["public"] == "HTTPS" and body["url"] == f"https://127.0.0.1:{port}"
        req = urllib.request.Request(f"https://127.0.0.1:{port}/files/a", data=b"secret bytes", method="PUT")
        with urllib.request.urlopen(req, context=ctx, timeout=5) as r:
            assert r.status == 201
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/files/a", context=ctx, timeout=5) as r:
            assert r.read() == b"secret bytes"
        with (
            socket.create_connection(("127.0.0.1", s3_port), timeout=5) as raw,  # the S3 port: TLS too
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            assert tls.version() is not None
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
