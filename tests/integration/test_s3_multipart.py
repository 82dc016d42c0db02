"""Multipart uploads on a real 3-node cluster: boto3's transfers and the AWS CLI above their
multipart threshold through different nodes, the low-level calls with S3's error codes, and an
upload that goes on through another node after the one it started on was killed."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_s3 import (
    ADMIN_ID,
    ADMIN_SECRET,
    MiB,
    aws,
    client,
    code_of,
    import_key,
    no_tracebacks,
)
from tests.support.processes import NodeProcess, wait_for

boto3 = pytest.importorskip("boto3")
from boto3.s3.transfer import TransferConfig  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

THRESHOLD = TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB, max_concurrency=4)


@pytest.fixture
def cluster(node_factory) -> list[NodeProcess]:
    nodes = node_factory(3, s3=True, fsync="never", gossip_interval=0.2, chunk_size=MiB)
    import_key(nodes[0], ADMIN_ID, ADMIN_SECRET, "admin", admin=True)
    return nodes


def multipart_etag(parts: list[bytes]) -> str:
    joined = b"".join(hashlib.md5(p).digest() for p in parts)
    return f'"{hashlib.md5(joined).hexdigest()}-{len(parts)}"'


def test_boto3_transfers_above_the_threshold(cluster: list[NodeProcess], tmp_path: Path) -> None:
    s3 = client(cluster[0])
    s3.create_bucket(Bucket="big")
    src = tmp_path / "src.bin"
    data = os.urandom(20 * MiB + 123)
    src.write_bytes(data)
    s3.upload_file(str(src), "big", "dir/src.bin", Config=THRESHOLD)
    head = client(cluster[1]).head_object(Bucket="big", Key="dir/src.bin")
    chunks = [data[i : i + 8 * MiB] for i in range(0, len(data), 8 * MiB)]
    assert head["ContentLength"] == len(data) and head["ETag"] == multipart_etag(chunks)
    dst = tmp_path / "dst.bin"
    client(cluster[2]).download_file("big", "dir/src.bin", str(dst), Config=THRESHOLD)
    assert dst.read_bytes() == data
    ranged = client(cluster[1]).get_object(Bucket="big", Key="dir/src.bin", Range="bytes=8388600-8388700")
    assert ranged["Body"].read() == data[8388600:8388701]
    # nothing of the upload is left behind
    assert s3.list_multipart_uploads(Bucket="big").get("Uploads", []) == []
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="big")["Contents"]] == ["dir/src.bin"]
    no_tracebacks(cluster)


def test_low_level_calls_and_their_errors(cluster: list[NodeProcess]) -> None:
    s3, other = client(cluster[0]), client(cluster[1])
    s3.create_bucket(Bucket="mpu")
    s3.put_object(Bucket="mpu", Key="source.bin", Body=(source := os.urandom(6 * MiB)))
    up = s3.create_multipart_upload(Bucket="mpu", Key="obj", ContentType="text/x-test", Metadata={"a": "b"})
    uid = up["UploadId"]
    p1, p2 = os.urandom(5 * MiB), b"tail" * 100
    e1 = s3.upload_part(Bucket="mpu", Key="obj", UploadId=uid, PartNumber=1, Body=p1)["ETag"]
    e2 = other.upload_part(Bucket="mpu", Key="obj", UploadId=uid, PartNumber=3, Body=p2)["ETag"]
    source_ref = {"Bucket": "mpu", "Key": "source.bin"}
    copied = other.upload_part_copy(
        Bucket="mpu", Key="obj", UploadId=uid, PartNumber=2, CopySource=source_ref,
        CopySourceRange="bytes=0-5242879",
    )["CopyPartResult"]["ETag"]  # fmt: skip
    assert copied == f'"{hashlib.md5(source[: 5 * MiB]).hexdigest()}"'
    listed = s3.list_parts(Bucket="mpu", Key="obj", UploadId=uid)["Parts"]
    assert [(p["PartNumber"], p["Size"]) for p in listed] == [(1, 5 * MiB), (2, 5 * MiB), (3, 400)]
    uploads = other.list_multipart_uploads(Bucket="mpu")["Uploads"]
    assert [(u["Key"], u["UploadId"]) for u in uploads] == [("obj", uid)]

    def complete(parts: list[dict[str, Any]], upload_id: str = uid) -> Any:
        return s3.complete_multipart_upload(
            Bucket="mpu", Key="obj", UploadId=upload_id, MultipartUpload={"Parts": parts}
        )

    good = [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": copied}, {"PartNumber": 3, "ETag": e2}]
    for parts, code in [
        ([good[1], good[0], good[2]], "InvalidPartOrder"),
        ([good[0], {"PartNumber": 2, "ETag": '"00"'}, good[2]], "InvalidPart"),
        ([good[0], {"PartNumber": 4, "ETag": e2}], "InvalidPart"),
        ([good[2], {"PartNumber": 4, "ETag": e2}], "InvalidPart"),
    ]:
        with pytest.raises(ClientError) as info:
            complete(parts)
        assert code_of(info.value) == code
    small = s3.create_multipart_upload(Bucket="mpu", Key="small")["UploadId"]
    t1 = s3.upload_part(Bucket="mpu", Key="small", UploadId=small, PartNumber=1, Body=b"x")["ETag"]
    t2 = s3.upload_part(Bucket="mpu", Key="small", UploadId=small, PartNumber=2, Body=b"y")["ETag"]
    with pytest.raises(ClientError) as info:
        s3.complete_multipart_upload(
            Bucket="mpu", Key="small", UploadId=small,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": t1}, {"PartNumber": 2, "ETag": t2}]},
        )  # fmt: skip
    assert code_of(info.value) == "EntityTooSmall"
    s3.abort_multipart_upload(Bucket="mpu", Key="small", UploadId=small)
    with pytest.raises(ClientError) as info:
        s3.list_parts(Bucket="mpu", Key="small", UploadId=small)
    assert code_of(info.value) == "NoSuchUpload"
    with pytest.raises(ClientError) as info:
        s3.upload_part(Bucket="mpu", Key="obj", UploadId="0" * 32, PartNumber=1, Body=b"x")
    assert code_of(info.value) == "NoSuchUpload"
    with pytest.raises(ClientError) as info:
        s3.upload_part(Bucket="mpu", Key="obj", UploadId=uid, PartNumber=10_001, Body=b"x")
    assert code_of(info.value) == "InvalidArgument"

    done = client(cluster[2]).complete_multipart_upload(
        Bucket="mpu", Key="obj", UploadId=uid, MultipartUpload={"Parts": good}
    )
    assert done["ETag"] == multipart_etag([p1, source[: 5 * MiB], p2])
    got = other.get_object(Bucket="mpu", Key="obj")
    assert got["Body"].read() == p1 + source[: 5 * MiB] + p2
    assert got["ContentType"] == "text/x-test" and got["Metadata"] == {"a": "b"}
    assert got["ETag"] == done["ETag"]
    assert complete(good)["ETag"] == done["ETag"]  # a retried Complete gets the same answer
    with pytest.raises(ClientError) as info:
        s3.upload_part(Bucket="mpu", Key="obj", UploadId=uid, PartNumber=1, Body=b"late")
    assert code_of(info.value) == "NoSuchUpload"
    assert s3.list_multipart_uploads(Bucket="mpu").get("Uploads", []) == []
    no_tracebacks(cluster)


def test_upload_goes_on_through_another_node_after_a_kill(cluster: list[NodeProcess]) -> None:
    first = client(cluster[0])
    first.create_bucket(Bucket="kkk")
    uid = first.create_multipart_upload(Bucket="kkk", Key="big.bin")["UploadId"]
    parts = [os.urandom(5 * MiB), os.urandom(5 * MiB), os.urandom(1000)]
    etags = [
        first.upload_part(Bucket="kkk", Key="big.bin", UploadId=uid, PartNumber=1, Body=parts[0])["ETag"]
    ]
    cluster[0].kill()
    rest = client(cluster[1])
    for n in (2, 3):
        etags.append(
            rest.upload_part(Bucket="kkk", Key="big.bin", UploadId=uid, PartNumber=n, Body=parts[n - 1])[
                "ETag"
            ]
        )
    client(cluster[2]).complete_multipart_upload(
        Bucket="kkk", Key="big.bin", UploadId=uid,
        MultipartUpload={"Parts": [{"PartNumber": i + 1, "ETag": e} for i, e in enumerate(etags)]},
    )  # fmt: skip
    assert rest.get_object(Bucket="kkk", Key="big.bin")["Body"].read() == b"".join(parts)
    no_tracebacks(cluster[1:])


def test_aws_cli_cp_of_a_large_file(cluster: list[NodeProcess], tmp_path: Path) -> None:
    pytest.importorskip("awscli")
    big = tmp_path / "big.bin"
    big.write_bytes(data := os.urandom(17 * MiB + 5))
    aws(cluster[0], "s3", "mb", "s3://cli", cwd=tmp_path)
    aws(cluster[1], "s3", "cp", str(big), "s3://cli/big.bin", cwd=tmp_path)
    aws(cluster[2], "s3", "cp", "s3://cli/big.bin", str(tmp_path / "back.bin"), cwd=tmp_path)
    assert (tmp_path / "back.bin").read_bytes() == data
    no_tracebacks(cluster)


def test_the_leader_removes_abandoned_uploads(node_factory) -> None:
    nodes = node_factory(3, s3=True, fsync="never", gossip_interval=0.2, s3_upload_max_age=2)
    import_key(nodes[0], ADMIN_ID, ADMIN_SECRET, "admin", admin=True)
    s3 = client(nodes[1])
    s3.create_bucket(Bucket="old")
    uid = s3.create_multipart_upload(Bucket="old", Key="left.bin")["UploadId"]
    s3.upload_part(Bucket="old", Key="left.bin", UploadId=uid, PartNumber=1, Body=b"abandoned")
    assert len(s3.list_multipart_uploads(Bucket="old")["Uploads"]) == 1
    wait_for(lambda: not client(nodes[2]).list_multipart_uploads(Bucket="old").get("Uploads"), timeout=20)

    def gone() -> bool:
        try:
            s3.list_parts(Bucket="old", Key="left.bin", UploadId=uid)
        except ClientError as exc:
            return code_of(exc) == "NoSuchUpload"
        return False

    wait_for(gone, timeout=10)  # the last replica's delete may land a moment later
    assert "removed 1 multipart uploads" in "".join(n.log_text() for n in nodes)
    no_tracebacks(nodes)


def test_aws_cli_retried_through_another_node_after_a_kill(
    cluster: list[NodeProcess], tmp_path: Path
) -> None:
    pytest.importorskip("awscli")
    big = tmp_path / "big.bin"
    big.write_bytes(data := os.urandom(48 * MiB))
    aws(cluster[1], "s3", "mb", "s3://moving", cwd=tmp_path)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ADMIN_ID, "AWS_SECRET_ACCESS_KEY": ADMIN_SECRET,
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": str(tmp_path / "none"),
           "AWS_MAX_ATTEMPTS": "1"}  # fmt: skip
    first = subprocess.Popen(
        [sys.executable, "-m", "awscli", "s3", "cp", str(big), "s3://moving/big.bin",
         "--endpoint-url", cluster[0].s3_url],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(1.0)  # mid-upload (or just done: either way the retry below must succeed)
        cluster[0].kill()
        first.wait(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    aws(cluster[1], "s3", "cp", str(big), "s3://moving/big.bin", cwd=tmp_path)
    aws(cluster[2], "s3", "cp", "s3://moving/big.bin", str(tmp_path / "back.bin"), cwd=tmp_path)
    assert (tmp_path / "back.bin").read_bytes() == data
    no_tracebacks(cluster[1:])
