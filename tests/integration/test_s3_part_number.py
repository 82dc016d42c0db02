"""GetObject/HeadObject with ``partNumber`` through boto3 on a real cluster: an object written in
one piece is its own part 1; other part numbers, a Range beside it and multipart objects (whose
part boundaries are not kept) are clear S3 errors."""

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
    big.write_bytes(os.urandom(11 * MiB))
    in_parts = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    s3.upload_file(str(big), "parts", "big.bin", Config=in_parts)
    with pytest.raises(ClientError) as info:
        other.get_object(Bucket="parts", Key="big.bin", PartNumber=1)
    assert code_of(info.value) == "NotImplemented"
    no_tracebacks(nodes)
