"""A file's versions on the status page (download one, restore one, delete markers, 400 px),
and one S3 bucket seen the same way from boto3, the native API, the CLI and the page, all
against a real 3-node cluster in headless Chromium. Screenshots go to test-artifacts/."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.processes import NodeProcess, run_cli, wait_for

from .conftest import ARTIFACTS
from .test_status_page import expect, put, three_nodes

ADMIN_ID, ADMIN_SECRET = "AKIDP2PSTOREVERS0001", "versions-secret-0123456789abcd"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[NodeProcess]]:
    with three_nodes(tmp_path_factory.mktemp("versions-page"), s3=True) as nodes:
        yield nodes


def native(node: NodeProcess, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(node.url + path, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def versions(node: NodeProcess, key: str) -> list[dict[str, Any]]:
    status, body = native(node, "GET", f"/files/{key}?versions=1")
    return json.loads(body)["versions"] if status == 200 else []


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")  # the header is sticky
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def open_versions(page: Any, node: NodeProcess, folder: str, key: str) -> Any:
    page.goto(node.url + "/")
    page.locator(f'#files tr.folder-row[data-prefix="{folder}"] .folder-link').click()
    page.locator(f'#files tr.file-row[data-key="{key}"] .versions-btn').click()
    expect(page.locator("#versions-panel")).to_be_visible()
    return page.locator("#versions tr.version-row")


def enable_versioning(cluster: list[NodeProcess], folder: str) -> None:
    body = json.dumps({"status": "Enabled"}).encode()
    assert native(cluster[0], "PUT", f"/versioning/{folder}", body)[0] == 200

    def everywhere() -> bool:
        states = [json.loads(native(n, "GET", f"/versioning/{folder}")[1])["status"] for n in cluster]
        return states == ["Enabled"] * len(cluster)

    wait_for(everywhere, timeout=10, message=f"versioning of {folder} Enabled on every node")


def test_versions_download_and_restore(page: Any, cluster: list[NodeProcess]) -> None:
    enable_versioning(cluster, "notes")
    key = "notes/plan.bin"
    bodies = [os.urandom(1000 + 1000 * i) for i in range(3)]  # oldest first, each a different size
    for i, body in enumerate(bodies):
        put(cluster[i], key, body)  # through each node in turn
    wait_for(lambda: len(versions(cluster[1], key)) == 3, timeout=15, message="3 versions on node 1")
    listed = versions(cluster[1], key)
    oldest = listed[-1]["version"]

    rows = open_versions(page, cluster[1], "notes/", key)
    expect(rows).to_have_count(3)
    expect(page.locator("#versions-key")).to_have_text(key)
    expect(page.locator("#versions-status")).to_have_text("versioning Enabled")
    expect(rows.nth(0).locator(".version-current")).to_have_text("current")
    expect(page.locator("#versions .version-current")).to_have_count(1)
    for row, v in zip([rows.nth(i) for i in range(3)], listed, strict=True):
        expect(row).to_have_attribute("data-version", v["version"])
        expect(row.locator(".version-size")).to_have_attribute("title", f"{v['size']} bytes")
        expect(row.locator(".version-time")).not_to_have_text("—")
    expect(rows.nth(0).locator(".version-restore")).to_have_count(0)  # already current
    expect(page.locator("#versions .version-restore")).to_have_count(2)

    with page.expect_download() as dl_info:
        rows.nth(2).locator(".version-download").click()
    assert dl_info.value.suggested_filename == "plan.bin"
    with open(dl_info.value.path(), "rb") as fh:
        assert fh.read() == bodies[0]

    rows.nth(2).locator(".version-restore").click()
    expect(page.locator("#messages .msg-text").last).to_contain_text(f"Restored {key} to version {oldest}")
    # the oldest is current again, with its own id; the page re-listed without a reload
    expect(rows.nth(0)).to_have_attribute("data-version", oldest)
    expect(rows.nth(0).locator(".version-current")).to_have_count(1)
    for node in cluster:
        assert native(node, "GET", f"/files/{key}") == (200, bodies[0])
    expect(page.locator(f'#files tr.file-row[data-key="{key}"] td:nth-child(2)')).to_have_attribute(
        "title", f"{len(bodies[0])} bytes"
    )
    shot(page, "versions.png")

    # deleted on the page (the question says a marker is written): gone from the listing, its
    # versions still reachable by key, the marker shown
    dialogs: list[str] = []

    def accept(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    page.locator(f'#files tr.file-row[data-key="{key}"] .delete-btn').click()
    expect(page.locator(f'#files tr.file-row[data-key="{key}"]')).to_have_count(0)
    assert dialogs and "delete marker" in dialogs[0] and key in dialogs[0], dialogs
    wait_for(lambda: versions(cluster[2], key)[:1] and versions(cluster[2], key)[0]["delete_marker"],
             timeout=15, message="the delete marker on node 2")  # fmt: skip
    page.goto(cluster[2].url + "/")
    expect(page.locator("#page-info")).to_have_text("page 1")  # the listing is in
    # nothing current is left in notes/: the folder is not listed
    expect(page.locator('#files tr.folder-row[data-prefix="notes/"]')).to_have_count(0)
    page.fill("#versions-input", key)
    page.locator("#versions-form button").click()
    marker = page.locator('#versions tr.version-row[data-delete-marker="1"]')
    expect(marker).to_have_count(1)
    expect(marker.locator(".version-marker")).to_have_text("delete marker")
    expect(marker.locator(".version-download, .version-restore")).to_have_count(0)
    newest = page.locator('#versions tr.version-row[data-delete-marker="0"]').first
    newest.locator(".version-restore").click()
    expect(page.locator('#files tr.folder-row[data-prefix="notes/"]')).to_have_count(1)  # back in the listing
    assert native(cluster[1], "GET", f"/files/{key}") == (200, bodies[0])

    # an unknown key: a red line in the panel, not a broken page
    page.fill("#versions-input", "notes/never-written.txt")
    page.locator("#versions-form button").click()
    expect(page.locator("#versions .versions-error")).to_contain_text("no file and no versions")


def test_versions_view_at_400_px(page: Any, cluster: list[NodeProcess]) -> None:
    enable_versioning(cluster, "phone")
    key = "phone/a-rather-long-file-name-for-a-small-screen.txt"
    for body in (b"first", b"second version", b"third and current"):
        put(cluster[0], key, body)
    wait_for(lambda: len(versions(cluster[0], key)) == 3, timeout=15, message="3 versions")
    page.set_viewport_size({"width": 400, "height": 860})
    rows = open_versions(page, cluster[0], "phone/", key)
    expect(rows).to_have_count(3)
    put(cluster[2], key, b"a fourth, through another node")  # the open panel follows without a click
    expect(rows).to_have_count(4)
    expect(rows.nth(0).locator(".version-size")).to_have_attribute("title", "30 bytes")
    for i in range(3):
        for part in (".version-cell", ".version-time", ".version-size", ".version-download"):
            box = rows.nth(i).locator(part).bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 400, (part, box)
    id_box = rows.nth(0).locator(".version-cell").bounding_box()
    assert id_box is not None and id_box["width"] >= 300, f"version id squeezed to {id_box}"
    # the file row's three buttons never cover its replica list
    file_row = page.locator(f'#files tr.file-row[data-key="{key}"]')
    btns = file_row.locator("td.btn-row").bounding_box()
    assert btns is not None
    for i in range(3):
        rep = file_row.locator("td.replicas .replica").nth(i).bounding_box()
        assert rep is not None
        apart = btns["y"] >= rep["y"] + rep["height"] or btns["x"] >= rep["x"] + rep["width"]
        assert apart, f"buttons {btns} overlap replica {rep}"
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"page is {overflow}px wider than 400 px"
    page.locator("#files-section").screenshot(path=str(ARTIFACTS / "versions-400px.png"))


def test_one_bucket_seen_from_s3_native_cli_and_page(page: Any, cluster: list[NodeProcess]) -> None:
    """Issue 21: the same bucket through boto3 (S3 port), GET /files, `p2pstore ls` and the page."""
    boto3 = pytest.importorskip("boto3")
    from botocore.config import Config

    admin = {"access_key_id": ADMIN_ID, "secret": ADMIN_SECRET, "name": "admin", "admin": True}
    assert native(cluster[0], "POST", "/s3/keys", json.dumps(admin).encode())[0] in (200, 201)
    s3 = boto3.client("s3", endpoint_url=cluster[0].s3_url, aws_access_key_id=ADMIN_ID,
                      aws_secret_access_key=ADMIN_SECRET, region_name="us-east-1",
                      config=Config(s3={"addressing_style": "path"}))  # fmt: skip
    s3.create_bucket(Bucket="shared-data")
    objects = {"readme.txt": b"hello from boto3", "logs/2026-12-03.log": os.urandom(5000)}
    for name, body in objects.items():
        s3.put_object(Bucket="shared-data", Key=name, Body=body)
    want = {f"shared-data/{name}" for name in objects}

    # the native API on another node: same keys, sizes and bytes
    def native_keys() -> dict[str, int]:
        status, body = native(cluster[1], "GET", "/files?prefix=shared-data/")
        return {f["key"]: f["size"] for f in json.loads(body)["files"]} if status == 200 else {}

    wait_for(lambda: set(native_keys()) == want, timeout=15, message="the bucket's keys on node 1")
    assert native_keys() == {f"shared-data/{n}": len(b) for n, b in objects.items()}
    for name, body in objects.items():
        assert native(cluster[2], "GET", f"/files/shared-data/{name}") == (200, body)

    # the CLI (a real process) on the third node
    proc = run_cli("ls", "shared-data/", "--url", cluster[2].url)
    assert proc.returncode == 0, proc.stderr.decode()
    assert set(proc.stdout.decode().split()) == want

    # and back: a native PUT into the bucket is an S3 object
    put(cluster[1], "shared-data/native.txt", b"written natively")
    listed = s3.list_objects_v2(Bucket="shared-data")["Contents"]
    assert {o["Key"] for o in listed} == set(objects) | {"native.txt"}
    assert s3.get_object(Bucket="shared-data", Key="native.txt")["Body"].read() == b"written natively"

    # the page: the bucket is a folder marked "S3 bucket", its files and sub-folder inside
    page.goto(cluster[1].url + "/")
    folder = page.locator('#files tr.folder-row[data-prefix="shared-data/"]')
    expect(folder.locator(".bucket-badge")).to_have_text("S3 bucket")
    folder.locator(".folder-link").click()
    expect(page.locator("#crumbs li .crumb-text")).to_have_text(["all files", "shared-data"])
    expect(page.locator('#crumbs li[data-folder="shared-data/"] .bucket-badge')).to_have_text("S3")
    expect(page.locator('#files tr.folder-row[data-prefix="shared-data/logs/"]')).to_have_count(1)
    readme = page.locator('#files tr.file-row[data-key="shared-data/readme.txt"]')
    expect(readme.locator(".key-text")).to_have_text("readme.txt")
    expect(page.locator("#files tr.file-row")).to_have_count(2)  # readme.txt and native.txt
    for chart in ("requests", "mbps", "repair"):  # the axis labels of small rates stay distinct
        labels = page.locator(f"#chart-{chart} svg.chart-svg .chart-label")
        expect(labels.first).to_be_visible()
        texts = labels.all_text_contents()
        assert len(texts) == len(set(texts)), f"{chart} axis labels repeat: {texts}"
    shot(page, "bucket-everywhere.png")
    with page.expect_download() as dl_info:
        readme.locator(".download-link").click()
    with open(dl_info.value.path(), "rb") as fh:
        assert fh.read() == objects["readme.txt"]
    page.locator('#files tr.folder-row[data-prefix="shared-data/logs/"] .folder-link').click()
    expect(page.locator("#crumbs .bucket-badge")).to_have_count(1)  # the bucket's crumb only
    log_key = "shared-data/logs/2026-12-03.log"
    expect(page.locator(f'#files tr.file-row[data-key="{log_key}"] td:nth-child(2)')).to_have_attribute(
        "title", f"{len(objects['logs/2026-12-03.log'])} bytes"
    )
