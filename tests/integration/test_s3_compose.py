"""Commit by reference (cluster/compose.py) on real clusters: Complete, CopyObject and
UploadPartCopy name the parts' chunks instead of re-sending them. On 3 nodes no chunk byte moves;
on 5 the final key's replicas fetch what they lack node to node. A replica killed -9 during a
compose, and a replica wiped after the parts are gone, both end up whole; chunk GC keeps chunks
a composed entry shares with deleted parts."""

from __future__ import annotations

import hashlib
import os
import threading
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from p2pstore.cluster.compose import ComposeReplica
from p2pstore.core.hlc import HybridLogicalClock, make_version
from p2pstore.core.manifest import ManifestEntry
from p2pstore.core.placement import replicas as place
from p2pstore.storage.store import LocalStore
from tests.integration.test_s3 import ADMIN_ID, ADMIN_SECRET, MiB, client, import_key, no_tracebacks
from tests.support.chunks import wipe_chunks
from tests.support.processes import NodeProcess, metric, wait_for

boto3 = pytest.importorskip("boto3")

FETCHED = "p2pstore_compose_fetched_bytes_total"


def start(node_factory, n: int) -> list[NodeProcess]:
    nodes = node_factory(n, s3=True, fsync="never", gossip_interval=0.2, chunk_size=MiB)
    import_key(nodes[0], ADMIN_ID, ADMIN_SECRET, "admin", admin=True)
    ids = [x.health()["node_id"] for x in nodes]
    wait_for(lambda: all(len(x.get_json("/status")["members"]) == n for x in nodes), 30, message="members")
    for x, node_id in zip(nodes, ids, strict=True):
        x.node_id = node_id  # type: ignore[attr-defined]
    return nodes


def upload(s3: Any, bucket: str, key: str, parts: list[bytes]) -> tuple[str, list[dict[str, Any]]]:
    uid = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    done = [
        {
            "PartNumber": i + 1,
            "ETag": s3.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=i + 1, Body=p)["ETag"],
        }
        for i, p in enumerate(parts)
    ]
    return uid, done


def md5_etag(data: bytes) -> str:
    return f'"{hashlib.md5(data).hexdigest()}"'


def multipart_etag(parts: list[bytes]) -> str:
    joined = b"".join(hashlib.md5(p).digest() for p in parts)
    return f'"{hashlib.md5(joined).hexdigest()}-{len(parts)}"'


def fetched(nodes: list[NodeProcess]) -> int:
    return sum(metric(n, FETCHED) for n in nodes if n.running)


def local_copy(node: NodeProcess, key: str) -> bytes | None:
    try:
        with urllib.request.urlopen(f"{node.url}/files/{key}?local=1", timeout=10) as r:
            return r.read()
    except Exception:
        return None


def test_three_nodes_complete_copy_and_part_copy_move_no_chunk_bytes(node_factory) -> None:
    nodes = start(node_factory, 3)
    s3 = client(nodes[0])
    s3.create_bucket(Bucket="cmp")
    # uneven parts: each ends with a short chunk; the last is tiny (kept inline with its part)
    parts = [os.urandom(5 * MiB + 1234), os.urandom(6 * MiB + 7), os.urandom(1000)]
    data = b"".join(parts)
    uid, done = upload(s3, "cmp", "obj", parts)
    client(nodes[1]).complete_multipart_upload(
        Bucket="cmp", Key="obj", UploadId=uid, MultipartUpload={"Parts": done}
    )
    for n in nodes:
        got = client(n).get_object(Bucket="cmp", Key="obj")
        assert got["Body"].read() == data and got["ETag"] == multipart_etag(parts)
    span = client(nodes[2]).get_object(Bucket="cmp", Key="obj", Range=f"bytes={5 * MiB}-{5 * MiB + 5000}")
    assert span["Body"].read() == data[5 * MiB : 5 * MiB + 5001]  # across the first part's end

    s3.copy_object(Bucket="cmp", Key="copy", CopySource={"Bucket": "cmp", "Key": "obj"})
    got = client(nodes[2]).get_object(Bucket="cmp", Key="copy")
    assert got["Body"].read() == data and got["ETag"] == md5_etag(data)  # a copy is not multipart

    uid2 = s3.create_multipart_upload(Bucket="cmp", Key="pc")["UploadId"]
    aligned = s3.upload_part_copy(Bucket="cmp", Key="pc", UploadId=uid2, PartNumber=1, CopySource="cmp/obj",
                                  CopySourceRange=f"bytes=0-{5 * MiB - 1}")  # fmt: skip
    odd = s3.upload_part_copy(Bucket="cmp", Key="pc", UploadId=uid2, PartNumber=2, CopySource="cmp/obj",
                              CopySourceRange=f"bytes=100-{6 * MiB}")  # fmt: skip
    assert aligned["CopyPartResult"]["ETag"] == md5_etag(data[: 5 * MiB])
    assert odd["CopyPartResult"]["ETag"] == md5_etag(data[100 : 6 * MiB + 1])
    s3.complete_multipart_upload(
        Bucket="cmp", Key="pc", UploadId=uid2,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": aligned["CopyPartResult"]["ETag"]},
                                   {"PartNumber": 2, "ETag": odd["CopyPartResult"]["ETag"]}]},
    )  # fmt: skip
    assert (
        client(nodes[1]).get_object(Bucket="cmp", Key="pc")["Body"].read()
        == data[: 5 * MiB] + data[100 : 6 * MiB + 1]
    )
    assert fetched(nodes) == 0  # every node replicates every key: no chunk byte moved
    # by reference: both Completes, the copy and the aligned part copy (the odd range streamed)
    assert sum(metric(n, "p2pstore_composed_objects_total") for n in nodes) == 4
    no_tracebacks(nodes)


def test_five_nodes_fetch_node_to_node_and_heal_after_the_parts_are_gone(node_factory) -> None:
    nodes = start(node_factory, 5)
    ids = [n.node_id for n in nodes]  # type: ignore[attr-defined]
    s3 = client(nodes[0])
    s3.create_bucket(Bucket="fiv")
    parts = [os.urandom(5 * MiB + 3), os.urandom(5 * MiB + 77), os.urandom(2 * MiB + 1)]
    data = b"".join(parts)
    key = next(f"o{i}" for i in range(100) if nodes[0].node_id not in place(f"fiv/o{i}", ids, 3))  # type: ignore[attr-defined]
    uid, done = upload(s3, "fiv", key, parts)
    part_sets = [set(place(f".p2pstore/s3/uploads/fiv/{uid}/part-{i:05d}", ids, 3)) for i in (1, 2, 3)]
    final = place(f"fiv/{key}", ids, 3)
    s3.complete_multipart_upload(Bucket="fiv", Key=key, UploadId=uid, MultipartUpload={"Parts": done})
    assert metric(nodes[0], "p2pstore_composed_objects_total") == 1
    if any(not set(final) <= ps for ps in part_sets):
        assert fetched(nodes) > 0  # some final replica lacked a part's chunks and fetched them
    for n in nodes:
        assert client(n).get_object(Bucket="fiv", Key=key)["Body"].read() == data
    # the parts are gone; wipe one final replica's chunks: repair heals it from the others
    victim = next(n for n in nodes if n.node_id == final[0])  # type: ignore[attr-defined]
    wait_for(lambda: local_copy(victim, f"fiv/{key}") == data, 30, message="victim holds the object")
    victim.kill()
    assert wipe_chunks(victim.data_dir) > 0  # chunk files and segment records alike
    victim.start()
    victim.wait_ready()
    wait_for(lambda: local_copy(victim, f"fiv/{key}") == data, 60, message="wiped replica repaired")
    no_tracebacks([n for n in nodes if n is not victim])


def test_a_replica_killed_during_compose(node_factory) -> None:
    nodes = start(node_factory, 5)
    ids = [n.node_id for n in nodes]  # type: ignore[attr-defined]
    s3 = client(nodes[0])
    s3.create_bucket(Bucket="kil")
    key = next(f"o{i}" for i in range(100) if nodes[0].node_id not in place(f"kil/o{i}", ids, 3))  # type: ignore[attr-defined]
    parts = [os.urandom(8 * MiB + 5), os.urandom(8 * MiB + 9), os.urandom(3 * MiB)]
    data = b"".join(parts)
    uid, done = upload(s3, "kil", key, parts)
    final = place(f"kil/{key}", ids, 3)
    victim = next(n for n in nodes if n.node_id == final[-1])  # type: ignore[attr-defined]
    victim.pause()  # frozen with the prepare request on its socket: then killed -9 mid-compose
    result: dict[str, Any] = {}

    def complete() -> None:
        try:
            result["ok"] = s3.complete_multipart_upload(
                Bucket="kil", Key=key, UploadId=uid, MultipartUpload={"Parts": done}
            )
        except Exception as exc:  # reported below
            result["error"] = exc

    t = threading.Thread(target=complete)
    t.start()
    others = [n for n in nodes if n.node_id in final and n is not victim]  # type: ignore[attr-defined]

    def others_prepared() -> bool:
        return all(
            metric(n, "p2pstore_requests_total", 'method="RPC compose-prepare",status="2xx"') for n in others
        )

    wait_for(others_prepared, 60, message="the live final replicas gathered the chunks")
    victim.kill()  # the compose is waiting for it
    t.join(120)
    assert "ok" in result, result.get("error")
    assert metric(nodes[0], "p2pstore_composed_objects_total") == 1
    live = [n for n in nodes if n is not victim]
    for n in live:
        assert client(n).get_object(Bucket="kil", Key=key)["Body"].read() == data
    victim.start()
    victim.wait_ready()
    wait_for(lambda: local_copy(victim, f"kil/{key}") == data, 60, message="killed replica healed")
    no_tracebacks(live)


async def one_piece(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_gc_keeps_chunks_a_composed_entry_shares_with_deleted_parts(tmp_path: Path) -> None:
    store = LocalStore(tmp_path, chunk_size=MiB, fsync="never")
    try:
        parts = [os.urandom(MiB + 10), os.urandom(300)]
        entries = []
        for i, body in enumerate(parts):
            blob = await store.write_stream(one_piece(body))
            e = ManifestEntry(f"part{i}", make_version(1000, 0, "n1"), blob.size, blob.sha256 or "",
                              tuple(blob.chunks), "x", False, time.time())  # fmt: skip
            assert await store.commit(blob, e)
            entries.append(e)
        chunks = [c for e in entries for c in e.chunks]
        lengths = [MiB, 10, 300]
        clock = HybridLogicalClock("n1")
        composer = ComposeReplica("n1", store, None, MiB, clock)  # type: ignore[arg-type]  # nothing to fetch
        answer = await composer.prepare(chunks, lengths, {}, want_hash=True)
        assert answer["fetched"] == 0 and answer["sha256"] == hashlib.sha256(b"".join(parts)).hexdigest()
        whole = ManifestEntry("obj", make_version(2000, 0, "n1"), sum(lengths), answer["sha256"],
                              tuple(chunks), "x", False, time.time(), lengths=tuple(lengths))  # fmt: skip
        assert await composer.commit(whole)
        assert clock.now(0) > whole.version  # the replica's clock moved past the composed version
        await store.apply_entries([ManifestEntry.tombstone(e.key, make_version(3000, 0, "n1"), time.time())
                                   for e in entries])  # fmt: skip
        old = time.time() - 3600
        for sha in entries[0].chunks:
            assert store.chunks.touch(sha, old)
        await store.collect_garbage(60)
        await store.collect_garbage(60, full=True)
        assert store.has_all_chunks(whole)  # the small last part lost its row but not its bytes
        got = b"".join([await store.read_chunk(c) for c in chunks])
        assert got == b"".join(parts)
        await store.apply_entries([ManifestEntry.tombstone("obj", make_version(4000, 0, "n1"), time.time())])
        for sha in entries[0].chunks:
            assert store.chunks.touch(sha, old)
        assert await store.collect_garbage(60, full=True) >= 1  # unreferenced at last: freed
        assert not store.chunks.has(entries[0].chunks[0])
    finally:
        store.close()


async def test_bad_compose_messages_are_refused_and_change_nothing(node_factory) -> None:
    import aiohttp
    import msgpack

    from tests.support.http import peer_headers

    secret = "compose-secret"
    n = node_factory(1, fsync="never", cluster_secret=secret)[0]
    missing = hashlib.sha256(b"a chunk nobody holds").hexdigest()
    other = hashlib.sha256(b"another one").hexdigest()
    version = make_version(int(time.time() * 1000), 0, "x")
    entry = ManifestEntry("nope/obj", version, 30, "a" * 64, (missing, other), "x", False, time.time(),
                          lengths=(10, 20)).to_wire()  # fmt: skip
    cases = [
        ("compose-prepare", [1, 2], 400),
        ("compose-prepare", {"chunks": [missing], "lengths": [0], "holders": {}}, 400),
        ("compose-prepare", {"chunks": [missing], "lengths": [5], "holders": {missing: "x"}}, 400),
        ("compose-prepare", {"chunks": [missing], "lengths": [5], "holders": {missing: ["ghost"]}}, 503),
        ("compose-commit", {"entry": {"key": ""}}, 400),
        ("compose-commit", {"entry": entry}, 503),  # names chunks this node does not hold
    ]
    async with aiohttp.ClientSession() as s:
        for method, msg, status in cases:
            url, body = f"{n.url}/_internal/{method}", msgpack.packb(msg)
            async with s.post(url, data=body, headers=peer_headers(secret, url, body=body)) as r:
                assert r.status == status, (method, msg, await r.text())
                assert "error" in await r.json()
        async with s.get(f"{n.url}/files/nope/obj") as r:
            assert r.status == 404  # nothing was committed
    assert n.health() is not None
