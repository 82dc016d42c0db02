"""GetObject/HeadObject with ``partNumber`` through boto3 on a real cluster: an object written in
one piece is its own part 1; a multipart object's parts are the sizes its Complete recorded (206,
Content-Range, x-amz-mp-parts-count, the whole object's ETag); part numbers past the count and a
Range beside it are clear S3 errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.integration.test_s3 import ADMIN_ID, ADMIN_SECRET, MiB, client, code_of, import_key, no_tracebacks

boto3 = pytest.importorskip("boto3")
from boto3.s3.transfer import TransferConfig  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402


def test_part_number(node_factory, tmp_path: Path) -> None:
    nodes = node_factory(3, s3=True, fsync="never", gossip_interval=0.2, chunk_size=MiB)
    import_key(nodes[0], ADMIN_ID, ADMIN_SECRET, "admin", admin=True)
    s3, other = client(nodes[0]), client(nodes[1])
    s3.create_bucket(Bucket="parts")
    body = os.urandom(300_001)
    s3.put_object(Bucket="parts", Key="one.bin", Body=body)
    got = other.get_object(Bucket="parts", Key="one.bin", PartNumber=1)
    assert got["Body"].read() == body and got["ContentRange"] == f"bytes 0-{len(body) - 1}/{len(body)}"
    assert "PartsCount" not in got
    head = other.head_object(Bucket="parts", Key="one.bin", PartNumber=1)
    assert head["ContentLength"] == len(body)
    for number, code in ((2, "416"), (10_001, "InvalidArgument")):
        with pytest.raises(ClientError) as info:
            other.get_object(Bucket="parts", Key="one.bin", PartNumber=number)
        assert code in (code_of(info.value), str(info.value.response["ResponseMetadata"]["HTTPStatusCode"]))
    with pytest.raises(ClientError) as info:
        other.get_object(Bucket="parts", Key="one.bin", PartNumber=2)
    assert code_of(info.value) == "InvalidPartNumber"
    with pytest.raises(ClientError) as info:
        other.get_object(Bucket="parts", Key="one.bin", PartNumber=1, Range="bytes=0-9")
    assert code_of(info.value) == "InvalidRequest"
    big = tmp_path / "big.bin"
    data = os.urandom(11 * MiB)
    big.write_bytes(data)
    in_parts = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    s3.upload_file(str(big), "parts", "big.bin", Config=in_parts)  # parts of 5, 5 and 1 MiB
    whole = other.head_object(Bucket="parts", Key="big.bin")["ETag"]
    assert whole.endswith('-3"')
    spans = [(0, 5 * MiB), (5 * MiB, 10 * MiB), (10 * MiB, 11 * MiB)]
    for number, (start, end) in enumerate(spans, 1):
        got = other.get_object(Bucket="parts", Key="big.bin", PartNumber=number)
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
        assert got["Body"].read() == data[start:end]
        assert got["ContentRange"] == f"bytes {start}-{end - 1}/{len(data)}"
        assert got["PartsCount"] == 3 and got["ETag"] == whole
        head = client(nodes[2]).head_object(Bucket="parts", Key="big.bin", PartNumber=number)
        assert head["ContentLength"] == end - start and head["PartsCount"] == 3 and head["ETag"] == whole
    for number in (4, 10_000):
        with pytest.raises(ClientError) as info:
            other.get_object(Bucket="parts", Key="big.bin", PartNumber=number)
        assert code_of(info.value) == "InvalidPartNumber"
    # a copy is one part (S3's ETag of a copy is its MD5): part 1 is all of it
    s3.copy_object(Bucket="parts", Key="copy.bin", CopySource={"Bucket": "parts", "Key": "big.bin"})
    got = other.get_object(Bucket="parts", Key="copy.bin", PartNumber=1)
    assert got["Body"].read() == data and "PartsCount" not in got
    # uneven parts (each but the last at least 5 MiB) through the low-level calls
    sizes = [5 * MiB + 7, 6 * MiB, 5 * MiB + 7, 100]
    pieces = [os.urandom(n) for n in sizes]
    uid = s3.create_multipart_upload(Bucket="parts", Key="odd.bin")["UploadId"]
    done = [
        {"PartNumber": i, "ETag": s3.upload_part(Bucket="parts", Key="odd.bin", UploadId=uid, PartNumber=i,
                                                 Body=p)["ETag"]}
        for i, p in enumerate(pieces, 1)
    ]  # fmt: skip
    s3.complete_multipart_upload(Bucket="parts", Key="odd.bin", UploadId=uid, MultipartUpload={"Parts": done})
    for number, piece in enumerate(pieces, 1):
        got = other.get_object(Bucket="parts", Key="odd.bin", PartNumber=number)
        assert got["Body"].read() == piece and got["PartsCount"] == 4
    no_tracebacks(nodes)
