"""The status page's data, from real nodes: folder listings (delimiter, S3 buckets as folders),
the per-second activity series and the cluster overview with its warnings."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import pytest

from tests.support.processes import NodeProcess, start_nodes, wait_for

ADMIN_ID, ADMIN_SECRET = "AKIDP2PSTOREPAGE0001", "page-secret-0123456789abcdef"
FLAGS: dict[str, Any] = {"fsync": "never", "gossip_interval": 0.2}


def call(node: NodeProcess, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(node.url + path, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def put(node: NodeProcess, key: str, data: bytes) -> None:
    status, body = call(node, "PUT", "/files/" + urllib.parse.quote(key), data)
    assert status == 201, body


def listing(node: NodeProcess, **query: Any) -> dict[str, Any]:
    status, body = call(node, "GET", "/files?" + urllib.parse.urlencode({"delimiter": "/", **query}))
    assert status == 200, body
    return body


def test_folder_listing_skips_into_folders_and_shows_buckets(node_factory: Any) -> None:
    boto3 = pytest.importorskip("boto3")
    from botocore.config import Config

    nodes = node_factory(3, s3=True, **FLAGS)
    admin = {"access_key_id": ADMIN_ID, "secret": ADMIN_SECRET, "name": "admin", "admin": True}
    status, body = call(nodes[0], "POST", "/s3/keys", json.dumps(admin).encode())
    assert status == 201, body
    s3 = boto3.client("s3", endpoint_url=nodes[0].s3_url, aws_access_key_id=ADMIN_ID,
                      aws_secret_access_key=ADMIN_SECRET, region_name="us-east-1",
                      config=Config(s3={"addressing_style": "path"}))  # fmt: skip
    s3.create_bucket(Bucket="photos")  # empty: a folder only because it is a bucket
    s3.create_bucket(Bucket="music")
    s3.put_object(Bucket="music", Key="a/song.mp3", Body=b"la")
    for key in ["a/1", "a/2", "a/b/3", "c", "d/4", *(f"big/{i:04d}" for i in range(300))]:
        put(nodes[0], key, key.encode())
    gw = nodes[1]  # another gateway lists what it holds as a replica (R = 3 of 3)

    def root() -> dict[str, Any]:
        body = listing(gw)
        return body if "photos" in body.get("buckets", []) and "music/" in body["prefixes"] else {}

    body = wait_for(root, timeout=15, message="buckets and folders at the root")
    assert body["prefixes"] == ["a/", "big/", "d/", "music/"]
    assert [f["key"] for f in body["files"]] == ["c"]
    assert sorted(body["buckets"]) == ["music", "photos"]
    assert body["next"] is None
    assert not any(p.startswith(".p2pstore") for p in body["prefixes"])

    inside = listing(gw, prefix="a/")
    assert inside["prefixes"] == ["a/b/"] and [f["key"] for f in inside["files"]] == ["a/1", "a/2"]
    assert "buckets" not in inside  # only the root shows buckets
    assert listing(gw, prefix="music/")["prefixes"] == ["music/a/"]

    # pages of one item walk the root in order, a folder of 300 files costing one step
    seen: list[str] = []
    after = ""
    while True:
        page = listing(gw, limit=1, after=after)
        seen += page["prefixes"] + [f["key"] for f in page["files"]]
        if not page["next"]:
            break
        after = page["next"]
    assert seen == ["a/", "big/", "c", "d/", "music/"]

    assert [f["key"] for f in listing(gw, prefix="big/", limit=2)["files"]] == ["big/0000", "big/0001"]
    status, err = call(gw, "GET", "/files?delimiter=" + "x" * 17)
    assert status == 400 and "delimiter" in err["error"]


def test_series_counts_requests_and_bytes(node_factory: Any) -> None:
    (node,) = node_factory(1, **FLAGS)
    data = b"x" * 300_000
    for i in range(20):
        put(node, f"load/{i}", data)
    for i in range(5):
        with urllib.request.urlopen(f"{node.url}/files/load/{i}", timeout=10) as resp:
            assert resp.read() == data

    def counted() -> dict[str, Any]:
        s = call(node, "GET", "/status/series")[1]
        return s if s["totals"]["requests"] >= 25 and s["totals"]["bytes_out"] >= 5 * len(data) else {}

    s = wait_for(counted, timeout=10, message="the requests in the series")
    assert s["node_id"] and s["interval"] == 1.0
    assert s["totals"]["requests"] == 25  # status polls are not client requests
    assert s["totals"]["bytes_in"] == 20 * len(data)
    assert s["totals"]["bytes_out"] == 5 * len(data)
    spans = [b - a for a, b in zip(s["t"][:-1], s["t"][1:], strict=True)]
    assert all(0.5 < x < 3 for x in spans)
    assert sum(s["requests"]) > 0 and max(s["bytes_in"]) > 0  # the rates the charts draw
    assert len(s["t"]) == len(s["requests"]) <= 180


def test_overview_reports_every_node_and_warns_of_a_dead_one(node_factory: Any) -> None:
    nodes = node_factory(3, **FLAGS)
    ids = [n.get_json("/health")["node_id"] for n in nodes]

    def all_answer() -> dict[str, Any]:
        o = call(nodes[0], "GET", "/status/cluster")[1]
        return o if len(o["nodes"]) == 3 and all(s["ok"] for s in o["nodes"]) else {}

    o = wait_for(all_answer, timeout=15, message="three node summaries")
    assert {s["node_id"] for s in o["nodes"]} == set(ids)
    for s in o["nodes"]:
        assert s["disk"]["total"] > 0 and "repair" in s and s["series"]["t"] is not None
    # these test nodes run plain signed HTTP between them: the page must say so
    assert [w["kind"] for w in o["warnings"]] == ["plain"]

    nodes[2].kill()

    def warned() -> list[dict[str, Any]]:
        o = call(nodes[0], "GET", "/status/cluster")[1]
        return [w for w in o["warnings"] if w["kind"] == "unreachable" and w["node"] == ids[2]]

    w = wait_for(warned, timeout=20, message="a warning about the killed node")
    assert ids[2] in w[0]["text"]


def test_overview_warns_of_an_almost_full_disk(node_factory: Any, tmp_path: Any) -> None:
    free = shutil.disk_usage(tmp_path).free
    (node,) = node_factory(1, fsync="never", min_free_bytes=free // 2 + (1 << 20))
    o = call(node, "GET", "/status/cluster")[1]
    disk = [w for w in o["warnings"] if w["kind"] == "disk"]
    assert disk and disk[0]["level"] == "warning" and "disk almost full" in disk[0]["text"], o["warnings"]


def test_overview_warns_that_peers_refuse_a_node_with_the_wrong_secret(tmp_path: Any) -> None:
    a, b = start_nodes(tmp_path, 2, cluster_secret="right", **FLAGS)
    try:
        b_id = b.get_json("/health")["node_id"]
        wait_for(lambda: len(b.get_json("/status")["members"]) == 2, 20, message="b joined")
        b.terminate()
        b.args = [*b.args, "--cluster-secret", "wrong"]  # the last flag wins
        b.start()

        def refused() -> list[dict[str, Any]]:
            o = call(b, "GET", "/status/cluster")[1]
            return [w for w in o["warnings"] if w["kind"] == "refused" and w["node"] == b_id]

        w = wait_for(refused, timeout=30, message="the page served by b to say its peers refuse it")
        assert w[0]["level"] == "danger"
        assert "not part of the cluster" in w[0]["text"] and "wrong cluster secret" in w[0]["text"]
    finally:
        a.terminate()
        b.terminate()
