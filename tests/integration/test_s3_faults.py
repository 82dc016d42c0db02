"""Real S3 clients under faults on a real 3-node cluster: rclone and restic keep going when one
node is SIGKILLed in the middle of their run (writes need W=2 of 3), and with two of three nodes
down every client still reads everything back, byte-identical, through the survivor."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.test_s3 import (
    ADMIN_ID,
    ADMIN_SECRET,
    REGION,
    MiB,
    aws,
    client,
    import_key,
    no_tracebacks,
)
from tests.integration.test_s3_tools import clean_env, make_tree, need, rclone_env, run, same_trees
from tests.support.processes import NodeProcess, wait_for

BWLIMIT = "3M"  # bytes per second: slow enough that the kill lands while the client is still sending


@pytest.fixture
def cluster(node_factory) -> list[NodeProcess]:
    nodes = node_factory(3, s3=True, fsync="never", gossip_interval=0.2, chunk_size=MiB)
    import_key(nodes[0], ADMIN_ID, ADMIN_SECRET, "admin", admin=True)
    return nodes


def object_count(node: NodeProcess, bucket: str) -> int:
    listing = client(node).list_objects_v2(Bucket=bucket)
    return int(listing.get("KeyCount", 0))


def run_with_kill(
    args: list[str], env: dict[str, str], cwd: Path, when: Callable[[], bool], victim: NodeProcess
) -> str:
    """Run a client; SIGKILL ``victim`` once ``when()`` says the client is under way (some objects
    stored, more to come), then require the client to finish with success."""
    proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: when() or proc.poll() is not None, timeout=120, message="the client under way")
        assert proc.poll() is None, "the client finished before the kill: slow it down further"
        victim.kill()
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = out.decode(errors="replace")
    assert proc.returncode == 0, (args, text[-4000:])
    return text


def big_tree(root: Path) -> dict[str, bytes]:
    """make_tree plus enough small files and bytes that a bandwidth-limited upload takes seconds."""
    files = make_tree(root)
    for i in range(12):
        data = os.urandom(700_000 + i)
        (root / "many" / f"f{i:02}.bin").parent.mkdir(parents=True, exist_ok=True)
        (root / "many" / f"f{i:02}.bin").write_bytes(data)
        files[f"many/f{i:02}.bin"] = data
    return files


def test_rclone_with_a_node_killed_then_two_down(cluster: list[NodeProcess], tmp_path: Path) -> None:
    rclone = need("rclone")
    tree = tmp_path / "tree"
    big_tree(tree)
    flags = ["--s3-upload-cutoff", "5M", "--s3-chunk-size", "5M", "--transfers", "2", "-v"]
    gateway = rclone_env(cluster[0], tmp_path)
    run([rclone, "mkdir", "p2p:rcl"], gateway, tmp_path)
    # sync up through node 0 while node 2 is SIGKILLed mid-run
    run_with_kill(
        [rclone, "sync", str(tree), "p2p:rcl/tree", "--bwlimit", BWLIMIT, *flags],
        gateway, tmp_path, lambda: object_count(cluster[0], "rcl") >= 3, cluster[2],
    )  # fmt: skip
    out = run([rclone, "check", str(tree), "p2p:rcl/tree"], rclone_env(cluster[1], tmp_path), tmp_path)
    assert "0 differences found" in out and "hashes could not be checked" not in out, out
    # node 2 back; sync down through node 1 while node 0 is SIGKILLed mid-run
    cluster[2].start()
    cluster[2].wait_ready(60)
    back = tmp_path / "back"
    run_with_kill(
        [rclone, "sync", "p2p:rcl/tree", str(back), "--bwlimit", BWLIMIT, *flags],
        rclone_env(cluster[1], tmp_path), tmp_path,
        lambda: back.is_dir() and sum(1 for p in back.rglob("*") if p.is_file()) >= 2, cluster[0],
    )  # fmt: skip
    same_trees(tree, back)
    # two of three down (0 and 2): reads through node 1 alone
    cluster[2].kill()
    only = rclone_env(cluster[1], tmp_path)
    down = tmp_path / "down"
    run([rclone, "copy", "p2p:rcl/tree", str(down), *flags], only, tmp_path)
    same_trees(tree, down)
    out = run([rclone, "check", str(tree), "p2p:rcl/tree"], only, tmp_path)
    assert "0 differences found" in out, out
    no_tracebacks(cluster)


def test_restic_with_a_node_killed_then_two_down(cluster: list[NodeProcess], tmp_path: Path) -> None:
    restic = need("restic")
    tree = tmp_path / "tree"
    big_tree(tree)
    env = {
        **clean_env(),
        "RESTIC_REPOSITORY": f"s3:{cluster[0].s3_url}/restic-repo",
        "RESTIC_PASSWORD": "correct horse battery staple",
        "AWS_ACCESS_KEY_ID": ADMIN_ID,
        "AWS_SECRET_ACCESS_KEY": ADMIN_SECRET,
        "AWS_DEFAULT_REGION": REGION,
        "RESTIC_CACHE_DIR": str(tmp_path / "cache"),
    }
    opts = ["-o", "s3.bucket-lookup=path"]
    run([restic, *opts, "init"], env, tmp_path)
    before = object_count(cluster[0], "restic-repo")  # config and keys
    # backup through node 0 while node 1 is SIGKILLed mid-run
    run_with_kill(
        [restic, *opts, "--limit-upload", "3000", "backup", "tree"],
        env, tmp_path, lambda: object_count(cluster[0], "restic-repo") > before + 1, cluster[1],
    )  # fmt: skip
    run([restic, *opts, "check", "--read-data"], env, tmp_path)
    # two of three down: check, restore and snapshots through node 2 alone, without a lock (a lock
    # is a write, and writes need two replicas)
    cluster[0].kill()
    only = {
        **env,
        "RESTIC_REPOSITORY": f"s3:{cluster[2].s3_url}/restic-repo",
        "RESTIC_CACHE_DIR": str(tmp_path / "c2"),
    }
    run([restic, *opts, "--no-lock", "check", "--read-data"], only, tmp_path)
    target = tmp_path / "restored"
    run([restic, *opts, "--no-lock", "restore", "latest", "--target", str(target)], only, tmp_path)
    same_trees(tree, target / "tree")
    assert "1 snapshots" in run([restic, *opts, "--no-lock", "snapshots"], only, tmp_path)
    no_tracebacks(cluster)


def test_aws_cli_and_boto3_read_with_two_of_three_down(cluster: list[NodeProcess], tmp_path: Path) -> None:
    pytest.importorskip("awscli")
    s3 = client(cluster[0])
    s3.create_bucket(Bucket="keep")
    big = tmp_path / "big.bin"
    big.write_bytes(data := os.urandom(20 * MiB + 5))
    s3.upload_file(str(big), "keep", "big.bin")  # multipart above boto3's 8 MiB threshold
    s3.put_object(Bucket="keep", Key="small.txt", Body=b"small\n")
    cluster[0].kill()
    cluster[1].kill()
    last = client(cluster[2])
    last.download_file("keep", "big.bin", str(tmp_path / "boto3.bin"))
    assert (tmp_path / "boto3.bin").read_bytes() == data
    assert last.get_object(Bucket="keep", Key="small.txt")["Body"].read() == b"small\n"
    assert sorted(o["Key"] for o in last.list_objects_v2(Bucket="keep")["Contents"]) == [
        "big.bin",
        "small.txt",
    ]
    aws(cluster[2], "s3", "cp", "s3://keep/big.bin", str(tmp_path / "aws.bin"), cwd=tmp_path)
    assert (tmp_path / "aws.bin").read_bytes() == data
    no_tracebacks(cluster)
