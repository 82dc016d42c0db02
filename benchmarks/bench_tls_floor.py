"""The least CPU that TLS on an asyncio (or uvloop) stream can cost, without any network.

    python benchmarks/bench_tls_floor.py --mib 1024

asyncio and uvloop do TLS with an ``ssl.SSLObject`` between two memory BIOs: the sender
encrypts into the outgoing BIO and reads the records out, the receiver writes what the socket
gave into the incoming BIO and reads the plaintext out record by record. This script does
exactly that and nothing else (no sockets, no HTTP, no event loop) with the nodes' own mutual-TLS
contexts (tls.py), and next to it the AEAD cipher alone on 16 KiB records (``cryptography``).
Prints CPU seconds per GiB: what a node pays per byte it sends to, or receives from, a peer over
mutual TLS, at best. The difference between the two rows is what the memory BIOs and the
per-record calls add to the cipher.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import ssl
import tempfile
from pathlib import Path

from p2pstore.cluster.tls import client_context, make_cluster_certs, server_context

RECORD = 16 * 1024


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def connected(certs: Path) -> tuple[ssl.SSLObject, ssl.MemoryBIO, ssl.SSLObject, ssl.MemoryBIO]:
    """A client and a server SSLObject after the mutual-TLS handshake, over memory BIOs."""
    sctx = server_context(f"{certs}/ca.pem", f"{certs}/node0.pem", f"{certs}/node0-key.pem")
    cctx = client_context(f"{certs}/ca.pem", f"{certs}/node1.pem", f"{certs}/node1-key.pem")
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = cctx.wrap_bio(c_in, c_out, server_hostname="127.0.0.1")
    server = sctx.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for end in (client, server):
            with contextlib.suppress(ssl.SSLWantReadError):
                end.do_handshake()
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    client.write(b"x")  # TLS 1.3: the server's session tickets reach the client with its first read
    s_in.write(c_out.read())
    assert server.read(1) == b"x", "handshake did not complete"
    return client, c_out, server, s_in


def tls_stream(certs: Path, mib: int, piece: int) -> tuple[str, float, float]:
    """(cipher, encrypt s/GiB, decrypt s/GiB) for ``mib`` MiB written ``piece`` bytes at a time."""
    client, c_out, server, s_in = connected(certs)
    data = os.urandom(piece)
    enc = dec = 0.0
    received = 0
    for _ in range(mib * 1024 * 1024 // piece):
        t = cpu()
        client.write(data)
        wire = c_out.read()
        enc += cpu() - t
        t = cpu()
        s_in.write(wire)
        while True:  # as uvloop does: read until the BIO has no whole record left
            try:
                plain = server.read(256 * 1024)
            except ssl.SSLWantReadError:
                break
            received += len(plain)
        dec += cpu() - t
    assert received == mib * 1024 * 1024 // piece * piece, "bytes lost"
    gib = mib / 1024
    return client.cipher()[0], enc / gib, dec / gib  # type: ignore[index]


def aead_alone(mib: int) -> tuple[float, float]:
    """(encrypt, decrypt) s/GiB of AES-256-GCM alone on 16 KiB records."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead = AESGCM(AESGCM.generate_key(bit_length=256))
    record = os.urandom(RECORD)
    nonce = os.urandom(12)
    n = mib * 1024 * 1024 // RECORD
    t = cpu()
    for _ in range(n):
        sealed = aead.encrypt(nonce, record, None)
    enc = cpu() - t
    t = cpu()
    for _ in range(n):
        aead.decrypt(nonce, sealed, None)
    dec = cpu() - t
    gib = mib / 1024
    return enc / gib, dec / gib


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=1024, help="bytes per measurement")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        certs = Path(tmp) / "certs"
        make_cluster_certs(certs, 2)
        print("| what | encrypt (sender) s/GiB | decrypt (receiver) s/GiB |\n| --- | --- | --- |")
        enc, dec = aead_alone(args.mib)
        print(f"| AES-256-GCM alone, 16 KiB records | {enc:.2f} | {dec:.2f} |")
        for piece in (256 * 1024, 1024 * 1024):
            cipher, enc, dec = tls_stream(certs, args.mib, piece)
            what = f"SSLObject + memory BIOs ({cipher}), {piece // 1024} KiB writes"
            print(f"| {what} | {enc:.2f} | {dec:.2f} |")


if __name__ == "__main__":
    main()
