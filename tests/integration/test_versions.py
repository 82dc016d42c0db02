"""Object versions on a real 3-node cluster: boto3 and the AWS CLI against a versioned bucket
(three versions, a delete, list, get each, remove the delete marker), the native API, and
versions surviving kill -9 of a replica (every replica converges to the same versions)."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

boto3 = pytest.importorskip("boto3")
from botocore.exceptions import ClientError  # noqa: E402

from tests.integration.test_s3 import ADMIN_ID, ADMIN_SECRET, MiB, aws, client, code_of, import_key  # noqa: E402
from tests.support.processes import NodeProcess, wait_for  # noqa: E402


@pytest.fixture
def cluster(node_factory) -> list[NodeProcess]:
    nodes = node_factory(3, s3=True, fsync="never", gossip_interval=0.2, chunk_size=MiB)
    import_key(nodes[0], ADMIN_ID, ADMIN_SECRET, "admin", admin=True)
    return nodes


def native(node: NodeProcess, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(node.url + path, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            data = resp.read()
            return resp.status, json.loads(
                data
            ) if resp.headers.get_content_type() == "application/json" else data
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def versions_of(s3: Any, bucket: str, prefix: str = "") -> list[tuple[str, str, bool, bool]]:
    """(key, version id, is latest, is a delete marker) in listing order, pages of 2."""
    out: list[tuple[str, str, bool, bool, str]] = []
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": 2}
    while True:
        page = s3.list_object_versions(**kwargs)
        rows = [
            (v["Key"], v["VersionId"], v["IsLatest"], False, v["LastModified"])
            for v in page.get("Versions", [])
        ]
        rows += [
            (m["Key"], m["VersionId"], m["IsLatest"], True, m["LastModified"])
            for m in page.get("DeleteMarkers", [])
        ]
        # boto3 splits versions and markers: put them back in the server's order (key, newest first)
        out += sorted(rows, key=lambda r: (r[0], -r[4].timestamp()))
        if not page["IsTruncated"]:
            return [r[:4] for r in out]
        kwargs.update(KeyMarker=page["NextKeyMarker"], VersionIdMarker=page.get("NextVersionIdMarker", ""))


def test_boto3_versioned_bucket(cluster: list[NodeProcess]) -> None:
    s3, other = client(cluster[0]), client(cluster[1])
    s3.create_bucket(Bucket="docs")
    assert "Status" not in s3.get_bucket_versioning(Bucket="docs")
    s3.put_object(Bucket="docs", Key="a.txt", Body=b"null version")  # before versioning: "null"
    s3.put_bucket_versioning(Bucket="docs", VersioningConfiguration={"Status": "Enabled"})
    assert other.get_bucket_versioning(Bucket="docs")["Status"] == "Enabled"
    bodies = [b"first", os.urandom(3 * MiB // 2), b"third"]  # the second goes through staging
    ids = []
    for body in bodies:
        ids.append(s3.put_object(Bucket="docs", Key="a.txt", Body=body)["VersionId"])
    assert len(set(ids)) == 3 and "null" not in ids
    deleted = s3.delete_object(Bucket="docs", Key="a.txt")
    assert deleted["DeleteMarker"] is True
    marker = deleted["VersionId"]
    with pytest.raises(ClientError) as info:
        other.get_object(Bucket="docs", Key="a.txt")
    assert code_of(info.value) == "NoSuchKey"
    with pytest.raises(ClientError) as info:
        s3.head_object(Bucket="docs", Key="a.txt")
    headers = info.value.response["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-amz-delete-marker"] == "true" and headers["x-amz-version-id"] == marker
    listed = versions_of(other, "docs")
    assert listed == [
        ("a.txt", marker, True, True),
        ("a.txt", ids[2], False, False),
        ("a.txt", ids[1], False, False),
        ("a.txt", ids[0], False, False),
        ("a.txt", "null", False, False),
    ]
    for vid, body in zip(ids, bodies, strict=True):  # every version, from every node
        for node in cluster:
            got = client(node).get_object(Bucket="docs", Key="a.txt", VersionId=vid)
            assert got["Body"].read() == body and got["VersionId"] == vid
    assert (
        client(cluster[2]).get_object(Bucket="docs", Key="a.txt", VersionId="null")["Body"].read()
        == b"null version"
    )
    head = other.head_object(Bucket="docs", Key="a.txt", VersionId=ids[1])
    assert head["ContentLength"] == len(bodies[1])
    with pytest.raises(ClientError) as info:
        other.get_object(Bucket="docs", Key="a.txt", VersionId=marker)
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 405
    with pytest.raises(ClientError) as info:
        other.get_object(Bucket="docs", Key="a.txt", VersionId="0000000000001.000000.nope")
    assert code_of(info.value) == "NoSuchVersion"

    # remove the delete marker: the newest version is current again, with its own id
    removed = other.delete_object(Bucket="docs", Key="a.txt", VersionId=marker)
    assert removed["DeleteMarker"] is True and removed["VersionId"] == marker
    got = s3.get_object(Bucket="docs", Key="a.txt")
    assert got["Body"].read() == bodies[2] and got["VersionId"] == ids[2]
    assert versions_of(s3, "docs") == [
        ("a.txt", ids[2], True, False),
        ("a.txt", ids[1], False, False),
        ("a.txt", ids[0], False, False),
        ("a.txt", "null", False, False),
    ]
    # remove an old version for good; copy another one to a new key
    s3.delete_object(Bucket="docs", Key="a.txt", VersionId=ids[0])
    assert [v[1] for v in versions_of(other, "docs")] == [ids[2], ids[1], "null"]
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket="docs", Key="a.txt", VersionId=ids[0])
    assert code_of(info.value) == "NoSuchVersion"
    copied = s3.copy_object(
        Bucket="docs", Key="b.txt", CopySource={"Bucket": "docs", "Key": "a.txt", "VersionId": ids[1]}
    )
    assert copied["CopySourceVersionId"] == ids[1]
    assert other.get_object(Bucket="docs", Key="b.txt")["Body"].read() == bodies[1]
    # suspended: new writes are the "null" version, replaced by the next; kept ones stay
    s3.put_bucket_versioning(Bucket="docs", VersioningConfiguration={"Status": "Suspended"})
    s3.put_object(Bucket="docs", Key="a.txt", Body=b"s1")
    s3.put_object(Bucket="docs", Key="a.txt", Body=b"s2")
    rows = versions_of(other, "docs", prefix="a")
    assert [r[1] for r in rows] == ["null", ids[2], ids[1]]  # the new null replaced the old one
    assert s3.get_object(Bucket="docs", Key="a.txt", VersionId="null")["Body"].read() == b"s2"
    # bad input: a clear error, nothing changed
    with pytest.raises(ClientError) as info:
        s3.put_bucket_versioning(Bucket="docs", VersioningConfiguration={"Status": "Sometimes"})
    assert code_of(info.value) == "MalformedXML"
    assert s3.get_bucket_versioning(Bucket="docs")["Status"] == "Suspended"
    # a bucket with versions is not empty; boto3 empties it with DeleteObjects naming versions
    s3.delete_object(Bucket="docs", Key="a.txt")
    s3.delete_object(Bucket="docs", Key="b.txt")
    with pytest.raises(ClientError) as info:
        s3.delete_bucket(Bucket="docs")
    assert code_of(info.value) == "BucketNotEmpty"
    resource = boto3.resource(
        "s3", endpoint_url=cluster[2].s3_url, aws_access_key_id=ADMIN_ID, aws_secret_access_key=ADMIN_SECRET,
        region_name="us-east-1", config=s3.meta.config,
    )  # fmt: skip
    listed = versions_of(s3, "docs")
    answers = resource.Bucket("docs").object_versions.delete()
    deleted = sorted((d["Key"], d["VersionId"]) for a in answers for d in a.get("Deleted", []))
    assert deleted == sorted((k, v) for k, v, _, _ in listed) and not any(a.get("Errors") for a in answers)
    assert versions_of(other, "docs") == []
    s3.delete_bucket(Bucket="docs")
    s3.create_bucket(Bucket="docs")  # a new bucket of that name starts unversioned
    assert "Status" not in s3.get_bucket_versioning(Bucket="docs")
    for node in cluster:
        assert "Traceback" not in node.log_text(), node.log_tail(60)


def test_aws_cli_versioned_bucket(cluster: list[NodeProcess], tmp_path: Path) -> None:
    pytest.importorskip("awscli")
    node = cluster[1]
    aws(node, "s3", "mb", "s3://cli", cwd=tmp_path)
    enable = ["--versioning-configuration", "Status=Enabled"]
    aws(node, "s3api", "put-bucket-versioning", "--bucket", "cli", *enable, cwd=tmp_path)
    assert (
        json.loads(aws(node, "s3api", "get-bucket-versioning", "--bucket", "cli", cwd=tmp_path))["Status"]
        == "Enabled"
    )
    ids = []
    for i in range(3):
        src = tmp_path / f"v{i}"
        src.write_bytes(b"version %d" % i * (i + 1))
        out = aws(
            cluster[i],
            "s3api",
            "put-object",
            "--bucket",
            "cli",
            "--key",
            "k",
            "--body",
            str(src),
            cwd=tmp_path,
        )
        ids.append(json.loads(out)["VersionId"])
    out = json.loads(aws(node, "s3api", "delete-object", "--bucket", "cli", "--key", "k", cwd=tmp_path))
    assert out["DeleteMarker"] is True
    marker = out["VersionId"]
    listed = json.loads(aws(cluster[2], "s3api", "list-object-versions", "--bucket", "cli", cwd=tmp_path))
    assert [v["VersionId"] for v in listed["Versions"]] == ids[::-1]
    assert [(m["VersionId"], m["IsLatest"]) for m in listed["DeleteMarkers"]] == [(marker, True)]
    for i, vid in enumerate(ids):
        dest = tmp_path / f"got{i}"
        where = ["--bucket", "cli", "--key", "k", "--version-id", vid]
        aws(cluster[0], "s3api", "get-object", *where, str(dest), cwd=tmp_path)
        assert dest.read_bytes() == (tmp_path / f"v{i}").read_bytes()
    aws(node, "s3api", "delete-object", "--bucket", "cli", "--key", "k", "--version-id", marker, cwd=tmp_path)
    aws(node, "s3", "cp", "s3://cli/k", str(tmp_path / "current"), cwd=tmp_path)
    assert (tmp_path / "current").read_bytes() == (tmp_path / "v2").read_bytes()
    listed = json.loads(aws(cluster[0], "s3api", "list-object-versions", "--bucket", "cli", cwd=tmp_path))
    assert "DeleteMarkers" not in listed and listed["Versions"][0]["IsLatest"] is True


def test_native_versions_and_kill_9(cluster: list[NodeProcess]) -> None:
    """The native API on a versioned folder; a replica killed with -9 while versions are
    written and deleted holds the same versions as the others once it is back."""
    a, b, c = cluster
    assert native(a, "PUT", "/versioning/notes", json.dumps({"status": "Enabled"}).encode())[0] == 200
    status, body = native(a, "PUT", "/versioning/notes", b'{"status": "Off"}')
    assert status == 400 and "Enabled or Suspended" in body["error"]
    wait_for(
        lambda: all(native(n, "GET", "/versioning/notes")[1]["status"] == "Enabled" for n in cluster), 10
    )
    assert native(a, "PUT", "/files/notes/todo.txt", b"one")[0] == 201
    c.kill()  # kill -9: every key has all three nodes as replicas (R=3)
    for body in (b"two", b"three"):
        assert native(b, "PUT", "/files/notes/todo.txt", body)[0] == 201
    assert native(a, "DELETE", "/files/notes/todo.txt")[0] == 200
    assert native(b, "PUT", "/files/notes/todo.txt", b"four")[0] == 201
    c.restart()

    def listing(node: NodeProcess) -> list[tuple[str, bool]]:
        status, body = native(node, "GET", "/files/notes/todo.txt?versions=1")
        return [(v["version"], v["delete_marker"]) for v in body["versions"]] if status == 200 else []

    wait_for(lambda: len(listing(c)) == 5 and listing(a) == listing(b) == listing(c), 60)
    versions = listing(a)
    assert [m for _, m in versions] == [False, True, False, False, False]
    for node in cluster:  # each version's bytes, read through every node
        for (vid, marker), want in zip(versions, [b"four", None, b"three", b"two", b"one"], strict=True):
            if not marker:
                assert native(node, "GET", f"/files/notes/todo.txt?version={vid}") == (200, want)
    # restore "one": current again, with its own id; the previous current is kept
    one = versions[-1][0]
    assert native(c, "POST", f"/restore/notes/todo.txt?version={one}")[0] == 200
    assert native(a, "GET", "/files/notes/todo.txt") == (200, b"one")
    wait_for(lambda: listing(a) == listing(b) == listing(c), 30)
    assert listing(a)[0] == (one, False) and len(listing(a)) == 5
    status, body = native(a, "GET", "/files/notes/todo.txt?version=0000000000001.000000.x")
    assert status == 404 and "no version" in body["error"]
    # bad input: a clear JSON error, nothing changes
    before = listing(a)
    for method, path, data, code in [
        ("PUT", "/versioning/notes", b"not json", 400),
        ("PUT", "/versioning/.p2pstore", b'{"status": "Enabled"}', 400),
        ("POST", "/restore/notes/todo.txt", None, 400),
        ("POST", "/restore/notes/todo.txt?version=nope", None, 404),
        ("DELETE", "/files/notes/todo.txt?version=nope", None, 404),
        ("GET", "/files/notes/none.txt?versions=1", None, 404),
        ("GET", "/files/.p2pstore/versions/notes/todo.txt?versions=1", None, 403),
    ]:
        status, body = native(a, method, path, data)
        assert status == code and body["error"], (method, path, status, body)
    assert listing(a) == before and native(a, "GET", "/versioning/notes")[1]["status"] == "Enabled"
    for node in cluster:
        assert "Traceback" not in node.log_text(), node.log_tail(60)


def test_cli_versions_get_and_restore(cluster: list[NodeProcess], tmp_path: Path) -> None:
    from tests.support.processes import run_cli

    url = ["--url", cluster[0].url]
    assert run_cli("versioning", "album", "--enable", *url).returncode == 0
    wait_for(lambda: b"Enabled" in run_cli("versioning", "album", *url).stdout, 10)
    for i in range(3):
        (tmp_path / "f").write_bytes(b"take %d" % i)
        assert run_cli("put", str(tmp_path / "f"), "album/f", *url).returncode == 0
    listed = run_cli("versions", "album/f", "--json", *url)
    assert listed.returncode == 0, listed.stderr
    ids = [v["version"] for v in json.loads(listed.stdout)["versions"]]
    assert len(ids) == 3
    got = run_cli("get", "album/f", "--version", ids[2], "-o", str(tmp_path / "oldest"), *url)
    assert got.returncode == 0 and (tmp_path / "oldest").read_bytes() == b"take 0"
    done = run_cli("restore", "album/f", "--version", ids[2], *url)
    assert done.returncode == 0 and ids[2] in done.stdout.decode()
    assert run_cli("get", "album/f", *url).stdout == b"take 0"
    text = run_cli("versions", "album/f", *url).stdout.decode()
    assert text.splitlines()[0].startswith(f"* {ids[2]}")
    bad = run_cli("get", "album/f", "--version", "nope", *url)
    assert bad.returncode != 0 and b"Traceback" not in bad.stderr and bad.stderr.count(b"\n") == 1
    bad = run_cli("restore", "album/f", "--version", "nope", *url)
    assert bad.returncode != 0 and b"no version nope" in bad.stderr
