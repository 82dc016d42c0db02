"""benchmarks/small_write_pages.py runs and prints its figures (small sizes: a smoke test)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_small_write_pages_counts_the_pages_a_small_write_dirties(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "small_write_pages.py"), "--dir", str(tmp_path),
         "--files", "3000", "--writes", "64", "--window", "32"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    found = re.search(r"WAL frames per write ([\d.]+), distinct pages per write ([\d.]+)", res.stdout)
    assert found, res.stdout
    frames, pages = map(float, found.groups())
    # A 4 KiB body needs a page of its own beyond its row's, and its row lives in two indexes
    # too (by Merkle leaf with its entry hash, by sha256): ~4.5 WAL frames per write. Bytes kept
    # apart from the entry (a chunk row and a reference-count row, both keyed by hash) made it
    # ~6.5.
    assert 1.0 <= pages <= frames < 6.0, res.stdout
    assert list(tmp_path.iterdir()) == [], "its temp files are gone"
