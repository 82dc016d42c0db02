"""The status page's pictures and folder work in a real headless Chromium against real nodes:
charts that move under load, re-sync in words, the folder view with S3 buckets, a 100 MiB
drag-and-drop upload with a moving progress bar, and the 400 px layout. Screenshots go to
test-artifacts/."""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.fixtures import NodeFactory
from tests.support.processes import NodeProcess, wait_for

from .conftest import ARTIFACTS
from .test_status_page import CLUSTER_FLAGS, converge, expect, put, three_nodes

MiB = 1 << 20
ADMIN_ID, ADMIN_SECRET = "AKIDP2PSTOREVIEW0001", "view-secret-0123456789abcdef"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[NodeProcess]]:
    with three_nodes(tmp_path_factory.mktemp("views"), s3=True) as nodes:
        yield nodes


def shot(page: Any, name: str, full: bool = True) -> None:
    """A screenshot for people to look at (a full page from the top: the header is sticky)."""
    ARTIFACTS.mkdir(exist_ok=True)
    if full:
        page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(ARTIFACTS / name), full_page=full)


def chart(page: Any, name: str) -> Any:
    return page.locator(f"#chart-{name} svg.chart-svg")


def load(nodes: list[NodeProcess], stop: threading.Event, seconds: float = 20.0) -> None:
    """Bounded client load on every node: small PUTs and GETs until ``stop`` or ``seconds``."""
    body = os.urandom(256 * 1024)
    deadline = time.monotonic() + seconds
    i = 0
    while not stop.is_set() and time.monotonic() < deadline:
        node = nodes[i % len(nodes)]
        put(node, f"load/{i % 50}", body)
        with urllib.request.urlopen(f"{node.url}/files/load/{i % 50}", timeout=10) as resp:
            resp.read()
        i += 1


def test_charts_move_under_load(page: Any, cluster: list[NodeProcess]) -> None:
    ids = [n.get_json("/health")["node_id"] for n in cluster]
    page.goto(cluster[0].url + "/")
    expect(chart(page, "requests")).to_have_count(1)
    expect(page.locator("#disks .disk-row .disk-bar[role=progressbar]")).to_have_count(3)
    for node_id in ids:
        expect(page.locator(f'#disks .disk-row[data-node-id="{node_id}"]')).to_contain_text("free of")
    before = chart(page, "requests").locator("polyline").first.get_attribute("points")
    stop = threading.Event()
    worker = threading.Thread(target=load, args=(cluster, stop), daemon=True)
    worker.start()
    try:
        # every node's line rises: the page draws each node's own counters, fetched through node 0
        for node_id in ids:
            line = chart(page, "requests").locator(f'polyline[data-node-id="{node_id}"]')
            expect(line).to_have_count(1)
            wait_for(lambda line=line: max_y_rise(line.get_attribute("points")) > 0, timeout=20,
                     message=f"the requests line of {node_id} to rise")  # fmt: skip
        wait_for(lambda: float(chart(page, "mbps").get_attribute("data-max")) > 0.1, timeout=20,
                 message="MB/s above 0.1")  # fmt: skip
        assert float(chart(page, "requests").get_attribute("data-max")) >= 1
        after = chart(page, "requests").locator("polyline").first.get_attribute("points")
        assert after != before, "the chart did not move"
        shot(page, "charts-under-load.png")
    finally:
        stop.set()
        worker.join(timeout=30)


def max_y_rise(points: str | None) -> float:
    """How far above the chart's baseline (its lowest point) a polyline's highest point is."""
    ys = [float(p.split(",")[1]) for p in (points or "").split()]
    return max(ys) - min(ys) if ys else 0.0


def test_folder_view_with_breadcrumbs_and_buckets(page: Any, cluster: list[NodeProcess]) -> None:
    boto3 = pytest.importorskip("boto3")
    from botocore.config import Config

    admin = {"access_key_id": ADMIN_ID, "secret": ADMIN_SECRET, "name": "admin", "admin": True}
    req = urllib.request.Request(cluster[0].url + "/s3/keys", data=json.dumps(admin).encode(), method="POST")
    urllib.request.urlopen(req, timeout=10).close()
    s3 = boto3.client("s3", endpoint_url=cluster[0].s3_url, aws_access_key_id=ADMIN_ID,
                      aws_secret_access_key=ADMIN_SECRET, region_name="us-east-1",
                      config=Config(s3={"addressing_style": "path"}))  # fmt: skip
    s3.create_bucket(Bucket="photos")
    s3.put_object(Bucket="photos", Key="2026/beach.jpg", Body=b"jpeg")
    s3.create_bucket(Bucket="empty-bucket")
    for key in ("projects/2026/report-final.pdf", "projects/2026/budget.xlsx", "projects/readme.txt"):
        put(cluster[0], key, key.encode())

    page.goto(cluster[1].url + "/")  # any node
    folder = page.locator('#files tr.folder-row[data-prefix="projects/"]')
    expect(folder).to_have_count(1)
    expect(folder.locator(".bucket-badge")).to_have_count(0)
    photos = page.locator('#files tr.folder-row[data-prefix="photos/"]')
    expect(photos.locator(".bucket-badge")).to_have_text("S3 bucket")
    expect(page.locator('#files tr.folder-row[data-prefix="empty-bucket/"] .bucket-badge')).to_have_count(1)
    expect(page.locator('#files tr.file-row[data-key="projects/readme.txt"]')).to_have_count(0)
    shot(page, "folders-root.png")

    folder.locator(".folder-link").click()
    expect(page.locator("#crumbs li")).to_have_text(["all files", "projects"])
    readme = page.locator('#files tr.file-row[data-key="projects/readme.txt"] .key-text')
    expect(readme).to_have_text("readme.txt")
    page.locator('#files tr.folder-row[data-prefix="projects/2026/"] .folder-link').click()
    expect(page.locator("#crumbs li")).to_have_text(["all files", "projects", "2026"])
    expect(page.locator("#files tr.file-row")).to_have_count(2)
    expect(page.locator("#drop-folder")).to_have_text("projects/2026/")
    shot(page, "folders-inside.png")
    page.locator('#crumbs li[data-folder="projects/"] a').click()
    expect(page.locator("#crumbs li")).to_have_text(["all files", "projects"])
    page.locator('#crumbs li[data-folder=""] a').click()
    expect(photos).to_have_count(1)
    photos.locator(".folder-link").click()
    expect(page.locator('#files tr.folder-row[data-prefix="photos/2026/"]')).to_have_count(1)


def test_drop_a_100_mib_file_progress_moves_and_bytes_match(
    page: Any, cluster: list[NodeProcess], tmp_path: Path
) -> None:
    path = tmp_path / "big.bin"
    digest = hashlib.sha256()
    with path.open("wb") as fh:
        for _ in range(100):
            piece = os.urandom(MiB)
            digest.update(piece)
            fh.write(piece)
    page.goto(cluster[0].url + "/")
    page.evaluate("""() => {
        window.__progress = [];
        new MutationObserver((changes) => {
            for (const c of changes) {
                if (c.target.matches && c.target.matches('#upload-results .progress-bar')) {
                    window.__progress.push(Number(c.target.getAttribute('aria-valuenow')));
                }
            }
        }).observe(document.getElementById('upload-results'),
                   {subtree: true, attributes: true, attributeFilter: ['aria-valuenow']});
    }""")
    page.fill("#upload-key", "dropped/")
    # a disk-backed File (as a drop from the desktop gives), handed to the drop zone's drop event
    page.set_input_files("#upload-file", str(path))
    transfer = page.evaluate_handle("""() => {
        const dt = new DataTransfer();
        dt.items.add(document.getElementById('upload-file').files[0]);
        return dt;
    }""")
    page.dispatch_event("#dropzone", "dragenter", {"dataTransfer": transfer})
    expect(page.locator("#dropzone")).to_have_class(re.compile("drag-over"))
    page.dispatch_event("#dropzone", "drop", {"dataTransfer": transfer})
    item = page.locator('#upload-results li[data-key="dropped/big.bin"]')
    expect(item).to_have_count(1)
    moving = "Math.max(0, ...window.__progress.filter(v => v < 100))"
    wait_for(lambda: page.evaluate(moving) > 0, timeout=60, message="the progress bar to move")
    page.locator("#upload-section").scroll_into_view_if_needed()
    shot(page, "upload-progress.png", full=False)
    expect(item).to_have_attribute("data-result", "ok", timeout=180_000)
    expect(item).to_contain_text("stored on")
    seen = page.evaluate("window.__progress")
    between = sorted({v for v in seen if 0 < v < 100})
    assert len(between) >= 3, f"progress bar values seen: {seen}"
    assert seen == sorted(seen), "the progress bar went backwards"

    # byte-identical on every node's own copy
    for node in cluster:

        def local_sha(node: NodeProcess = node) -> str:
            h = hashlib.sha256()
            url = f"{node.url}/files/{urllib.parse.quote('dropped/big.bin')}?local=1"
            with urllib.request.urlopen(url, timeout=60) as resp:
                while piece := resp.read(MiB):
                    h.update(piece)
            return h.hexdigest()

        want = digest.hexdigest()
        assert wait_for(lambda f=local_sha, w=want: f() == w, timeout=60, message="a complete local copy")
    expect(page.locator('#files tr.folder-row[data-prefix="dropped/"]')).to_have_count(1)


def test_layout_at_400_px(page: Any, cluster: list[NodeProcess]) -> None:
    long_key = "reports/quarterly-summary-of-everything-the-cluster-stored-this-year-2026-final.tar.gz"
    put(cluster[0], long_key, b"long")
    put(cluster[0], "reports/a.txt", b"a")
    page.set_viewport_size({"width": 400, "height": 860})
    page.goto(cluster[0].url + "/")
    page.locator('#files tr.folder-row[data-prefix="reports/"] .folder-link').click()
    cell = page.locator(f'#files tr.file-row[data-key="{long_key}"] td.key-cell')
    expect(cell).to_be_visible()
    expect(page.locator("#chart-requests svg")).to_have_count(1)
    box = cell.bounding_box()
    assert box is not None and box["width"] >= 300, f"key column squeezed to {box}"
    line = float(cell.evaluate("e => parseFloat(getComputedStyle(e).lineHeight) || 24"))
    assert box["height"] <= 3.5 * line, f"the key wraps into {box['height'] / line:.1f} lines"
    # words stay whole: no line break inside "quarterly" or "everything"
    words = cell.evaluate("""e => {
        const r = document.createRange(); const t = e.querySelector('.key-text');
        const text = t.textContent; const tops = [];
        const walker = document.createTreeWalker(t, NodeFilter.SHOW_TEXT);
        let n; while ((n = walker.nextNode())) {
          for (let i = 0; i < n.length; i++) { r.setStart(n, i); r.setEnd(n, i + 1);
            tops.push([n.data[i], Math.round(r.getBoundingClientRect().top)]); } }
        const lines = []; let cur = ''; let top = null;
        for (const [ch, y] of tops) {
          if (top !== null && y !== top) { lines.push(cur); cur = ''; }
          cur += ch; top = y; }
        lines.push(cur); return lines; }""")
    assert "".join(words) == long_key.removeprefix("reports/")  # shown inside its folder
    for ln in words[:-1]:
        assert ln[-1] in "/-_.", f"a line of the key ends inside a word: {words}"
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"page is {overflow}px wider than 400 px"
    shot(page, "dashboard-400px.png")
    page.locator("#files-section").screenshot(path=str(ARTIFACTS / "files-400px.png"))


def test_resync_in_words_and_its_chart(page: Any, node_factory: NodeFactory) -> None:
    nodes = converge(node_factory(3, repair_rate=3_000_000, chunk_size=MiB, **CLUSTER_FLAGS))
    victim = nodes[2]
    victim_id = victim.get_json("/health")["node_id"]
    victim.kill()

    def dead() -> bool:
        members = nodes[0].get_json("/status")["members"]
        return any(m["id"] == victim_id and m["state"] == "dead" for m in members)

    wait_for(dead, timeout=20, message=f"{victim_id} dead")
    body = os.urandom(4 * MiB)
    for i in range(4):
        put(nodes[0], f"missed/{i}", body)
    page.goto(nodes[0].url + "/")
    victim.start()
    victim.wait_ready(30)
    text = page.locator(f'#repair .repair-line[data-node-id="{victim_id}"] .repair-text')
    # the sentence and the warning come from the same poll: checked together, in the page
    page.wait_for_function(
        """id => {
            const t = document.querySelector(`#repair .repair-line[data-node-id="${id}"] .repair-text`);
            const w = document.querySelector('#warnings .cluster-warning[data-kind="under-replicated"]');
            const sentence = new RegExp("^re-syncing " + id + ": [0-9.]+ (kB|MB|B) of [0-9.]+ MB");
            const said = t && sentence.test(t.textContent);
            return said && w && w.textContent.includes(id);
        }""",
        arg=victim_id,
        timeout=30_000,
    )
    wait_for(lambda: float(chart(page, "repair").get_attribute("data-max")) > 0, timeout=20,
             message="the re-sync chart to rise")  # fmt: skip
    shot(page, "resync.png")
    expect(text).to_have_text(re.compile("every copy it should hold is in place"), timeout=60_000)
