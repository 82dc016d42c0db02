"""Versions meet commit by reference, on a real 3-node cluster: restoring a large version (native
API, S3 CopyObject of a version onto its key) composes the version's own chunks (no chunk byte
moves, every replica holds the same bytes, the restored version keeps its id), a small one is
streamed from its row; and a CompleteMultipartUpload or CopyObject into a versioned bucket keeps
the object it replaces as a version."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from tests.integration.test_s3 import MiB, client, no_tracebacks
from tests.integration.test_s3_compose import fetched, local_copy, md5_etag, multipart_etag, start, upload
from tests.integration.test_versions import native, versions_of
from tests.support.processes import NodeProcess, metric, wait_for

boto3 = pytest.importorskip("boto3")

COMPOSED = "p2pstore_composed_objects_total"


def composed(nodes: list[NodeProcess]) -> int:
    return sum(metric(n, COMPOSED) for n in nodes)


def on_every_node(nodes: list[NodeProcess], key: str, want: bytes) -> None:
    """Each node's own copy (``?local=1``: no peer asked) is ``want``, once the late commit lands."""
    wait_for(lambda: all(local_copy(n, key) == want for n in nodes), 30, message=f"{key} on every node")


def versioned(nodes: list[NodeProcess], bucket: str) -> None:
    """Create ``bucket`` with versioning Enabled, as every node's manifest reads it."""
    s3 = client(nodes[0])
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    path = f"/versioning/{bucket}"
    wait_for(lambda: all(native(n, "GET", path)[1].get("status") == "Enabled" for n in nodes), 10)


def test_restore_of_a_large_version_moves_no_chunk_bytes(node_factory) -> None:
    nodes = start(node_factory, 3)
    s3, other = client(nodes[0]), client(nodes[2])
    versioned(nodes, "ver")
    big, small = os.urandom(5 * MiB + 321), b"a small newer version"
    v1 = s3.put_object(Bucket="ver", Key="big.bin", Body=big)["VersionId"]
    v2 = s3.put_object(Bucket="ver", Key="big.bin", Body=small)["VersionId"]
    before = composed(nodes)

    assert native(nodes[1], "POST", f"/restore/ver/big.bin?version={v1}")[0] == 200
    assert composed(nodes) == before + 1  # a commit by reference, not a stream
    assert fetched(nodes) == 0  # every node already holds the version's chunks
    on_every_node(nodes, "ver/big.bin", big)
    wait_for(lambda: len(versions_of(other, "ver")) == 2, 30, message="two versions listed")
    assert versions_of(other, "ver") == [("big.bin", v1, True, False), ("big.bin", v2, False, False)]
    head = other.head_object(Bucket="ver", Key="big.bin")
    assert head["VersionId"] == v1 and head["ETag"] == md5_etag(big)  # the id and the ETag kept
    assert other.get_object(Bucket="ver", Key="big.bin", VersionId=v2)["Body"].read() == small

    # a small version lives in its row: restored by streaming it (no compose), same id
    assert native(nodes[0], "POST", f"/restore/ver/big.bin?version={v2}")[0] == 200
    assert composed(nodes) == before + 1
    on_every_node(nodes, "ver/big.bin", small)
    assert other.head_object(Bucket="ver", Key="big.bin")["VersionId"] == v2

    # S3's restore: CopyObject of a version onto its own key (a new version id), by reference
    copied = other.copy_object(
        Bucket="ver", Key="big.bin", CopySource={"Bucket": "ver", "Key": "big.bin", "VersionId": v1}
    )
    v3 = copied["VersionId"]
    assert copied["CopySourceVersionId"] == v1 and v3 not in (v1, v2)
    assert composed(nodes) == before + 2 and fetched(nodes) == 0
    on_every_node(nodes, "ver/big.bin", big)
    wait_for(lambda: len(versions_of(s3, "ver")) == 3, 30, message="three versions listed")
    assert [(vid, latest) for _, vid, latest, _ in versions_of(s3, "ver")] == [
        (v3, True),
        (v2, False),
        (v1, False),
    ]
    for vid, want in ((v3, big), (v2, small), (v1, big)):
        for n in nodes:
            body = client(n).get_object(Bucket="ver", Key="big.bin", VersionId=vid)["Body"].read()
            assert hashlib.sha256(body).digest() == hashlib.sha256(want).digest()
    no_tracebacks(nodes)


def test_complete_and_copy_into_a_versioned_bucket_keep_the_previous_object(node_factory) -> None:
    nodes = start(node_factory, 3)
    s3, other = client(nodes[0]), client(nodes[1])
    versioned(nodes, "keep")
    first = b"the first, put in one piece"
    v1 = s3.put_object(Bucket="keep", Key="obj", Body=first)["VersionId"]
    parts = [os.urandom(5 * MiB), os.urandom(MiB + 5)]
    uid, done = upload(s3, "keep", "obj", parts)
    v2 = other.complete_multipart_upload(
        Bucket="keep", Key="obj", UploadId=uid, MultipartUpload={"Parts": done}
    )["VersionId"]
    assert v2 != v1
    listed = versions_of(client(nodes[2]), "keep")
    assert listed == [("obj", v2, True, False), ("obj", v1, False, False)]
    got = client(nodes[2]).get_object(Bucket="keep", Key="obj", VersionId=v1)
    assert got["Body"].read() == first and got["ETag"] == md5_etag(first)
    got = client(nodes[2]).get_object(Bucket="keep", Key="obj", VersionId=v2)
    assert got["Body"].read() == b"".join(parts) and got["ETag"] == multipart_etag(parts)
    # partNumber works on the kept multipart version too
    assert other.get_object(Bucket="keep", Key="obj", VersionId=v2, PartNumber=2)["Body"].read() == parts[1]

    source = os.urandom(2 * MiB + 9)  # large enough for a commit by reference
    s3.put_object(Bucket="keep", Key="src", Body=source)
    before = composed(nodes)
    v3 = other.copy_object(Bucket="keep", Key="obj", CopySource={"Bucket": "keep", "Key": "src"})["VersionId"]
    assert composed(nodes) == before + 1
    listed = [r for r in versions_of(s3, "keep") if r[0] == "obj"]
    assert [(vid, latest) for _, vid, latest, _ in listed] == [(v3, True), (v2, False), (v1, False)]
    for vid, want in ((v3, source), (v2, b"".join(parts)), (v1, first)):
        assert client(nodes[2]).get_object(Bucket="keep", Key="obj", VersionId=vid)["Body"].read() == want
    assert fetched(nodes) == 0
    no_tracebacks(nodes)


def test_cli_restore_of_a_large_version_is_by_reference(node_factory, tmp_path) -> None:
    """``p2pstore restore`` (the native endpoint) of a 2 MiB version put with the CLI."""
    from tests.support.processes import run_cli

    nodes = start(node_factory, 3)
    url = ["--url", nodes[1].url]
    assert run_cli("versioning", "album", "--enable", *url).returncode == 0
    wait_for(
        lambda: all(native(n, "GET", "/versioning/album")[1].get("status") == "Enabled" for n in nodes), 10
    )
    takes = [os.urandom(2 * MiB + 1), b"a small take"]
    for take in takes:
        (tmp_path / "f").write_bytes(take)
        assert run_cli("put", str(tmp_path / "f"), "album/f", *url).returncode == 0
    listed = run_cli("versions", "album/f", "--json", *url)
    assert listed.returncode == 0, listed.stderr
    ids = [v["version"] for v in json.loads(listed.stdout)["versions"]]
    assert len(ids) == 2
    before = composed(nodes)
    done = run_cli("restore", "album/f", "--version", ids[1], *url)
    assert done.returncode == 0 and ids[1] in done.stdout.decode()
    assert composed(nodes) == before + 1 and fetched(nodes) == 0
    on_every_node(nodes, "album/f", takes[0])
    relisted = json.loads(run_cli("versions", "album/f", "--json", *url).stdout)["versions"]
    assert [(v["version"], v["latest"]) for v in relisted] == [(ids[1], True), (ids[0], False)]
    no_tracebacks(nodes)
