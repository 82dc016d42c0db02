"""Folders through the real command: recursive put/get and `sync` both ways, against real nodes."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from p2pstore.launcher import child_env
from tests.support.processes import NodeProcess, run_cli, wait_for


def make_tree(root: Path, n: int, size: int = 100) -> dict[str, bytes]:
    """``n`` files in nested folders, each with distinct content."""
    files = {}
    for i in range(n):
        rel = f"d{i % 3}/sub{i % 2}/f{i:04d}.bin"
        data = (f"{i}:".encode() * size)[:size]
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        files[rel] = data
    return files


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def whole(root: Path) -> dict[str, bytes]:
    """The files under ``root`` without the temporaries of downloads in progress."""
    return {rel: d for rel, d in tree(root).items() if not rel.rsplit("/", 1)[-1].startswith(".p2pstore-")}


def keys(node: NodeProcess, prefix: str) -> dict[str, str]:
    """key -> sha256 of every key under ``prefix``."""
    out: dict[str, str] = {}
    after = ""
    while True:
        page = node.get_json(f"/files?prefix={prefix}&limit=1000&after={after}")
        out.update({f["key"]: f["sha256"] for f in page["files"]})
        after = page.get("next") or ""
        if not after or not page["files"]:
            return out


def ok(res: subprocess.CompletedProcess[bytes]) -> str:
    assert res.returncode == 0, res.stderr.decode()
    assert b"Traceback" not in res.stderr
    return res.stdout.decode()


def test_put_folder_and_get_prefix_round_trip(node: NodeProcess, tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = make_tree(src, 40)
    out = ok(run_cli("--url", node.url, "put", str(src), "backup/", "-j", "4"))
    assert "uploaded 40 of 40 files" in out
    stored = keys(node, "backup/")
    assert stored == {f"backup/{rel}": hashlib.sha256(d).hexdigest() for rel, d in files.items()}

    dst = tmp_path / "dst"
    out = ok(run_cli("--url", node.url, "get", "backup/", str(dst), "-j", "4"))
    assert "downloaded 40 of 40 files" in out
    assert tree(dst) == files

    one = sorted(files)[0]
    ok(run_cli("--url", node.url, "get", f"backup/{one}", str(tmp_path / "one.bin")))  # DEST as argument
    assert (tmp_path / "one.bin").read_bytes() == files[one]


def test_put_folder_defaults_prefix_to_folder_name(node: NodeProcess, tmp_path: Path) -> None:
    src = tmp_path / "photos"
    make_tree(src, 3)
    ok(run_cli("--url", node.url, "put", str(src)))
    assert len(keys(node, "photos/")) == 3


def test_sync_up_copies_only_what_differs_and_deletes(node: NodeProcess, tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = make_tree(src, 12)
    out = ok(run_cli("--url", node.url, "sync", str(src), "p2p:s"))
    assert "12 copied" in out and "0 unchanged" in out
    out = ok(run_cli("--url", node.url, "sync", str(src), "p2p:s/"))
    assert "0 copied" in out and "12 unchanged" in out

    rels = sorted(files)
    (src / rels[0]).write_bytes(b"changed, other size")
    (src / rels[1]).write_bytes(bytes(reversed(files[rels[1]])))  # same size, other content
    (src / rels[2]).unlink()
    (src / "new.txt").write_bytes(b"new")
    before = keys(node, "s/")

    plan = ok(run_cli("--url", node.url, "sync", str(src), "p2p:s/", "--delete", "--dry-run"))
    assert "3 to copy, 9 unchanged, 1 to delete" in plan and f"would delete s/{rels[2]}" in plan
    assert keys(node, "s/") == before  # a dry run changes nothing

    out = ok(run_cli("--url", node.url, "sync", str(src), "p2p:s/"))  # without --delete: kept
    assert "3 copied" in out and "0 deleted" in out and f"s/{rels[2]}" in keys(node, "s/")
    out = ok(run_cli("--url", node.url, "sync", str(src), "p2p:s/", "--delete", "-v"))
    assert "0 copied" in out and "1 deleted" in out and f"deleted s/{rels[2]}" in out
    want = {f"s/{rel}": hashlib.sha256(d).hexdigest() for rel, d in tree(src).items()}
    assert keys(node, "s/") == want


def test_sync_down_copies_only_what_differs_and_deletes(node: NodeProcess, tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = make_tree(src, 9)
    ok(run_cli("--url", node.url, "put", str(src), "down/"))
    dst = tmp_path / "dst"
    assert "9 copied" in ok(run_cli("--url", node.url, "sync", "p2p:down/", str(dst)))
    assert tree(dst) == files
    plan = ok(run_cli("--url", node.url, "sync", "p2p:down/", str(dst), "--dry-run"))
    assert "0 to copy, 9 unchanged" in plan
    out = ok(run_cli("--url", node.url, "sync", "p2p:down/", str(dst)))
    assert "0 copied" in out and "9 unchanged" in out

    rels = sorted(files)
    (dst / rels[0]).write_bytes(bytes(reversed(files[rels[0]])))  # local edit, same size
    (dst / "extra.txt").write_bytes(b"only here")
    out = ok(run_cli("--url", node.url, "sync", "p2p:down/", str(dst), "--delete"))
    assert "1 copied" in out and "8 unchanged" in out and "1 deleted" in out
    assert tree(dst) == files


def test_sync_bad_input_is_one_line_exit_2(node: NodeProcess, tmp_path: Path) -> None:
    res = run_cli("--url", node.url, "sync", str(tmp_path), str(tmp_path / "b"))
    assert res.returncode == 2 and res.stderr.decode().startswith("error: one side must be the cluster")
    res = run_cli("--url", node.url, "sync", str(tmp_path / "missing"), "p2p:x/")
    assert res.returncode == 2 and b"is not a folder" in res.stderr


def test_sync_interrupted_then_resumed(node: NodeProcess, tmp_path: Path) -> None:
    """SIGKILL a sync part-way (both ways); running it again finishes the job, copying the rest."""
    src = tmp_path / "src"
    files = make_tree(src, 300, size=2000)
    cmd = [sys.executable, "-m", "p2pstore", "--url", node.url, "sync", "-j", "1"]
    proc = subprocess.Popen([*cmd, str(src), "p2p:r/"], env=child_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for(lambda: len(keys(node, "r/")) >= 20, 60, interval=0.02, message="some files uploaded")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    part = len(keys(node, "r/"))
    assert 20 <= part < 300, part  # really interrupted part-way
    out = ok(run_cli("--url", node.url, "sync", str(src), "p2p:r/"))
    copied = int(out.split(": ", 1)[1].split(" copied")[0])
    # -j 1: at most one upload was in flight when the sync was killed; the node may finish it
    assert copied in (300 - part, 300 - part - 1), out
    assert len(keys(node, "r/")) == 300

    dst = tmp_path / "dst"
    proc = subprocess.Popen([*cmd, "p2p:r/", str(dst)], env=child_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for(lambda: dst.is_dir() and len(whole(dst)) >= 20, 60, interval=0.02, message="files down")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    done = whole(dst)
    assert 20 <= len(done) < 300
    assert all(files[rel] == data for rel, data in done.items())  # whole files or none
    out = ok(run_cli("--url", node.url, "sync", "p2p:r/", str(dst)))
    assert f"{300 - len(done)} copied" in out, out
    assert tree(dst) == files  # and no temporary files left


def test_progress_bar_on_a_terminal(node: NodeProcess, tmp_path: Path) -> None:
    """On a terminal (a pty as stderr) the folder commands draw one overall progress bar."""
    import pty

    src = tmp_path / "src"
    make_tree(src, 6, size=50_000)
    master, slave = pty.openpty()
    chunks: list[bytes] = []

    def drain() -> None:  # read while it runs, so a full pty buffer never blocks the command
        while True:
            try:
                block = os.read(master, 65536)
            except OSError:  # EIO: the writer side is closed and drained
                return
            if not block:
                return
            chunks.append(block)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        cmd = [sys.executable, "-m", "p2pstore", "--url", node.url, "put", str(src), "tty/"]
        res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=slave, env=child_env(), timeout=60)
    finally:
        os.close(slave)
        reader.join(timeout=10)
        os.close(master)
    shown = b"".join(chunks)
    assert res.returncode == 0, shown.decode(errors="replace")
    assert b"uploaded 6 of 6 files" in res.stdout
    assert b"uploading" in shown and b"Traceback" not in shown and b"Error" not in shown
