"""Folder markers (zero-byte keys ending in '/', as the AWS console and rclone's
--s3-directory-markers make) through boto3 and the AWS CLI on a real cluster: stored, listed
back under their own name (alone, under a prefix, rolled up by a delimiter, across pages), read,
deleted; the native API sees them as ``dir/.s3-folder``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_s3 import (
    ADMIN_ID,
    ADMIN_SECRET,
    MiB,
    aws,
    client,
    code_of,
    import_key,
    native,
    no_tracebacks,
)

boto3 = pytest.importorskip("boto3")
from botocore.exceptions import ClientError  # noqa: E402


def keys(s3, **kwargs) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket="fff", **kwargs)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def test_folder_markers(node_factory, tmp_path: Path) -> None:
    nodes = node_factory(3, s3=True, fsync="never", gossip_interval=0.2, chunk_size=MiB)
    import_key(nodes[0], ADMIN_ID, ADMIN_SECRET, "admin", admin=True)
    s3, other = client(nodes[0]), client(nodes[1])
    s3.create_bucket(Bucket="fff")
    s3.put_object(Bucket="fff", Key="photos/", Body=b"")
    s3.put_object(Bucket="fff", Key="photos/a.jpg", Body=b"jpeg")
    s3.put_object(Bucket="fff", Key="photos/2024/", Body=b"")
    s3.put_object(Bucket="fff", Key="zeta.txt", Body=b"z")
    assert keys(other) == ["photos/", "photos/2024/", "photos/a.jpg", "zeta.txt"]
    assert keys(other, PaginationConfig={"PageSize": 1}) == [
        "photos/",
        "photos/2024/",
        "photos/a.jpg",
        "zeta.txt",
    ]
    assert keys(other, Prefix="photos/") == ["photos/", "photos/2024/", "photos/a.jpg"]
    top = other.list_objects_v2(Bucket="fff", Delimiter="/")
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["photos/"]
    inside = other.list_objects_v2(Bucket="fff", Prefix="photos/", Delimiter="/")
    assert [o["Key"] for o in inside["Contents"]] == ["photos/", "photos/a.jpg"]
    assert [p["Prefix"] for p in inside["CommonPrefixes"]] == ["photos/2024/"]
    v1 = other.list_objects(Bucket="fff", MaxKeys=1)
    assert [o["Key"] for o in v1["Contents"]] == ["photos/"] and v1["IsTruncated"]
    after = other.list_objects(Bucket="fff", Marker="photos/")
    assert [o["Key"] for o in after["Contents"]] == ["photos/2024/", "photos/a.jpg", "zeta.txt"]
    head = other.head_object(Bucket="fff", Key="photos/")
    assert head["ContentLength"] == 0
    assert other.get_object(Bucket="fff", Key="photos/")["Body"].read() == b""
    status, listing = native(nodes[2], "GET", "/files?prefix=fff/photos/")
    assert status == 200 and "fff/photos/.s3-folder" in [e["key"] for e in listing["files"]]
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket="fff", Key="photos/.s3-folder", Body=b"")
    assert code_of(info.value) == "InvalidArgument"
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket="fff", Key="a//", Body=b"")
    assert code_of(info.value) == "InvalidArgument"

    # the AWS CLI: s3api put-object of a folder marker, ls, rm
    pytest.importorskip("awscli")
    aws(nodes[1], "s3api", "put-object", "--bucket", "fff", "--key", "docs/", cwd=tmp_path)
    listed = aws(nodes[2], "s3", "ls", "--recursive", "s3://fff/", cwd=tmp_path)
    assert " docs/\n" in listed and " photos/\n" in listed, listed
    aws(nodes[0], "s3", "rm", "s3://fff/docs/", cwd=tmp_path)
    s3.delete_object(Bucket="fff", Key="photos/")
    assert keys(other) == ["photos/2024/", "photos/a.jpg", "zeta.txt"]
    no_tracebacks(nodes)
