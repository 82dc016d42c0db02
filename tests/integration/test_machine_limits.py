"""benchmarks/machine_limits.py runs and prints its table (small sizes: a smoke test)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_machine_limits_prints_every_ceiling(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "machine_limits.py"), "--dir", str(tmp_path),
         "--write-mib", "8", "--files", "20", "--parallel-mib", "24", "--cache-mib", "8", "--no-http"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    table = [line for line in res.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    labels = [line.split("|")[1].strip() for line in table[1:]]
    assert labels == [
        "page cache: write new data, CPU per MiB",
        "page cache: the same into just-freed pages, CPU per MiB",
        "sha256, one core, 4 MiB buffers",
        "write 8 MiB in 4 MiB blocks, fsync at end",
        "write 8 MiB in 4 MiB blocks, fsync per block",
        "4 KiB create+fsync+rename+dir fsync",
        "1 MiB create+fsync+rename+dir fsync, 12 writers",
        "CPU per MiB written (all writers)",
    ]
    assert list(tmp_path.iterdir()) == [], "its temp files are gone"
