"""rclone and restic (the Debian packages, installed by scripts/install-s3-clients) against a real
3-node cluster, configured the way their users configure them for an S3 endpoint of their own."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.test_s3 import ADMIN_ID, ADMIN_SECRET, REGION, MiB, import_key, no_tracebacks
from tests.support.processes import NodeProcess


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (scripts/install-s3-clients installs it with apt-get as root)")
    return path


@pytest.fixture
def cluster(node_factory) -> list[NodeProcess]:
    nodes = node_factory(3, s3=True, fsync="never", gossip_interval=0.2, chunk_size=MiB)
    import_key(nodes[0], ADMIN_ID, ADMIN_SECRET, "admin", admin=True)
    return nodes


def make_tree(root: Path) -> dict[str, bytes]:
    files = {
        "a.txt": b"alpha\n",
        "empty.txt": b"",
        "dir/b.bin": os.urandom(300_000),
        "dir/deeper/c.bin": os.urandom(2 * MiB + 7),
        "dir/big.bin": os.urandom(12 * MiB + 3),  # above the upload cutoff below: multipart
        "spaced name/é.txt": "é\n".encode(),
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


def same_trees(a: Path, b: Path) -> None:
    names = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
    assert names == sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file())
    _match, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    assert not mismatch and not errors, (mismatch, errors)


def run(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 240) -> str:
    proc = subprocess.run(args, capture_output=True, env=env, cwd=cwd, timeout=timeout, check=False)
    assert proc.returncode == 0, (args, proc.stdout.decode()[-2000:], proc.stderr.decode()[-3000:])
    return proc.stdout.decode() + proc.stderr.decode()


def clean_env() -> dict[str, str]:
    """The environment without the caller's AWS_* and RCLONE_* settings (an AWS_CA_BUNDLE, for one,
    makes rclone fail on a plain-HTTP endpoint)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_", "RESTIC_"))}


def restic_env(node: NodeProcess, tmp: Path) -> dict[str, str]:
    """restic's environment for a repository in bucket ``restic-repo`` through ``node``."""
    return {
        **clean_env(),
        "RESTIC_REPOSITORY": f"s3:{node.s3_url}/restic-repo",
        "RESTIC_PASSWORD": "correct horse battery staple",
        "AWS_ACCESS_KEY_ID": ADMIN_ID,
        "AWS_SECRET_ACCESS_KEY": ADMIN_SECRET,
        "AWS_DEFAULT_REGION": REGION,
        "RESTIC_CACHE_DIR": str(tmp / "cache"),
    }


def rclone_env(node: NodeProcess, tmp: Path) -> dict[str, str]:
    return {
        **clean_env(),
        "RCLONE_CONFIG": str(tmp / "rclone.conf"),  # none: the remote comes from the environment
        "RCLONE_CONFIG_P2P_TYPE": "s3",
        "RCLONE_CONFIG_P2P_PROVIDER": "Other",
        "RCLONE_CONFIG_P2P_ENDPOINT": node.s3_url,
        "RCLONE_CONFIG_P2P_ACCESS_KEY_ID": ADMIN_ID,
        "RCLONE_CONFIG_P2P_SECRET_ACCESS_KEY": ADMIN_SECRET,
        "RCLONE_CONFIG_P2P_REGION": REGION,
        "RCLONE_CONFIG_P2P_FORCE_PATH_STYLE": "true",
    }


def test_rclone_sync_both_ways_and_check(cluster: list[NodeProcess], tmp_path: Path) -> None:
    rclone = need("rclone")
    tree = tmp_path / "tree"
    make_tree(tree)
    flags = ["--s3-upload-cutoff", "5M", "--s3-chunk-size", "5M", "--retries", "1", "-v"]
    first, other = rclone_env(cluster[0], tmp_path), rclone_env(cluster[1], tmp_path)
    run([rclone, "mkdir", "p2p:rcl"], first, tmp_path)
    run([rclone, "sync", str(tree), "p2p:rcl/tree", *flags], first, tmp_path)
    out = run([rclone, "check", str(tree), "p2p:rcl/tree"], other, tmp_path)  # with hashes (MD5)
    assert "0 differences found" in out and "hashes could not be checked" not in out, out
    # a change, a removal, an addition: sync sends only those, check agrees again
    (tree / "a.txt").write_bytes(b"changed\n")
    (tree / "dir/b.bin").unlink()
    (tree / "new.txt").write_bytes(b"new\n")
    run([rclone, "sync", str(tree), "p2p:rcl/tree", *flags], other, tmp_path)
    out = run([rclone, "check", str(tree), "p2p:rcl/tree"], first, tmp_path)
    assert "0 differences found" in out, out
    listing = run([rclone, "lsf", "-R", "p2p:rcl/tree"], other, tmp_path)
    assert "new.txt" in listing and "dir/b.bin" not in listing
    back = tmp_path / "back"
    run([rclone, "sync", "p2p:rcl/tree", str(back), *flags], rclone_env(cluster[2], tmp_path), tmp_path)
    same_trees(tree, back)
    out = run([rclone, "check", "--download", str(back), "p2p:rcl/tree"], first, tmp_path)
    assert "0 differences found" in out, out
    no_tracebacks(cluster)


def test_restic_backup_check_restore(cluster: list[NodeProcess], tmp_path: Path) -> None:
    restic = need("restic")
    tree = tmp_path / "tree"
    make_tree(tree)
    env = restic_env(cluster[0], tmp_path)
    opts = ["-o", "s3.bucket-lookup=path"]
    run([restic, *opts, "init"], env, tmp_path)
    run([restic, *opts, "backup", "tree"], env, tmp_path)
    other = {**env, "RESTIC_REPOSITORY": f"s3:{cluster[1].s3_url}/restic-repo"}
    run([restic, *opts, "check", "--read-data"], other, tmp_path)
    target = tmp_path / "restored"
    run([restic, *opts, "restore", "latest", "--target", str(target)], other, tmp_path)
    same_trees(tree, target / "tree")
    (tree / "second.txt").write_bytes(b"second backup\n")
    run([restic, *opts, "backup", "tree"], other, tmp_path)
    snapshots = run([restic, *opts, "snapshots"], env, tmp_path)
    assert "2 snapshots" in snapshots, snapshots
    no_tracebacks(cluster)
