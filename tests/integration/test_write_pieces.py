"""One-phase writes (up to 1 MiB) travel in the pieces they arrived in, never joined: whatever
the pieces (a chunked upload of tiny chunks, an announced length sent in odd sizes, an empty
body asked many times), every replica stores exactly the bytes sent."""

from __future__ import annotations

import hashlib
import http.client
import random
import urllib.error
import urllib.parse
import urllib.request

import pytest

from tests.integration.test_replication import wait_members
from tests.support.processes import NodeProcess, wait_for

MiB = 1 << 20


def put_in_pieces(node: NodeProcess, key: str, pieces: list[bytes], chunked: bool) -> int:
    """PUT a body sent piece by piece: as HTTP chunks, or under one Content-Length."""
    url = urllib.parse.urlsplit(node.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        conn.putrequest("PUT", f"/files/{key}")
        if chunked:
            conn.putheader("Transfer-Encoding", "chunked")
        else:
            conn.putheader("Content-Length", str(sum(len(p) for p in pieces)))
        conn.endheaders()
        for piece in pieces:
            conn.send(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
        if chunked:
            conn.send(b"0\r\n\r\n")
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def local_copy(node: NodeProcess, key: str) -> bytes | None:
    try:
        with urllib.request.urlopen(f"{node.url}/files/{key}?local=1", timeout=30) as resp:
            return resp.read()
    except urllib.error.HTTPError as exc:
        exc.read()
        return None


@pytest.mark.parametrize("chunked", [False, True])
def test_every_replica_stores_the_bytes_sent_in_pieces(node_factory, chunked: bool) -> None:
    nodes = node_factory(3, fsync="always")
    wait_members(nodes)
    rng = random.Random(7)
    for size in (MiB, 700_000, 200_000):  # all one-phase: raw HTTP bodies to the peers
        data = rng.randbytes(size)
        pieces, at = [], 0
        while at < size:  # 1 byte to 20 KiB: hundreds of reads and pieces
            n = rng.randint(1, 20_000)
            pieces.append(data[at : at + n])
            at += n
        key = f"p{size}-{chunked}"
        assert put_in_pieces(nodes[size % 3], key, pieces, chunked) == 201
        for node in nodes:  # W=2 acknowledged; the third copy lands right after
            wait_for(lambda n=node, k=key: local_copy(n, k) is not None, 20, message=f"{key} on {node.url}")
            copy = local_copy(node, key)
            assert copy is not None and hashlib.sha256(copy).digest() == hashlib.sha256(data).digest()


def test_empty_bodies_are_answered_every_time(node_factory) -> None:
    """aiohttp hands every empty body the same shared reader, which reports a chunk end (not
    the end) after its first use: reading it must still end, for every request."""
    [node] = node_factory(1, fsync="never")
    for i in range(4):
        req = urllib.request.Request(f"{node.url}/files/e", data=b"", method="PUT")
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 201, i
        assert local_copy(node, "e") == b""
