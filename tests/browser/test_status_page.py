"""The status page in a real headless Chromium against a real 3-node cluster."""

from __future__ import annotations

import contextlib
import hashlib
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.fixtures import NodeFactory
from tests.support.processes import NodeProcess, start_nodes, wait_for

from .conftest import ARTIFACTS

CLUSTER_FLAGS: dict[str, Any] = {"fsync": "never", "gossip_interval": 0.2}
HOSTILE_KEYS = ["a<script>alert(1)</script>", "<img src=x onerror=alert(1)>"]


def expect(target: Any) -> Any:
    from playwright.sync_api import expect as pw_expect

    return pw_expect(target)


def converge(nodes: list[NodeProcess]) -> list[NodeProcess]:
    """Wait until every node sees all the others alive (when membership is reported)."""

    def converged() -> bool:
        for n in nodes:
            members = n.get_json("/status").get("members")
            if members is None:
                return True  # nothing to wait for
            if sum(m["state"] == "alive" for m in members) < 3:
                return False
        return True

    wait_for(converged, timeout=15, message="3 alive members on every node")
    return nodes


@contextlib.contextmanager
def three_nodes(path: Path, s3: bool = False) -> Iterator[list[NodeProcess]]:
    """A converged 3-node cluster (with the S3 port when ``s3``), stopped afterwards."""
    nodes = start_nodes(path, 3, s3=s3, **CLUSTER_FLAGS)
    try:
        yield converge(nodes)
    finally:
        for n in nodes:
            n.terminate()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[NodeProcess]]:
    """One 3-node cluster for the tests that do not break it (saves a cluster start per test)."""
    pytest.importorskip("p2pstore.server")
    with three_nodes(tmp_path_factory.mktemp("shared")) as nodes:
        yield nodes


def put(node: NodeProcess, key: str, data: bytes) -> None:
    path = "/".join(urllib.parse.quote(seg, safe="") for seg in key.split("/"))
    req = urllib.request.Request(f"{node.url}/files/{path}", data=data, method="PUT")
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 201


def row(page: Any, key: str) -> Any:
    """The files-table row of ``key`` (matched on its data attribute, not on HTML)."""
    assert '"' not in key and "\\" not in key
    return page.locator(f'#files tr.file-row[data-key="{key}"]')


def test_page_shows_node_cluster_and_fits_a_phone(page: Any, shared: list[NodeProcess]) -> None:
    nodes = shared
    status = nodes[0].get_json("/status")
    page.goto(nodes[0].url + "/")
    expect(page).to_have_title(re.compile("p2pstore"))
    expect(page.locator("#node-id")).to_have_text(status["node_id"])
    expect(page.locator("#conn-state")).to_have_text("live")
    if status.get("members") is not None:
        expect(page.locator("#members tr")).to_have_count(3)
        for m in status["members"]:
            expect(page.locator(f'#members tr[data-node-id="{m["id"]}"] .state-badge')).to_have_text("alive")
        expect(page.locator("#recover-node option")).to_have_count(4)  # placeholder + 3 nodes
        wait_for(lambda: nodes[0].get_json("/status").get("leader"), timeout=15, message="a leader")
        leader = nodes[0].get_json("/status")["leader"]
        expect(page.locator(f'#members tr[data-node-id="{leader}"] .leader-badge')).to_be_visible()
        expect(page.locator("#leader")).to_contain_text(leader)
        expect(page.locator("#leader")).to_contain_text("term")
    # phone-sized: the page must not scroll sideways (wide tables scroll inside their card)
    page.set_viewport_size({"width": 375, "height": 740})
    expect(page.locator("#upload-form")).to_be_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")  # the header is sticky
    page.screenshot(path=str(ARTIFACTS / "dashboard-phone.png"), full_page=True)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"page is {overflow}px wider than a phone screen"


def test_upload_list_download_delete(page: Any, shared: list[NodeProcess]) -> None:
    nodes = shared
    one = b"hello from the browser\n" * 1000
    two = bytes(range(256)) * 300
    page.goto(nodes[0].url + "/")
    page.set_input_files(
        "#upload-file",
        [
            {"name": "one.txt", "mimeType": "text/plain", "buffer": one},
            {"name": "two.bin", "mimeType": "application/octet-stream", "buffer": two},
        ],
    )
    page.fill("#upload-key", "docs/")
    page.click("#upload-btn")
    expect(page.locator('#upload-results li[data-result="ok"]')).to_have_count(2, timeout=15_000)
    expect(page.locator("#upload-results")).to_contain_text("uploaded")
    # the root shows the folder; its files are one click away
    page.locator('#files tr.folder-row[data-prefix="docs/"] .folder-link').click()
    expect(page.locator("#crumbs li.active")).to_have_text("docs")
    expect(row(page, "docs/one.txt")).to_have_count(1)
    expect(row(page, "docs/two.bin")).to_have_count(1)
    expect(row(page, "docs/one.txt")).to_contain_text(hashlib.sha256(one).hexdigest()[:12])
    expect(row(page, "docs/one.txt")).to_contain_text("22.")  # 23000 B -> "22.5 KiB"

    listing = nodes[0].get_json("/files?long=1")
    if listing["files"] and "replicas" in listing["files"][0]:
        # the page polls the listing: it must come to show 3 verified copies and no warning
        cell = row(page, "docs/one.txt").locator("td.replicas")
        expect(cell).to_have_attribute("data-verified", "3", timeout=15_000)
        expect(cell.locator(".replica-ok")).to_have_count(3)
        expect(cell.locator(".replica-warning")).to_have_count(0)

    ARTIFACTS.mkdir(exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")  # the header is sticky
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    with page.expect_download() as dl_info:
        row(page, "docs/two.bin").locator(".download-link").click()
    download = dl_info.value
    assert download.suggested_filename == "two.bin"
    with open(download.path(), "rb") as fh:
        assert fh.read() == two

    dialogs: list[str] = []

    def accept(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    row(page, "docs/one.txt").locator(".delete-btn").click()
    expect(row(page, "docs/one.txt")).to_have_count(0)
    expect(row(page, "docs/two.bin")).to_have_count(1)
    assert dialogs and "docs/one.txt" in dialogs[0]
    assert all(f["key"] != "docs/one.txt" for f in nodes[1].get_json("/files")["files"])


def test_search_filters_by_prefix(page: Any, shared: list[NodeProcess]) -> None:
    nodes = shared
    for key in ("alpha/1", "alpha/2", "beta/1"):
        put(nodes[0], key, key.encode())
    page.goto(nodes[0].url + "/")
    expect(page.locator('#files tr.folder-row[data-prefix="beta/"]')).to_have_count(1)
    page.fill("#search", "alpha/")
    page.click("#search-form button")
    expect(page.locator("#files tr")).to_have_count(2)
    expect(row(page, "alpha/1")).to_have_count(1)
    expect(row(page, "alpha/2")).to_have_count(1)
    expect(page.locator('#files tr.folder-row[data-prefix="beta/"]')).to_have_count(0)


def test_dead_node_turns_red_without_reload(page: Any, node_factory: NodeFactory) -> None:
    nodes = converge(node_factory(3, **CLUSTER_FLAGS))
    victim = nodes[2].get_json("/status")["node_id"]
    page.goto(nodes[0].url + "/")
    badge = page.locator(f'#members tr[data-node-id="{victim}"] .state-badge')
    expect(badge).to_have_text("alive")
    page.evaluate("window.__sameDocument = true")
    plain = page.locator('#warnings .cluster-warning[data-kind="plain"]')  # these nodes run plain HTTP
    expect(plain).to_contain_text("plain HTTP")
    nodes[2].kill()
    expect(badge).to_have_text("dead", timeout=30_000)
    expect(badge).to_have_class(re.compile("text-bg-danger"))
    # the warning at the top names the node; the disk panel says it does not answer
    warning = page.locator(f'#warnings .cluster-warning[data-kind="unreachable"][data-node="{victim}"]')
    expect(warning).to_contain_text(victim, timeout=15_000)
    expect(warning).to_have_class(re.compile("alert-danger"))
    expect(page.locator(f'#disks .disk-row[data-node-id="{victim}"]')).to_contain_text("not answering")
    top = page.locator("#warnings").bounding_box()
    assert top is not None and top["y"] < page.locator("#cluster-section").bounding_box()["y"]
    ARTIFACTS.mkdir(exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")  # the header is sticky
    page.screenshot(path=str(ARTIFACTS / "dashboard-warnings.png"), full_page=True)
    assert page.evaluate("window.__sameDocument === true"), "the page was reloaded"


def test_checkpoint_and_recover_actions(page: Any, shared: list[NodeProcess]) -> None:
    nodes = shared
    ids = {n.get_json("/health")["node_id"] for n in nodes}
    page.goto(nodes[0].url + "/")
    page.click("#checkpoint-btn")
    results = page.locator("#checkpoint-results .checkpoint-result")
    expect(results).to_have_count(len(ids), timeout=15_000)
    expect(page.locator('#checkpoint-results .checkpoint-result[data-ok="1"]')).to_have_count(len(ids))
    shown = {results.nth(i).get_attribute("data-node-id") for i in range(len(ids))}
    assert shown == ids

    # recover: a <select> of members; the node answers a report or a JSON error, shown either way
    target = nodes[1].get_json("/health")["node_id"]
    expect(page.locator(f'#recover-node option[value="{target}"]')).to_have_count(1)
    page.select_option("#recover-node", target)
    page.click("#recover-btn")
    out = page.locator("#recover-result .alert")
    expect(out).to_have_count(1, timeout=30_000)
    # a healthy node: the report in words, not a table of counters
    said = rf"^Recovery of {target} done: nothing was missing \(checked in [\d.]+ s\)$"
    expect(out).to_have_text(re.compile(said))


def test_hostile_keys_render_as_text(page: Any, shared: list[NodeProcess]) -> None:
    nodes = shared
    for key in HOSTILE_KEYS:
        put(nodes[0], key, b"x")
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(nodes[0].url + "/")
    # "a<script>alert(1)</script>" holds a "/": at the root it is the folder "a<script>alert(1)</"
    expect(page.locator(".folder-row .key-text", has_text="a<script>alert(1)<")).to_have_count(1)
    for key in HOSTILE_KEYS:
        page.fill("#search", key)
        page.click("#search-form button")
        expect(page.locator(".file-row .key-text", has_text=key)).to_have_text(key)
    expect(page.locator("#files img")).to_have_count(0)
    expect(page.locator("#files script")).to_have_count(0)
    page.wait_for_timeout(300)  # give an injected handler the chance to fire (it must not)
    assert dialogs == []


def test_api_token_entered_in_the_page(page: Any, node_factory: NodeFactory) -> None:
    nodes = node_factory(1, fsync="never", api_token="s3cret-token")
    with urllib.request.urlopen(nodes[0].url + "/health", timeout=5):
        pass
    urllib.request.urlopen(nodes[0].url + "/", timeout=5).close()  # the page itself is open
    req = urllib.request.Request(
        nodes[0].url + "/files/secret.txt",
        data=b"top secret",
        method="PUT",
        headers={"Authorization": "Bearer s3cret-token"},
    )
    urllib.request.urlopen(req, timeout=5).close()
    page.goto(nodes[0].url + "/")
    expect(page.locator("#conn-state")).to_have_text("offline")
    page.click("#token-form >> xpath=ancestor::details/summary")
    page.fill("#token", "s3cret-token")
    page.click("#token-form button")
    expect(page.locator("#conn-state")).to_have_text("live")
    expect(row(page, "secret.txt")).to_have_count(1)
    with page.expect_download() as dl_info:
        row(page, "secret.txt").locator(".download-link").click()
    with open(dl_info.value.path(), "rb") as fh:
        assert fh.read() == b"top secret"
