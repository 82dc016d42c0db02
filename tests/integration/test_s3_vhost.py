"""Virtual-host-style S3 URLs (``--s3-domain localhost``) on a real 3-node cluster, through boto3
and the AWS CLI configured for virtual addressing, with real name resolution of
``<bucket>.localhost`` to 127.0.0.1 (tests/support/vhosts.py); path style keeps working on the
same nodes."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("boto3")
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.integration.test_s3 import ADMIN_ID, ADMIN_SECRET, REGION, MiB, client, import_key, no_tracebacks
from tests.support.processes import NodeProcess
from tests.support.vhosts import need_namespaces, with_hosts

CLIENT = Path(__file__).with_name("s3_vhost_client.py")


@pytest.fixture
def cluster(node_factory) -> list[NodeProcess]:
    need_namespaces()
    nodes = node_factory(3, s3=True, s3_domain=["localhost"], fsync="never", gossip_interval=0.2,
                         chunk_size=MiB)  # fmt: skip
    import_key(nodes[0], ADMIN_ID, ADMIN_SECRET, "admin", admin=True)
    return nodes


def vhost_endpoint(node: NodeProcess) -> str:
    return f"http://localhost:{node.s3_port}"


def clean_env(**extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")}, **extra}


def test_boto3_virtual_host_style(cluster: list[NodeProcess], tmp_path: Path) -> None:
    port = cluster[0].s3_port
    names = [f"{b}.localhost" for b in ("photos", "my.photos", "nosuch-bucket")]
    argv = [sys.executable, str(CLIENT), vhost_endpoint(cluster[0]), ADMIN_ID, ADMIN_SECRET, str(tmp_path)]
    proc = subprocess.run(with_hosts(argv, names, tmp_path), capture_output=True, env=clean_env(),
                          timeout=240, check=False)  # fmt: skip
    assert proc.returncode == 0, (proc.stdout.decode()[-2000:], proc.stderr.decode()[-4000:])
    summary = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    # Every request went to a bucket's own host name: virtual-host style, not path style.
    assert set(summary["hosts"]) == {f"{n}:{port}" for n in names}, summary["hosts"]
    # The same objects through path style, on other nodes.
    path_style = client(cluster[1])
    assert path_style.get_object(Bucket="my.photos", Key="dotted.txt")["Body"].read() == b"dots"
    assert path_style.get_object(Bucket="photos", Key="dir/sub/b.txt")["Body"].read() == b"bee"
    big = client(cluster[2]).get_object(Bucket="photos", Key="big.bin")["Body"]
    md5 = hashlib.md5()
    for piece in iter(lambda: big.read(MiB), b""):
        md5.update(piece)
    assert md5.hexdigest() == summary["md5_big"]
    buckets = {b["Name"] for b in path_style.list_buckets()["Buckets"]}
    assert {"photos", "my.photos"} <= buckets and "nosuch-bucket" not in buckets
    no_tracebacks(cluster)


def aws_vhost(
    node: NodeProcess, *args: str, cwd: Path, ok: bool = True
) -> subprocess.CompletedProcess[bytes]:
    env = clean_env(AWS_ACCESS_KEY_ID=ADMIN_ID, AWS_SECRET_ACCESS_KEY=ADMIN_SECRET, AWS_DEFAULT_REGION=REGION,
                    AWS_CONFIG_FILE=str(cwd / "aws-config"),
                    AWS_SHARED_CREDENTIALS_FILE=str(cwd / "aws-credentials"))  # fmt: skip
    argv = [sys.executable, "-m", "awscli", *args, "--endpoint-url", vhost_endpoint(node)]
    names = ["backup.localhost", "nosuch-bucket.localhost"]
    proc = subprocess.run(with_hosts(argv, names, cwd), capture_output=True, env=env, cwd=cwd, timeout=120,
                          check=False)  # fmt: skip
    if ok:
        assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    return proc


def test_aws_cli_virtual_host_style(cluster: list[NodeProcess], tmp_path: Path) -> None:
    pytest.importorskip("awscli")
    config_env = clean_env(AWS_CONFIG_FILE=str(tmp_path / "aws-config"))
    configure = ["configure", "set", "default.s3.addressing_style", "virtual"]
    subprocess.run([sys.executable, "-m", "awscli", *configure], env=config_env, check=True, timeout=60)
    assert "addressing_style = virtual" in (tmp_path / "aws-config").read_text()
    data = os.urandom(3 * MiB + 5)
    (tmp_path / "f.bin").write_bytes(data)
    aws_vhost(cluster[0], "s3", "mb", "s3://backup", cwd=tmp_path)
    put = aws_vhost(cluster[1], "s3", "cp", "f.bin", "s3://backup/dir/f.bin", "--debug", cwd=tmp_path)
    assert b"backup.localhost" in put.stderr  # the CLI really addressed the bucket's host name
    listing = aws_vhost(cluster[2], "s3", "ls", "--recursive", "s3://backup/", cwd=tmp_path)
    assert b"dir/f.bin" in listing.stdout
    aws_vhost(cluster[0], "s3", "cp", "s3://backup/dir/f.bin", "back.bin", cwd=tmp_path)
    assert (tmp_path / "back.bin").read_bytes() == data
    missing = aws_vhost(cluster[0], "s3", "ls", "s3://nosuch-bucket/", cwd=tmp_path, ok=False)
    assert missing.returncode != 0 and b"NoSuchBucket" in missing.stderr, missing.stderr[-2000:]
    # Path style on the same node, same object.
    assert client(cluster[0]).get_object(Bucket="backup", Key="dir/f.bin")["Body"].read() == data
    no_tracebacks(cluster)


@pytest.fixture
def plain_cluster(node_factory) -> list[NodeProcess]:
    """The same cluster, for requests that carry their Host header over a socket to 127.0.0.1
    themselves (no name resolution needed)."""
    nodes = node_factory(3, s3=True, s3_domain=["localhost", "s3.example.test"], fsync="never",
                         gossip_interval=0.2, chunk_size=MiB)  # fmt: skip
    import_key(nodes[0], ADMIN_ID, ADMIN_SECRET, "admin", admin=True)
    return nodes


def send(
    node: NodeProcess, method: str, host: str, path: str, body: bytes = b"",
    headers: dict[str, str] | None = None, sign_host: str | None = None,
) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    """A request to ``node``'s S3 port with ``Host: host``, SigV4-signed by botocore for
    http://<sign_host or host><path> (unsigned when sign_host is "")."""
    headers = dict(headers or {})
    if sign_host != "":
        signed_host = sign_host or host  # signed as sent (botocore would lower-case it from a URL)
        req = AWSRequest(method=method, url=f"http://{signed_host}{path}", data=body,
                         headers={**headers, "Host": signed_host})  # fmt: skip
        req.context["payload_signing_enabled"] = True
        S3SigV4Auth(Credentials(ADMIN_ID, ADMIN_SECRET), "s3", REGION).add_auth(req)
        headers = {k: v for k, v in req.headers.items() if k.lower() != "host"}
    conn = http.client.HTTPConnection("127.0.0.1", node.s3_port, timeout=30)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_host_header_addressing_signatures_and_cors(plain_cluster: list[NodeProcess]) -> None:
    node = plain_cluster[1]
    port = node.s3_port
    path_style = client(plain_cluster[0])
    path_style.create_bucket(Bucket="site")
    path_style.put_bucket_cors(Bucket="site", CORSConfiguration={"CORSRules": [
        {"AllowedOrigins": ["http://app.test"], "AllowedMethods": ["GET", "PUT"], "AllowedHeaders": ["*"]}]})
    # Case and port do not matter; a second domain works alike; the whole path is the key.
    status, _, _ = send(node, "PUT", f"SITE.LocalHost:{port}", "/site/index.html", b"<h1>hi</h1>")
    assert status == 200
    assert path_style.get_object(Bucket="site", Key="site/index.html")["Body"].read() == b"<h1>hi</h1>"
    status, _, body = send(node, "GET", "site.s3.example.test", "/site/index.html")
    assert (status, body) == (200, b"<h1>hi</h1>")
    # The bare domain is path style.
    status, _, body = send(node, "GET", f"localhost:{port}", "/site/site/index.html")
    assert (status, body) == (200, b"<h1>hi</h1>")
    # A signature made for the path-style URL does not fit the virtual-host request: refused, nothing stored.
    status, _, body = send(node, "PUT", f"site.localhost:{port}", "/evil.txt", b"x",
                           sign_host=f"localhost:{port}")  # fmt: skip
    assert status == 403 and b"<Code>SignatureDoesNotMatch</Code>" in body, body
    assert "Contents" not in path_style.list_objects_v2(Bucket="site", Prefix="evil")
    # A browser's preflight and request on the virtual host see the bucket's CORS rules.
    status, headers, _ = send(node, "OPTIONS", f"site.localhost:{port}", "/upload.bin", sign_host="",
                              headers={"Origin": "http://app.test", "Access-Control-Request-Method": "PUT"})
    assert status == 200 and headers["access-control-allow-origin"] == "http://app.test"
    status, headers, _ = send(node, "GET", f"site.localhost:{port}", "/site/index.html",
                              headers={"Origin": "http://app.test"})  # fmt: skip
    assert status == 200 and headers["access-control-allow-origin"] == "http://app.test"
    # A missing bucket; a host under no configured domain is path style (bucket "x" here).
    status, _, body = send(node, "GET", f"nosuch-bucket.localhost:{port}", "/x")
    assert status == 404 and b"<Code>NoSuchBucket</Code>" in body, body
    status, _, body = send(node, "GET", "site.other.test", "/x")
    assert status == 404 and b"<Code>NoSuchBucket</Code>" in body, body
    no_tracebacks(plain_cluster)
