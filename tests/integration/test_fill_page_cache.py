"""benchmarks/fill_page_cache.py writes its file and removes it again (a small size: a smoke test)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "fill_page_cache.py"


def run(*args: str) -> str:
    res = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def test_fill_page_cache_writes_the_file_and_removes_it(tmp_path: Path) -> None:
    path = tmp_path / "fill.bin"
    assert "wrote 0.0 GiB" in run("--path", str(path), "--gib", "0.01")
    assert path.stat().st_size == 8 << 20  # 0.01 GiB in whole 4 MiB blocks
    run("--path", str(path), "--remove")
    assert not path.exists()
