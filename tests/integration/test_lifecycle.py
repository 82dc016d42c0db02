"""Bucket lifecycle on a real 3-node cluster, with the clock the rules see moved 40 days ahead
(``--lifecycle-clock-offset``): exactly the versions a rule names disappear from every replica,
their chunk files are deleted from every disk (bytes measured), nothing else is touched."""

from __future__ import annotations

import hashlib
import json
import os
import urllib.request

import pytest

boto3 = pytest.importorskip("boto3")
from botocore.exceptions import ClientError  # noqa: E402

from tests.integration.test_s3 import ADMIN_ID, ADMIN_SECRET, MiB, client, code_of, import_key  # noqa: E402
from tests.support.chunks import stored_chunks  # noqa: E402
from tests.support.processes import NodeProcess, wait_for  # noqa: E402

DAY = 86400


def chunk_files(node: NodeProcess) -> dict[str, int]:
    """Chunks stored on the node's disk (chunk files and segment records): sha -> bytes."""
    return {sha: c.length for sha, c in stored_chunks(node.data_dir).items()}


def chunk_shas(body: bytes) -> set[str]:
    return {hashlib.sha256(body[i : i + MiB]).hexdigest() for i in range(0, len(body), MiB)}


def local_versions(node: NodeProcess, key: str) -> list[str]:
    with urllib.request.urlopen(f"{node.url}/files/{key}?versions=1", timeout=10) as resp:
        return [v["version"] for v in json.loads(resp.read())["versions"]]


def status(node: NodeProcess) -> dict:
    with urllib.request.urlopen(f"{node.url}/status", timeout=10) as resp:
        return json.loads(resp.read())


def test_lifecycle_removes_exactly_the_named_versions_and_frees_their_chunks(node_factory) -> None:
    nodes = node_factory(
        3, s3=True, fsync="never", gossip_interval=0.2, chunk_size=MiB, tombstone_grace=2,
        lifecycle_clock_offset=40 * DAY,
    )  # fmt: skip
    import_key(nodes[0], ADMIN_ID, ADMIN_SECRET, "admin", admin=True)
    s3 = client(nodes[0])
    bodies: dict[tuple[str, str], list[bytes]] = {}
    ids: dict[tuple[str, str], list[str]] = {}
    for bucket in ("logs", "keep"):
        s3.create_bucket(Bucket=bucket)
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    for bucket, key, n in (("logs", "a", 4), ("logs", "b", 2), ("keep", "a", 3)):
        for _ in range(n):
            body = os.urandom(3 * MiB // 2)  # two chunk files each
            vid = s3.put_object(Bucket=bucket, Key=key, Body=body)["VersionId"]
            bodies.setdefault((bucket, key), []).append(body)
            ids.setdefault((bucket, key), []).append(vid)
    wait_for(lambda: all(len(chunk_files(n)) == 18 for n in nodes), 30)  # 9 versions x 2, everywhere
    before = {n.name: chunk_files(n) for n in nodes}
    uploads = {}
    for bucket in ("logs", "keep"):  # an upload left open in each: the rule aborts only its bucket's
        uploads[bucket] = s3.create_multipart_upload(Bucket=bucket, Key="big")["UploadId"]
        s3.upload_part(Bucket=bucket, Key="big", UploadId=uploads[bucket], PartNumber=1, Body=b"p" * 1000)

    with pytest.raises(ClientError) as info:
        s3.get_bucket_lifecycle_configuration(Bucket="logs")
    assert code_of(info.value) == "NoSuchLifecycleConfiguration"
    rules = [
        {"ID": "old-versions", "Filter": {"Prefix": ""}, "Status": "Enabled",
         "NoncurrentVersionExpiration": {"NoncurrentDays": 30, "NewerNoncurrentVersions": 1}},
        {"ID": "not-yet", "Filter": {"Prefix": ""}, "Status": "Enabled", "Expiration": {"Days": 60}},
        {"ID": "elsewhere", "Filter": {"Prefix": "tmp/"}, "Status": "Enabled", "Expiration": {"Days": 1}},
        {"ID": "off", "Filter": {"Prefix": ""}, "Status": "Disabled", "Expiration": {"Days": 1}},
        {"ID": "uploads", "Filter": {"Prefix": ""}, "Status": "Enabled",
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7}},
    ]  # fmt: skip
    s3.put_bucket_lifecycle_configuration(Bucket="logs", LifecycleConfiguration={"Rules": rules})
    got = s3.get_bucket_lifecycle_configuration(Bucket="logs")["Rules"]
    assert [r["ID"] for r in got] == ["old-versions", "not-yet", "elsewhere", "off", "uploads"]
    assert got[0]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 30, "NewerNoncurrentVersions": 1}

    # logs/a: the current and the newest noncurrent stay, the two oldest go; nothing else changes
    want = {
        "logs/a": ids[("logs", "a")][:1:-1],
        "logs/b": ids[("logs", "b")][::-1],
        "keep/a": ids[("keep", "a")][::-1],
    }
    wait_for(lambda: all(local_versions(n, k) == v for n in nodes for k, v in want.items()), 60)
    gone = chunk_shas(bodies[("logs", "a")][0]) | chunk_shas(bodies[("logs", "a")][1])
    kept = set(before[nodes[0].name]) - gone
    wait_for(lambda: all(set(chunk_files(n)) == kept for n in nodes), 60)
    for n in nodes:
        freed = sum(before[n.name].values()) - sum(chunk_files(n).values())
        assert freed == 2 * (3 * MiB // 2), (n.name, freed)
        print(f"{n.name}: {freed} chunk bytes no longer stored")
    for vid, body in zip(ids[("logs", "a")][2:], bodies[("logs", "a")][2:], strict=True):
        assert client(nodes[1]).get_object(Bucket="logs", Key="a", VersionId=vid)["Body"].read() == body
    for old in ids[("logs", "a")][:2]:
        with pytest.raises(ClientError) as info:
            client(nodes[2]).get_object(Bucket="logs", Key="a", VersionId=old)
        assert code_of(info.value) == "NoSuchVersion"
    # an unversioned bucket: Expiration deletes its objects older than the rule's days (a plain delete)
    s3.create_bucket(Bucket="tmp")
    s3.put_object(Bucket="tmp", Key="old.txt", Body=b"forty days old, for the rules")
    expire = {"ID": "expire", "Filter": {"Prefix": ""}, "Status": "Enabled", "Expiration": {"Days": 30}}
    s3.put_bucket_lifecycle_configuration(Bucket="tmp", LifecycleConfiguration={"Rules": [expire]})
    wait_for(lambda: "Contents" not in client(nodes[2]).list_objects_v2(Bucket="tmp"), 30)
    assert "Versions" not in s3.list_object_versions(Bucket="tmp")
    wait_for(lambda: "Uploads" not in s3.list_multipart_uploads(Bucket="logs"), 30)
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket="keep")["Uploads"]] == [uploads["keep"]]
    # progress on the leader: /status and /metrics
    leader = next(n for n in nodes if status(n)["is_leader"])
    progress = status(leader)["lifecycle"]
    assert progress["versions_removed"] == 2 and progress["uploads_aborted"] == 1, progress
    assert progress["objects_expired"] == 1, progress
    with urllib.request.urlopen(f"{leader.url}/metrics", timeout=10) as resp:
        assert "p2pstore_lifecycle_versions_removed_total" in resp.read().decode()
    # bad input: a clear error, nothing changes
    bad = {"ID": "x", "Filter": {"Prefix": ""}, "Status": "Enabled", "Expiration": {"Days": 0}}
    with pytest.raises(ClientError) as info:
        s3.put_bucket_lifecycle_configuration(Bucket="logs", LifecycleConfiguration={"Rules": [bad]})
    assert code_of(info.value) in ("InvalidArgument", "MalformedXML")
    assert len(s3.get_bucket_lifecycle_configuration(Bucket="logs")["Rules"]) == 5
    s3.delete_bucket_lifecycle(Bucket="logs")
    with pytest.raises(ClientError) as info:
        s3.get_bucket_lifecycle_configuration(Bucket="logs")
    assert code_of(info.value) == "NoSuchLifecycleConfiguration"
    for n in nodes:
        assert "Traceback" not in n.log_text(), n.log_tail(60)
