"""`p2pstore bench` through the real command: a tiny run on one local node, and a bad option."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from p2pstore.launcher import child_env
from tests.support.processes import REPO_ROOT


def bench(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "p2pstore", "bench", *args],
        capture_output=True, text=True, env=child_env(), cwd=str(REPO_ROOT), timeout=timeout, check=False,
    )  # fmt: skip


def test_bench_local_node_writes_one_json_line_per_phase(tmp_path: Path) -> None:
    out = tmp_path / "bench.jsonl"
    res = bench(
        "--local", "1", "--phases", "put-4k,get-4k", "--count-4k", "50", "--concurrency", "4",
        "--json", str(out), "--data-dir", str(tmp_path / "nodes"), "--read-quorum", "1",
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["phase"] for r in records] == ["put-4k", "get-4k"]
    for r in records:
        assert r["kind"] == "phase"
        assert r["ops"] == 50
        assert r["ops_per_s"] > 0
        assert r["errors"] == 0
        assert r["read_quorum"] == 1
        assert r["nodes_peak_rss_mib"], r  # the local node's peak RSS was read
        assert r["nodes_cpu_ms_per_op"] is not None and r["client_cpu_ms_per_op"] > 0, r  # CPU too
    assert records[0]["nodes_cpu_ms_per_op"] > 0  # 50 PUTs: several clock ticks of node CPU
    assert 0 < records[0]["host_busy_pct"] <= 100  # the machine's CPUs were busy with them
    assert "put-4k" in res.stdout and "peak RSS" in res.stdout and "; r=1" in res.stdout
    assert "host busy" in res.stdout


def test_bench_bad_option_is_one_clear_line(tmp_path: Path) -> None:
    res = bench("--local", "1", "--phases", "get-4k", "--json", str(tmp_path / "x.jsonl"), timeout=30)
    assert res.returncode == 2, res.stdout + res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert lines == ["error: phase get-4k needs put-4k before it"], res.stderr
    assert not (tmp_path / "x.jsonl").exists()  # nothing ran
    res = bench("--local", "1", "--read-quorum", "0", timeout=30)
    assert res.returncode == 2
    assert res.stderr.strip() == "error: --read-quorum must be at least 1", res.stderr
    res = bench("--concurrency", "many", timeout=30)
    assert res.returncode == 2
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--concurrency" in lines[0], res.stderr


def test_bench_s3_api_on_local_nodes(tmp_path: Path) -> None:
    out = tmp_path / "bench.jsonl"
    res = bench(
        "--local", "3", "--api", "s3", "--phases", "put-4k,get-4k,put-1m,get-1m", "--count-4k", "40",
        "--count-1m", "6", "--concurrency", "4", "--fsync", "never", "--json", str(out), timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert "s3 API at" in res.stdout and "Traceback" not in res.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["phase"], r["ops"], r["errors"]) for r in records] == [
        ("put-4k", 40, 0), ("get-4k", 40, 0), ("put-1m", 6, 0), ("get-1m", 6, 0)
    ]  # fmt: skip


def test_bench_s3_api_signs_with_the_key_given(node_factory, tmp_path: Path) -> None:
    """Against running nodes: the objects land in the bucket through S3, and a wrong secret is
    refused on every request (the bench reports the failures and exits non-zero)."""
    from tests.integration.test_s3 import ADMIN_ID, ADMIN_SECRET, client, import_key

    nodes = node_factory(3, s3=True, fsync="never", gossip_interval=0.2)
    import_key(nodes[0], ADMIN_ID, ADMIN_SECRET, "admin", admin=True)
    urls = ",".join(n.s3_url for n in nodes)
    common = [
        "--url",
        urls,
        "--api",
        "s3",
        "--phases",
        "put-4k,get-4k",
        "--count-4k",
        "20",
        "--bucket",
        "bbb",
    ]
    res = bench(*common, "--access-key", ADMIN_ID, "--secret-key", ADMIN_SECRET, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    listing = client(nodes[2]).list_objects_v2(Bucket="bbb")
    assert listing["KeyCount"] == 20 and all(o["Size"] == 4096 for o in listing["Contents"])
    res = bench(*common, "--access-key", ADMIN_ID, "--secret-key", "not-the-secret-0000", timeout=120)
    assert res.returncode == 1 and "SignatureDoesNotMatch" in res.stderr, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    assert client(nodes[0]).list_objects_v2(Bucket="bbb")["KeyCount"] == 20  # nothing more stored
