"""The S3 API on a real 3-node cluster, through the clients people run: boto3 and the AWS CLI
(from PyPI), plus hand-signed requests for what they do not send over plain HTTP (aws-chunked
with a trailing checksum) and for bad input."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

boto3 = pytest.importorskip("boto3")
from botocore.auth import S3SigV4Auth  # noqa: E402
from botocore.awsrequest import AWSRequest  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.credentials import Credentials  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402
from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum  # noqa: E402

from tests.support.processes import NodeProcess, wait_for  # noqa: E402

MiB = 1 << 20
ADMIN_ID, ADMIN_SECRET = "AKIDP2PSTORETEST0001", "test-secret-0123456789abcdef"
REGION = "us-east-1"


def native(node: NodeProcess, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(node.url + path, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def import_key(node: NodeProcess, key_id: str, secret: str, name: str, admin: bool) -> None:
    status, body = native(
        node, "POST", "/s3/keys", {"access_key_id": key_id, "secret": secret, "name": name, "admin": admin}
    )
    assert status == 201, body


def client(node: NodeProcess, key_id: str = ADMIN_ID, secret: str = ADMIN_SECRET) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=node.s3_url,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        region_name=REGION,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
    )


def code_of(exc: ClientError) -> str:
    return exc.response["Error"]["Code"]


def no_tracebacks(nodes: list[NodeProcess]) -> None:
    for node in nodes:
        assert "Traceback" not in node.log_text(), node.log_tail(60)


@pytest.fixture
def cluster(node_factory) -> list[NodeProcess]:
    nodes = node_factory(3, s3=True, fsync="never", gossip_interval=0.2, chunk_size=MiB)
    import_key(nodes[0], ADMIN_ID, ADMIN_SECRET, "admin", admin=True)
    return nodes


def test_boto3_on_three_nodes(cluster: list[NodeProcess], tmp_path: Path) -> None:
    s3, other = client(cluster[0]), client(cluster[1])  # any node is a gateway
    s3.create_bucket(Bucket="photos")
    with pytest.raises(ClientError) as info:
        other.create_bucket(Bucket="photos")
    assert code_of(info.value) == "BucketAlreadyOwnedByYou"
    with pytest.raises(ClientError) as info:
        s3.create_bucket(Bucket="Bad_Name")
    assert code_of(info.value) == "InvalidBucketName"
    other.head_bucket(Bucket="photos")
    assert other.get_bucket_location(Bucket="photos")["LocationConstraint"] is None  # us-east-1
    assert [b["Name"] for b in other.list_buckets()["Buckets"]] == ["photos"]

    # put / get / head with metadata, ETag = MD5, Range, conditional requests
    body = os.urandom(300_000)
    put = s3.put_object(
        Bucket="photos",
        Key="a/b c.bin",
        Body=body,
        ContentType="image/x-test",
        Metadata={"colour": "blue"},
        ContentDisposition="attachment",
        CacheControl="no-cache",
    )
    md5 = hashlib.md5(body).hexdigest()
    assert put["ETag"] == f'"{md5}"'
    got = other.get_object(Bucket="photos", Key="a/b c.bin")
    assert got["Body"].read() == body and got["ETag"] == f'"{md5}"'
    assert got["ContentType"] == "image/x-test" and got["Metadata"] == {"colour": "blue"}
    assert got["ContentDisposition"] == "attachment" and got["CacheControl"] == "no-cache"
    part = other.get_object(Bucket="photos", Key="a/b c.bin", Range="bytes=1000-1999")
    assert part["Body"].read() == body[1000:2000] and part["ContentRange"] == f"bytes 1000-1999/{len(body)}"
    assert other.head_object(Bucket="photos", Key="a/b c.bin")["ContentLength"] == len(body)
    with pytest.raises(ClientError) as info:
        other.get_object(Bucket="photos", Key="a/b c.bin", IfNoneMatch=f'"{md5}"')
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    with pytest.raises(ClientError) as info:
        other.get_object(Bucket="photos", Key="a/b c.bin", IfMatch='"0123"')
    assert code_of(info.value) == "PreconditionFailed"
    with pytest.raises(ClientError) as info:
        other.get_object(Bucket="photos", Key="a/b c.bin", Range=f"bytes={len(body)}-")
    assert code_of(info.value) == "InvalidRange"
    with pytest.raises(ClientError) as info:
        other.get_object(Bucket="photos", Key="missing")
    assert code_of(info.value) == "NoSuchKey"
    with pytest.raises(ClientError) as info:
        other.put_object(Bucket="nobucket", Key="k", Body=b"x")
    assert code_of(info.value) == "NoSuchBucket"

    # upload_file / download_file below the multipart threshold (8 MiB), through different nodes
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(5 * MiB + 17))
    s3.upload_file(str(src), "photos", "files/src.bin")
    dst = tmp_path / "dst.bin"
    client(cluster[2]).download_file("photos", "files/src.bin", str(dst))
    assert dst.read_bytes() == src.read_bytes()

    # listings: v2 with a paginator and a delimiter, v1 with markers
    for i in range(23):
        s3.put_object(Bucket="photos", Key=f"list/{i:02d}.txt", Body=b"x" * i)
    s3.put_object(Bucket="photos", Key="list/sub/deep.txt", Body=b"deep")
    pages = list(
        other.get_paginator("list_objects_v2").paginate(
            Bucket="photos", Prefix="list/", Delimiter="/", PaginationConfig={"PageSize": 7}
        )
    )
    keys = [o["Key"] for p in pages for o in p.get("Contents", [])]
    assert keys == [f"list/{i:02d}.txt" for i in range(23)] and len(pages) == 4
    assert [c["Prefix"] for p in pages for c in p.get("CommonPrefixes", [])] == ["list/sub/"]
    v1 = list(
        other.get_paginator("list_objects").paginate(
            Bucket="photos", Prefix="list/", PaginationConfig={"PageSize": 10}
        )
    )
    assert [o["Key"] for p in v1 for o in p["Contents"]] == [*keys, "list/sub/deep.txt"]
    top = other.list_objects_v2(Bucket="photos", Delimiter="/")
    assert [c["Prefix"] for c in top["CommonPrefixes"]] == ["a/", "files/", "list/"]

    # copy, delete, delete_objects (quiet)
    s3.copy_object(Bucket="photos", Key="copy.bin", CopySource={"Bucket": "photos", "Key": "a/b c.bin"})
    copied = other.get_object(Bucket="photos", Key="copy.bin")
    assert copied["Body"].read() == body and copied["Metadata"] == {"colour": "blue"}
    assert copied["ETag"] == f'"{md5}"'
    s3.delete_object(Bucket="photos", Key="copy.bin")
    s3.delete_object(Bucket="photos", Key="copy.bin")  # deleting a missing key succeeds, as on S3
    result = s3.delete_objects(
        Bucket="photos", Delete={"Objects": [{"Key": f"list/{i:02d}.txt"} for i in range(10)], "Quiet": True}
    )
    assert not result.get("Deleted") and not result.get("Errors")
    assert other.list_objects_v2(Bucket="photos", Prefix="list/")["KeyCount"] == 14
    with pytest.raises(ClientError) as info:
        s3.delete_bucket(Bucket="photos")
    assert code_of(info.value) == "BucketNotEmpty"

    # presigned GET and PUT with plain HTTP
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": "photos", "Key": "a/b c.bin"}, ExpiresIn=60
    )
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.read() == body
    url = s3.generate_presigned_url(
        "put_object", Params={"Bucket": "photos", "Key": "presigned.txt"}, ExpiresIn=60
    )
    with urllib.request.urlopen(
        urllib.request.Request(url, data=b"via presigned PUT", method="PUT"), timeout=10
    ):
        pass
    assert other.get_object(Bucket="photos", Key="presigned.txt")["Body"].read() == b"via presigned PUT"

    # a wrong secret: SignatureDoesNotMatch, and nothing stored
    with pytest.raises(ClientError) as info:
        client(cluster[1], secret="not-the-secret-at-all").put_object(Bucket="photos", Key="evil", Body=b"x")
    assert code_of(info.value) == "SignatureDoesNotMatch"
    with pytest.raises(ClientError) as info:
        client(cluster[1], key_id="AKIDUNKNOWN000000000").list_buckets()
    assert code_of(info.value) == "InvalidAccessKeyId"
    with pytest.raises(ClientError):
        other.head_object(Bucket="photos", Key="evil")

    # the same bucket through the native API; the cluster metadata stays hidden and refused
    status, listing = native(cluster[2], "GET", "/files?prefix=photos/a/")
    assert status == 200 and [f["key"] for f in listing["files"]] == ["photos/a/b c.bin"]
    status, everything = native(cluster[2], "GET", "/files")
    assert not any(f["key"].startswith(".p2pstore/") for f in everything["files"])
    for method in ("GET", "PUT", "DELETE"):
        req = urllib.request.Request(
            f"{cluster[2].url}/files/.p2pstore/s3/keys/{ADMIN_ID}",
            method=method,
            data=b"forged" if method == "PUT" else None,
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=10)
        assert refused.value.code == 403, method
    client(cluster[0]).list_buckets()  # the key is still there, unchanged
    with urllib.request.urlopen(cluster[2].url + "/files/photos/presigned.txt", timeout=10) as resp:
        assert resp.read() == b"via presigned PUT"
    for node in cluster:
        assert ADMIN_SECRET not in json.dumps(native(node, "GET", "/status?files=1")[1])
        assert ADMIN_SECRET not in json.dumps(native(node, "GET", "/s3/keys")[1])

    # one node killed: reads and writes go on through the others
    cluster[2].kill()
    survivor = client(cluster[1])
    assert survivor.get_object(Bucket="photos", Key="a/b c.bin")["Body"].read() == body
    survivor.put_object(Bucket="photos", Key="after-kill.txt", Body=b"still here")
    assert (
        client(cluster[0]).get_object(Bucket="photos", Key="after-kill.txt")["Body"].read() == b"still here"
    )
    no_tracebacks(cluster)


def aws(node: NodeProcess, *args: str, cwd: Path) -> str:
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": ADMIN_ID,
        "AWS_SECRET_ACCESS_KEY": ADMIN_SECRET,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(cwd / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(cwd / "aws-credentials"),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "awscli", *args, "--endpoint-url", node.s3_url],
        capture_output=True,
        env=env,
        cwd=cwd,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    return proc.stdout.decode()


def test_aws_cli_on_three_nodes(cluster: list[NodeProcess], tmp_path: Path) -> None:
    pytest.importorskip("awscli")
    tree = tmp_path / "tree"
    files = {
        "a.txt": b"alpha",
        "dir/b.bin": os.urandom(200_000),
        "dir/deeper/c.bin": os.urandom(2 * MiB + 3),
        "spaced name.txt": b"spaces",
        "unicode-é.txt": "é".encode(),
    }
    for name, data in files.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(data)
    aws(cluster[0], "s3", "mb", "s3://backup", cwd=tmp_path)
    aws(cluster[0], "s3", "cp", str(tree / "a.txt"), "s3://backup/single/a.txt", cwd=tmp_path)
    aws(cluster[1], "s3", "sync", str(tree), "s3://backup/tree", cwd=tmp_path)
    listing = aws(cluster[2], "s3", "ls", "--recursive", "s3://backup/", cwd=tmp_path)
    for name in files:
        assert f"tree/{name}" in listing
    assert "single/a.txt" in listing
    back = tmp_path / "back"
    aws(cluster[2], "s3", "sync", "s3://backup/tree", str(back), cwd=tmp_path)
    for name, data in files.items():
        assert (back / name).read_bytes() == data, name
    again = aws(cluster[0], "s3", "sync", str(tree), "s3://backup/tree", cwd=tmp_path)
    assert "upload:" not in again  # nothing changed: nothing sent
    aws(cluster[0], "s3", "cp", "s3://backup/single/a.txt", str(tmp_path / "a-copy.txt"), cwd=tmp_path)
    assert (tmp_path / "a-copy.txt").read_bytes() == b"alpha"
    head = json.loads(
        aws(cluster[1], "s3api", "head-object", "--bucket", "backup", "--key", "tree/a.txt", cwd=tmp_path)
    )
    assert head["ContentLength"] == 5 and head["ETag"] == f'"{hashlib.md5(b"alpha").hexdigest()}"'
    aws(cluster[1], "s3", "rm", "--recursive", "s3://backup/", cwd=tmp_path)
    assert aws(cluster[2], "s3", "ls", "--recursive", "s3://backup/", cwd=tmp_path).strip() == ""
    aws(cluster[0], "s3", "rb", "s3://backup", cwd=tmp_path)
    assert "backup" not in aws(cluster[0], "s3", "ls", cwd=tmp_path)
    no_tracebacks(cluster)


def raw(
    node: NodeProcess,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict | None = None,
    payload: str | None = None,
    send: bytes | None = None,
) -> tuple[int, bytes]:
    """A request signed by botocore's SigV4 signer, sent with urllib (``send``: other bytes than
    those signed)."""
    req = AWSRequest(method=method, url=node.s3_url + path, data=body, headers=dict(headers or {}))
    if payload == "trailer":
        req.context["checksum"] = {"request_algorithm": {"in": "trailer", "algorithm": "crc32"}}
    S3SigV4Auth(Credentials(ADMIN_ID, ADMIN_SECRET), "s3", REGION).add_auth(req)
    body = body if send is None else send
    sent = urllib.request.Request(
        req.url,
        data=body if method in ("PUT", "POST") else None,
        method=method,
        headers=dict(req.headers.items()),
    )
    try:
        with urllib.request.urlopen(sent, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def trailer_body(data: bytes, corrupt: bool = False) -> bytes:
    body = AwsChunkedWrapper(
        io.BytesIO(data), Crc32Checksum, "x-amz-checksum-crc32", chunk_size=64 * 1024
    ).read()
    if corrupt:
        at = body.rindex(b"x-amz-checksum-crc32:")
        body = body[:at] + b"x-amz-checksum-crc32:AAAAAA==\r\n\r\n"
    return body


def test_bad_input_gets_s3_errors_and_changes_nothing(cluster: list[NodeProcess]) -> None:
    node = cluster[1]
    s3 = client(node)
    s3.create_bucket(Bucket="inbox")

    # aws-chunked with a trailing checksum, as boto3 sends it over TLS: good and corrupt
    data = os.urandom(300_000)
    headers = {
        "Content-Encoding": "aws-chunked",
        "x-amz-decoded-content-length": str(len(data)),
        "x-amz-trailer": "x-amz-checksum-crc32",
    }
    status, answer = raw(node, "PUT", "/inbox/trailer.bin", trailer_body(data), headers, payload="trailer")
    assert status == 200, answer
    assert s3.get_object(Bucket="inbox", Key="trailer.bin")["Body"].read() == data
    status, answer = raw(
        node, "PUT", "/inbox/bad-trailer.bin", trailer_body(data, corrupt=True), headers, payload="trailer"
    )
    assert status == 400 and b"<Code>BadDigest</Code>" in answer
    status, answer = raw(
        node, "PUT", "/inbox/short.bin", trailer_body(data)[:1000], headers, payload="trailer"
    )
    assert status == 400 and b"<Code>IncompleteBody</Code>" in answer

    # a body that does not match its signed sha256
    status, answer = raw(node, "PUT", "/inbox/mismatch.txt", b"otherxx", send=b"payload")
    assert status == 400 and b"XAmzContentSHA256Mismatch" in answer

    # malformed XML, unknown subresources and methods
    status, answer = raw(node, "POST", "/inbox?delete", b"<Delete><Object><Key>x</Key></Object>")
    assert status == 400 and b"<Code>MalformedXML</Code>" in answer
    status, answer = raw(node, "POST", "/inbox?delete", b'<!DOCTYPE x [<!ENTITY a "b">]><Delete/>')
    assert status == 400 and b"<Code>MalformedXML</Code>" in answer
    for method, path in [
        ("GET", "/inbox?acl"),
        ("PUT", "/inbox/k?tagging"),
        ("GET", "/inbox?policy"),
        ("GET", "/inbox/k?attributes"),
        ("GET", "/?unknown=1"),
    ]:
        status, answer = raw(node, method, path, b"")
        assert status == 501 and b"<Code>NotImplemented</Code>" in answer, (method, path, answer)
    # a malformed or empty CompleteMultipartUpload: MalformedXML, the upload still open
    status, answer = raw(node, "POST", "/inbox/mp?uploads", b"")
    upload_id = answer.split(b"<UploadId>")[1].split(b"</UploadId>")[0].decode()
    for body in (b"<CompleteMultipartUpload>", b"<CompleteMultipartUpload/>", b"<Other/>"):
        status, answer = raw(node, "POST", f"/inbox/mp?uploadId={upload_id}", body)
        assert status == 400 and b"<Code>MalformedXML</Code>" in answer, answer
    status, answer = raw(node, "GET", f"/inbox/mp?uploadId={upload_id}", b"")
    assert status == 200 and b"<ListPartsResult" in answer
    status, answer = raw(node, "POST", "/inbox/mp?uploadId=not-an-id", b"<CompleteMultipartUpload/>")
    assert status == 404 and b"<Code>NoSuchUpload</Code>" in answer
    status, answer = raw(node, "PATCH", "/inbox/k", b"")
    assert status == 405 and b"<Code>MethodNotAllowed</Code>" in answer
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        urllib.request.urlopen(node.s3_url + "/inbox", timeout=10)
    assert anonymous.value.code == 403 and b"<Code>AccessDenied</Code>" in anonymous.value.read()

    # a key that is no admin: no buckets of its own, none of others' until allowed
    import_key(cluster[0], "AKIDP2PSTOREUSER0001", "user-secret-0123456789ab", "user", admin=False)
    user = client(node, "AKIDP2PSTOREUSER0001", "user-secret-0123456789ab")
    for call in (
        lambda: user.create_bucket(Bucket="mine"),
        lambda: user.list_objects_v2(Bucket="inbox"),
        lambda: user.put_object(Bucket="inbox", Key="u", Body=b"u"),
    ):
        with pytest.raises(ClientError) as info:
            call()
        assert code_of(info.value) == "AccessDenied"
    status, _ = native(cluster[0], "PUT", "/s3/keys/user/buckets/inbox", {"read": True})
    assert status == 200
    wait_for(lambda: user.list_objects_v2(Bucket="inbox")["KeyCount"] == 1, 15, message="read allowed")
    with pytest.raises(ClientError) as info:
        user.put_object(Bucket="inbox", Key="u", Body=b"u")
    assert code_of(info.value) == "AccessDenied"

    # nothing the bad requests sent was stored
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="inbox").get("Contents", [])]
    assert keys == ["trailer.bin"]
    no_tracebacks(cluster)


def test_key_commands_of_the_cli(node_factory) -> None:
    from tests.support.processes import run_cli

    (node,) = node_factory(1, s3=True, fsync="never")
    env = {"P2PSTORE_URL": node.url}
    created = run_cli("key", "create", "ops", "--admin", env=env)
    assert created.returncode == 0, created.stderr
    lines = dict(line.split(":", 1) for line in created.stdout.decode().splitlines() if ":" in line)
    key_id, secret = lines["access key id"].strip(), lines["secret access key"].strip()
    s3 = client(node, key_id, secret)
    s3.create_bucket(Bucket="ops-bucket")
    imported = run_cli(
        "key", "import", "AKIDP2PSTOREREADER01", "reader-secret-0123456789", "--name", "reader", env=env
    )
    assert imported.returncode == 0, imported.stderr
    allowed = run_cli("key", "allow", "reader", "--bucket", "ops-bucket", "--read", env=env)
    assert allowed.returncode == 0 and b"reader may read in ops-bucket" in allowed.stdout
    listed = run_cli("key", "list", "--json", env=env)
    assert listed.returncode == 0 and secret.encode() not in listed.stdout
    assert {k["name"] for k in json.loads(listed.stdout)} == {"ops", "reader"}
    reader = client(node, "AKIDP2PSTOREREADER01", "reader-secret-0123456789")
    assert reader.list_objects_v2(Bucket="ops-bucket")["KeyCount"] == 0
    duplicate = run_cli("key", "create", "ops", env=env)
    assert duplicate.returncode == 5 and b"exists already" in duplicate.stderr
    deleted = run_cli("key", "delete", "reader", env=env)
    assert deleted.returncode == 0, deleted.stderr
    with pytest.raises(ClientError) as info:
        reader.list_objects_v2(Bucket="ops-bucket")
    assert code_of(info.value) == "InvalidAccessKeyId"
    assert secret not in node.log_text()


def test_content_md5_is_checked_and_is_the_etag(cluster: list[NodeProcess]) -> None:
    """A Content-MD5 the body is checked against as it streams is its ETag (no second MD5 pass):
    right, it is the ETag of small and streamed bodies and of a part; wrong, BadDigest and
    nothing stored."""
    node = cluster[0]
    s3 = client(node)
    s3.create_bucket(Bucket="md5s")
    for name, size in (("small.bin", 3000), ("large.bin", 3 * 1024 * 1024 + 17)):
        data = os.urandom(size)
        digest = hashlib.md5(data).digest()
        headers = {"Content-MD5": base64.b64encode(digest).decode()}
        status, answer = raw(node, "PUT", f"/md5s/{name}", data, headers)
        assert status == 200, answer
        head = s3.head_object(Bucket="md5s", Key=name)
        assert head["ETag"] == f'"{digest.hex()}"'
        assert s3.get_object(Bucket="md5s", Key=name)["Body"].read() == data
        wrong = {"Content-MD5": base64.b64encode(hashlib.md5(data + b"x").digest()).decode()}
        status, answer = raw(node, "PUT", f"/md5s/bad-{name}", data, wrong)
        assert status == 400 and b"<Code>BadDigest</Code>" in answer
        with pytest.raises(ClientError) as info:
            s3.head_object(Bucket="md5s", Key=f"bad-{name}")
        assert info.value.response["Error"]["Code"] in ("404", "NoSuchKey")
    upload_id = s3.create_multipart_upload(Bucket="md5s", Key="multi.bin")["UploadId"]
    part = os.urandom(5 * 1024 * 1024)
    digest = hashlib.md5(part).digest()
    status, answer = raw(node, "PUT", f"/md5s/multi.bin?partNumber=1&uploadId={upload_id}", part,
                         {"Content-MD5": base64.b64encode(digest).decode()})  # fmt: skip
    assert status == 200, answer
    parts = s3.list_parts(Bucket="md5s", Key="multi.bin", UploadId=upload_id)["Parts"]
    assert [p["ETag"] for p in parts] == [f'"{digest.hex()}"']
    done = {"Parts": [{"PartNumber": 1, "ETag": parts[0]["ETag"]}]}
    s3.complete_multipart_upload(Bucket="md5s", Key="multi.bin", UploadId=upload_id, MultipartUpload=done)
    assert s3.get_object(Bucket="md5s", Key="multi.bin")["Body"].read() == part


def test_s3_writes_leave_no_read_leases_wanted(cluster: list[NodeProcess]) -> None:
    """Checking a signature reads the access key's and the bucket's records; those reads are
    the node's own and ask for no read lease (a node holding leases makes every write of its
    keys report it and wait for it). A client's GET still does."""

    def wanted(node: NodeProcess) -> bool:
        status, body = native(node, "GET", "/status")
        assert status == 200, body
        return bool(body["read_leases"]["wanted"])

    s3 = client(cluster[0])
    s3.create_bucket(Bucket="writes")
    for i in range(6):
        client(cluster[i % 3]).put_object(Bucket="writes", Key=f"k{i}", Body=b"x" * 4096)
    assert [wanted(node) for node in cluster] == [False, False, False]
    assert client(cluster[1]).get_object(Bucket="writes", Key="k0")["Body"].read() == b"x" * 4096
    assert wanted(cluster[1])


def read_answer(sock: socket.socket) -> tuple[bytes, bytes]:
    """(head, body) of one HTTP answer with a Content-Length, read from ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        assert piece, f"connection closed after {data!r}"
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")[1:]
                   if line.lower().startswith(b"content-length:")), 0)  # fmt: skip
    while len(body) < length:
        piece = sock.recv(65536)
        assert piece, "connection closed mid-body"
        body += piece
    return head, body


def test_expect_100_continue_is_answered_before_the_body(node_factory) -> None:
    """The S3 port calls its one handler without aiohttp's router, so the handler answers
    ``Expect: 100-continue`` itself (boto3 and the AWS CLI send it with file uploads): 100
    Continue before the client sends its body, once the signature holds (a bad one is refused
    without inviting the body); any other expectation 417 in XML; nothing stored but the one."""
    (node,) = node_factory(1, s3=True, fsync="never")
    import_key(node, ADMIN_ID, ADMIN_SECRET, "admin", admin=True)
    s3 = client(node)
    s3.create_bucket(Bucket="expect")
    data = os.urandom(20_000)
    for key, expect, secret in (("continued", "100-continue", ADMIN_SECRET), ("tea", "tea", ADMIN_SECRET),
                                ("refused", "100-continue", "not-" + ADMIN_SECRET)):  # fmt: skip
        req = AWSRequest(method="PUT", url=f"{node.s3_url}/expect/{key}", data=data,
                         headers={"Expect": expect, "Content-Length": str(len(data))})  # fmt: skip
        S3SigV4Auth(Credentials(ADMIN_ID, secret), "s3", REGION).add_auth(req)
        host = node.s3_url.split("://")[1]
        lines = [f"PUT /expect/{key} HTTP/1.1", f"Host: {host}", *map(": ".join, req.headers.items())]
        with socket.create_connection(("127.0.0.1", int(host.rsplit(":", 1)[1])), timeout=10) as sock:
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())  # the head alone: the body waits
            if key == "refused":  # a bad signature: refused at once, the body never invited
                head, body = read_answer(sock)
                assert head.startswith(b"HTTP/1.1 403 "), head
                assert b"<Code>SignatureDoesNotMatch</Code>" in body
            elif expect == "100-continue":
                head, _ = read_answer(sock)  # a timeout here: no 100 Continue came
                assert head == b"HTTP/1.1 100 Continue", head
                sock.sendall(data)
                head, body = read_answer(sock)
                assert head.startswith(b"HTTP/1.1 200 "), (head, body)
                assert f'ETag: "{hashlib.md5(data).hexdigest()}"'.encode() in head
            else:
                head, body = read_answer(sock)
                assert head.startswith(b"HTTP/1.1 417 ") and b"<Code>ExpectationFailed</Code>" in body, head
    assert s3.get_object(Bucket="expect", Key="continued")["Body"].read() == data
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="expect")["Contents"]] == ["continued"]
    no_tracebacks([node])


def test_heads_that_do_not_parse_get_the_ports_own_errors(node_factory) -> None:
    """A head over aiohttp's line or field limits, or one that is not HTTP, is the client's
    error: S3 XML on the S3 port (400 RequestHeaderSectionTooLarge / BadRequest), JSON on the
    native port (431 / 400), the connection closed, no traceback in the log, nothing stored."""
    (node,) = node_factory(1, s3=True, fsync="never")
    s3_host = node.s3_url.split("://")[1]
    native_host = node.url.split("://")[1]
    big = "a" * 20_000
    cases = [
        (s3_host, f"GET /b/k HTTP/1.1\r\nHost: {s3_host}\r\nX-Big: {big}\r\n\r\n", b"400",
         b"<Code>RequestHeaderSectionTooLarge</Code>"),
        (s3_host, f"PUT /b/{big} HTTP/1.1\r\nHost: {s3_host}\r\nContent-Length: 1\r\n\r\nx", b"400",
         b"<Code>RequestHeaderSectionTooLarge</Code>"),
        (s3_host, f"GET /b/k HTTP/1.1\r\nHost: {s3_host}\r\nBad Header\r\n\r\n", b"400",
         b"<Code>BadRequest</Code>"),
        (native_host, f"GET /files/k HTTP/1.1\r\nHost: {native_host}\r\nX-Big: {big}\r\n\r\n", b"431",
         b'"error"'),
        (native_host, f"GET /files/k HTTP/1.1\r\nHost: {native_host}\r\nBad Header\r\n\r\n", b"400",
         b'"error"'),
    ]  # fmt: skip
    for host, request, status, marker in cases:
        with socket.create_connection(("127.0.0.1", int(host.rsplit(":", 1)[1])), timeout=10) as sock:
            sock.sendall(request.encode())
            head, body = read_answer(sock)
            assert head.split(b" ")[1] == status, (request[:60], head)
            assert marker in body, (request[:60], body)
            assert sock.recv(1) == b"", "the connection stays open after a head that does not parse"
    status, answer = native(node, "GET", "/files?prefix=b/")
    assert status == 200 and not answer.get("files"), answer
    no_tracebacks([node])
