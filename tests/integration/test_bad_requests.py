"""Malformed requests get a 400 with a message and at most one WARNING line, never a 500 or a
traceback; and a node raises its open-file limit at start-up (idle sockets cannot exhaust it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import aiohttp

from p2pstore.launcher import child_env
from tests.support.processes import start_nodes


async def test_malformed_multipart_bodies_are_a_400(tmp_path: Path) -> None:
    [node] = start_nodes(tmp_path, 1)
    try:
        bodies = {
            "bad boundary": ("multipart/form-data; boundary=abc", b"--xyz\r\nnonsense\r\n--xyz--\r\n"),
            "no boundary": ("multipart/form-data", b"--abc\r\n\r\nx\r\n--abc--\r\n"),
            "huge field name": (
                "multipart/form-data; boundary=abc",
                b'--abc\r\nContent-Disposition: form-data; name="' + b"n" * 100_000
                + b'"\r\n\r\nx\r\n--abc--\r\n',
            ),
            "unterminated quoted boundary": ('multipart/form-data; boundary="abc', b"--abc\r\n\r\n"),
            "boundary of 200 bytes": ("multipart/form-data; boundary=" + "b" * 200,
                                      b"--" + b"b" * 200 + b"\r\n\r\nx\r\n--" + b"b" * 200 + b"--\r\n"),
            "part header of 100 KB": ("multipart/form-data; boundary=abc",
                                      b"--abc\r\nX-Pad: " + b"p" * 100_000 + b"\r\n\r\nx\r\n--abc--\r\n"),
            "no content-disposition": ("multipart/form-data; boundary=abc", b"--abc\r\n\r\nx\r\n--abc--\r\n"),
            "binary field name": ("multipart/form-data; boundary=abc",
                                  b'--abc\r\nContent-Disposition: form-data; name="\xff\xfe"\r\n\r\n'
                                  b"x\r\n--abc--\r\n"),
            "empty body": ("multipart/form-data; boundary=abc", b""),
            "truncated": ("multipart/form-data; boundary=abc",
                          b'--abc\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n\r\nxx'),
        }  # fmt: skip
        async with aiohttp.ClientSession() as s:
            for name, (ctype, body) in bodies.items():
                async with s.post(f"{node.url}/files", data=body, headers={"Content-Type": ctype}) as r:
                    answer = await r.json()
                    assert r.status == 400, (name, r.status, answer)
                    assert answer["error"], name
            async with s.get(f"{node.url}/files") as r:
                assert (await r.json())["files"] == []  # nothing stored
        log = node.log_text()
        assert "Traceback" not in log and " ERROR " not in log, log[-2000:]
    finally:
        node.terminate()


def test_a_node_raises_its_open_file_limit() -> None:
    """In a process whose soft limit is low (1,024 is a common default), start-up raises it to
    the hard limit."""
    code = (
        "import resource\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))\n"
        "from p2pstore.server import raise_open_file_limit\n"
        "raise_open_file_limit()\n"
        "print(*resource.getrlimit(resource.RLIMIT_NOFILE))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env=child_env(), timeout=60)  # fmt: skip
    soft, hard = map(int, done.stdout.split())
    assert soft == hard, done.stdout
