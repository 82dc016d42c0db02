"""The `p2pstore` command end to end: real subprocesses against real node processes."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from p2pstore.launcher import free_port
from tests.support.processes import NodeProcess, run_cli

COMMANDS = [
    [],
    ["put"],
    ["get"],
    ["ls"],
    ["rm"],
    ["stat"],
    ["status"],
    ["checkpoint"],
    ["node"],
    ["node", "start"],
    ["node", "restore"],
]


def cli(*args: str, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    return run_cli(*args, **kwargs)  # type: ignore[arg-type]


def assert_one_line_error(res: subprocess.CompletedProcess[bytes], code: int = 1) -> str:
    """Failures must be one clear line on stderr, never a traceback."""
    err = res.stderr.decode()
    assert res.returncode == code, (res.returncode, err)
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    return lines[0]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- no node needed


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "root")
def test_help_on_every_command(command: list[str]) -> None:
    res = cli(*command, "--help")
    out = res.stdout.decode()
    assert res.returncode == 0, res.stderr.decode()
    assert "Usage:" in out
    assert "Traceback" not in res.stderr.decode()


def test_every_config_field_has_a_node_start_flag() -> None:
    """A NodeConfig field without a flag could only be set through the environment."""
    from dataclasses import fields

    import typer
    from p2pstore_cli.main import app

    from p2pstore.config import NodeConfig

    group = typer.main.get_command(app)
    start = group.commands["node"].commands["start"]  # type: ignore[attr-defined]
    names = {p.name for p in start.params}
    missing = [f.name for f in fields(NodeConfig) if f.name not in names]
    assert not missing


def test_unreachable_url_is_one_clear_line() -> None:
    port = free_port()
    res = cli("--url", f"http://127.0.0.1:{port}", "ls")
    line = assert_one_line_error(res, code=3)
    assert "cannot reach any node" in line
    assert f"127.0.0.1:{port}" in line
    assert "connection refused" in line


def test_url_from_environment() -> None:
    port = free_port()
    res = cli("status", env={"P2PSTORE_URL": f"http://127.0.0.1:{port}"})
    assert f"127.0.0.1:{port}" in assert_one_line_error(res, code=3)


def test_bad_flag_value_is_one_clear_line() -> None:
    res = cli("node", "start", "--fsync", "sometimes")
    line = assert_one_line_error(res, code=2)
    assert "--fsync" in line and "sometimes" in line


def test_invalid_config_is_one_clear_line(tmp_path: Path) -> None:
    res = cli("node", "start", "--data-dir", str(tmp_path), "--replicas", "2", "--write-quorum", "3")
    line = assert_one_line_error(res, code=2)
    assert "write_quorum" in line
    res = cli("node", "start", "--data-dir", str(tmp_path), "--read-lease", "0.1")
    assert "read_lease must be 0 (off) or 0.5..60 seconds" in assert_one_line_error(res, code=2)


def test_unknown_command_is_usage_error() -> None:
    assert_one_line_error(cli("frobnicate"), code=2)


def test_restore_without_checkpoints_fails_cleanly(tmp_path: Path) -> None:
    res = cli("node", "restore", "--data-dir", str(tmp_path))
    assert "restore failed" in assert_one_line_error(res)


# ---------------------------------------------------------------- against a node


def test_put_get_round_trip(node: NodeProcess, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    src = tmp_path / "blob.bin"
    src.write_bytes(data)
    res = cli("--url", node.url, "put", str(src), "dir/blob.bin")
    assert res.returncode == 0, res.stderr.decode()
    out = res.stdout.decode()
    assert "dir/blob.bin" in out
    assert sha256(data) in out
    assert str(len(data)) in out

    dst = tmp_path / "out" / "copy.bin"
    res = cli("--url", node.url, "get", "dir/blob.bin", "-o", str(dst))
    assert res.returncode == 0, res.stderr.decode()
    assert sha256(dst.read_bytes()) == sha256(data)
    assert not [p for p in dst.parent.iterdir() if p.name.endswith(".part")]

    res = cli("get", "dir/blob.bin", "--url", node.url)  # to stdout, per-command --url
    assert res.returncode == 0, res.stderr.decode()
    assert sha256(res.stdout) == sha256(data)


def test_put_defaults_key_to_file_name(node: NodeProcess, tmp_path: Path) -> None:
    src = tmp_path / "hello world.txt"
    src.write_bytes(b"hello\n")
    res = cli("--url", node.url, "put", str(src), "--json")
    assert res.returncode == 0, res.stderr.decode()
    assert json.loads(res.stdout)["key"] == "hello world.txt"
    res = cli("--url", node.url, "get", "hello world.txt")
    assert res.stdout == b"hello\n"


def test_ls_prefix_and_paging(node: NodeProcess, tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"x")
    keys = [f"a/{i}" for i in range(5)] + ["b/other"]
    for key in keys:
        assert cli("--url", node.url, "put", str(src), key).returncode == 0
    res = cli("--url", node.url, "ls", "a/", "--limit", "2")
    assert res.returncode == 0, res.stderr.decode()
    assert res.stdout.decode().split() == keys[:5]

    res = cli("--url", node.url, "ls", "--limit", "2", "--max", "3")
    assert len(res.stdout.decode().split()) == 3

    res = cli("--url", node.url, "ls", "a/", "-l")
    assert res.returncode == 0, res.stderr.decode()
    lines = res.stdout.decode().splitlines()
    assert len(lines) == 5 and all(" a/" in line for line in lines)


def test_stat_and_rm(node: NodeProcess, tmp_path: Path) -> None:
    src = tmp_path / "doc.txt"
    src.write_bytes(b"some text")
    assert cli("--url", node.url, "put", str(src), "doc.txt").returncode == 0

    res = cli("--url", node.url, "stat", "doc.txt", "--json")
    assert res.returncode == 0, res.stderr.decode()
    info = json.loads(res.stdout)
    assert info["size"] == 9
    assert info["sha256"] == sha256(b"some text")

    res = cli("--url", node.url, "rm", "doc.txt")
    assert res.returncode == 0, res.stderr.decode()
    assert "deleted doc.txt" in res.stdout.decode()

    line = assert_one_line_error(cli("--url", node.url, "get", "doc.txt"), code=4)
    assert line == "error: key not found: doc.txt"
    assert_one_line_error(cli("--url", node.url, "stat", "doc.txt"), code=4)
    assert_one_line_error(cli("--url", node.url, "rm", "doc.txt"), code=4)


def test_get_missing_key_leaves_no_file(node: NodeProcess, tmp_path: Path) -> None:
    dst = tmp_path / "never.bin"
    assert_one_line_error(cli("--url", node.url, "get", "nope", "-o", str(dst)), code=4)
    assert list(tmp_path.glob("*never.bin*")) == []


def test_failover_to_next_url(node: NodeProcess, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    src = tmp_path / "f.txt"
    src.write_bytes(b"failover")
    urls = f"{dead},{node.url}"
    res = cli("--url", urls, "put", str(src), "f.txt")
    assert res.returncode == 0, res.stderr.decode()
    res = cli("--url", urls, "get", "f.txt")
    assert res.returncode == 0 and res.stdout == b"failover"


def test_status(node: NodeProcess) -> None:
    res = cli("--url", node.url, "status")
    assert res.returncode == 0, res.stderr.decode()
    health = node.health()
    assert health is not None
    assert str(health["node_id"]) in res.stdout.decode()
    res = cli("--url", node.url, "status", "--json")
    assert json.loads(res.stdout)["node_id"] == health["node_id"]


def test_checkpoint_prints_a_result(node: NodeProcess) -> None:
    res = cli("--url", node.url, "checkpoint")
    assert res.returncode == 0, res.stderr.decode()
    out = res.stdout.decode()
    assert ": ok" in out


def test_token_required_and_accepted(node_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (n,) = node_factory(1, api_token="s3cret", fsync="never")
    src = tmp_path / "t"
    src.write_bytes(b"t")
    assert_one_line_error(cli("--url", n.url, "put", str(src), "t"), code=5)
    res = cli("--url", n.url, "put", str(src), "t", env={"P2PSTORE_API_TOKEN": "s3cret"})
    assert res.returncode == 0, res.stderr.decode()
    res = cli("--url", n.url, "--token", "s3cret", "get", "t")
    assert res.stdout == b"t"


def test_checkpoint_then_restore(node: NodeProcess) -> None:
    res = cli("--url", node.url, "checkpoint")
    assert res.returncode == 0, res.stderr.decode()
    node.terminate()
    made = res.stdout.decode().split()[-1]  # "<node id>: ok <checkpoint name>"
    res = cli("node", "restore", "--data-dir", str(node.data_dir))
    assert res.returncode == 0, res.stderr.decode()
    assert res.stdout.decode() == f"restored checkpoint {made} into {node.data_dir}\n"
    assert res.stderr == b""  # one line in all
    leftovers = [p.name for p in node.data_dir.rglob("*") if p.name.endswith(("-wal", "-shm"))]
    assert leftovers == []
    node.start()
    node.wait_ready()


def test_json_output_for_scripts(node: NodeProcess, tmp_path: Path) -> None:
    """`--json` on ls, stat, status and members list: valid JSON with the fields scripts need."""
    import json

    src = tmp_path / "j.txt"
    src.write_bytes(b"json please")
    assert cli("--url", node.url, "put", str(src), "j/one.txt").returncode == 0
    res = cli("--url", node.url, "ls", "j/", "--json")
    assert res.returncode == 0, res.stderr.decode()
    (entry,) = [json.loads(line) for line in res.stdout.decode().splitlines()]
    assert entry["key"] == "j/one.txt" and entry["size"] == 11
    res = cli("--url", node.url, "stat", "j/one.txt", "--json")
    assert json.loads(res.stdout)["sha256"] == entry["sha256"]
    status = json.loads(cli("--url", node.url, "status", "--json").stdout)
    members = json.loads(cli("--url", node.url, "members", "list", "--json").stdout)
    assert [m["id"] for m in members] == [m["id"] for m in status["members"]]
    assert status["node_id"] in {m["id"] for m in members}
    long = cli("--url", node.url, "ls", "-l", "j/").stdout.decode()
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", long), long  # a human time, not an epoch float
