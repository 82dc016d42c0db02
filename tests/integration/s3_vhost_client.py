"""boto3 in virtual-host style, as a user's program would run it: run by test_s3_vhost.py with
``<bucket>.localhost`` resolving to 127.0.0.1 (tests/support/vhosts.py). Asserts as it goes and
prints a JSON summary the test checks.

Usage: python s3_vhost_client.py ENDPOINT ACCESS_KEY_ID SECRET WORK_DIR
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

MiB = 1 << 20


def main(endpoint: str, key_id: str, secret: str, work: Path) -> None:
    s3 = boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=key_id, aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "virtual"},
                      retries={"max_attempts": 1}),
    )  # fmt: skip
    hosts: set[str] = set()

    def record(request: object, **_: object) -> None:
        hosts.add(urllib.parse.urlsplit(request.url).netloc)  # type: ignore[attr-defined]

    s3.meta.events.register("before-send", record)

    s3.create_bucket(Bucket="photos")
    s3.create_bucket(Bucket="my.photos")
    body = os.urandom(100_000)
    put = s3.put_object(Bucket="photos", Key="dir/a.txt", Body=body)
    assert put["ETag"].strip('"') == hashlib.md5(body).hexdigest()
    assert s3.get_object(Bucket="photos", Key="dir/a.txt")["Body"].read() == body
    s3.put_object(Bucket="photos", Key="dir/sub/b.txt", Body=b"bee")
    s3.put_object(Bucket="my.photos", Key="dotted.txt", Body=b"dots")
    assert s3.get_object(Bucket="my.photos", Key="dotted.txt")["Body"].read() == b"dots"
    listed = s3.list_objects_v2(Bucket="photos", Prefix="dir/", Delimiter="/")
    keys = [o["Key"] for o in listed.get("Contents", [])]
    prefixes = [p["Prefix"] for p in listed.get("CommonPrefixes", [])]
    assert keys == ["dir/a.txt"] and prefixes == ["dir/sub/"], (keys, prefixes)

    big = work / "big.bin"
    with big.open("wb") as f:
        for _ in range(12):
            f.write(os.urandom(MiB))
    transfer = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, max_concurrency=2)
    s3.upload_file(str(big), "photos", "big.bin", Config=transfer)
    head = s3.head_object(Bucket="photos", Key="big.bin")
    assert head["ETag"].strip('"').endswith("-3"), head["ETag"]  # composed from 3 parts
    back = work / "back.bin"
    s3.download_file("photos", "big.bin", str(back), Config=transfer)
    assert back.read_bytes() == big.read_bytes()
    # a low-level Complete answers the object's URL without the bucket twice
    mp = s3.create_multipart_upload(Bucket="photos", Key="one-part.bin")
    part = s3.upload_part(
        Bucket="photos", Key="one-part.bin", UploadId=mp["UploadId"], PartNumber=1, Body=b"x"
    )
    done = s3.complete_multipart_upload(
        Bucket="photos", Key="one-part.bin", UploadId=mp["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )
    assert urllib.parse.urlsplit(done["Location"]).path == "/one-part.bin", done["Location"]

    url = s3.generate_presigned_url("get_object", Params={"Bucket": "photos", "Key": "dir/a.txt"})
    assert urllib.parse.urlsplit(url).hostname == "photos.localhost", url
    with urllib.request.urlopen(url, timeout=30) as resp:  # plain HTTP, no SDK
        assert resp.read() == body

    try:
        s3.head_bucket(Bucket="nosuch-bucket")
        raise AssertionError("head_bucket of a missing bucket succeeded")
    except ClientError as exc:
        assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    missing = s3.generate_presigned_url("get_object", Params={"Bucket": "nosuch-bucket", "Key": "x"})
    try:
        urllib.request.urlopen(missing, timeout=30)
        raise AssertionError("GET in a missing bucket succeeded")
    except urllib.error.HTTPError as exc:
        status, xml = exc.code, exc.read().decode()
    assert status == 404 and "<Code>NoSuchBucket</Code>" in xml, (status, xml)
    try:
        s3.get_object(Bucket="nosuch-bucket", Key="x")
        raise AssertionError("get_object in a missing bucket succeeded")
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "NoSuchBucket", exc.response
    md5_big = hashlib.md5(big.read_bytes()).hexdigest()
    print(json.dumps({"hosts": sorted(hosts), "presigned": url, "md5_big": md5_big}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4]))
