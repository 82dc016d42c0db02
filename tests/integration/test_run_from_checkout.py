"""``python -m p2pstore`` from a checkout that was never installed.

pyproject maps the package ``p2pstore_cli`` to the folder ``cli/``, so that name exists only in an
installed copy. These tests run Python with ``-S`` (no site processing, so no .pth file and no
editable-install finder) in a copy of the sources, with only the dependencies' directories on
PYTHONPATH: whatever imports there comes from the copy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def bare_checkout(dest: Path) -> Path:
    """A copy of the package and CLI sources (what a fresh clone holds), without bytecode."""
    for name in ("p2pstore", "cli"):
        shutil.copytree(REPO_ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def run_bare(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -S *args`` in ``cwd``; the dependencies come from the site-packages folders only."""
    deps = [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("P2PSTORE_", "PYTHON"))}
    env["PYTHONPATH"] = os.pathsep.join(deps)
    return subprocess.run(
        [sys.executable, "-S", *args], cwd=str(cwd), env=env, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip


def test_the_cli_package_is_not_importable_there(tmp_path: Path) -> None:
    """The set-up really hides the installed copy (else the next test would prove nothing)."""
    checkout = bare_checkout(tmp_path)
    res = run_bare(checkout, "-c", "import p2pstore_cli")
    assert res.returncode != 0 and "No module named 'p2pstore_cli'" in res.stderr, res.stderr
    res = run_bare(checkout, "-c", "import p2pstore; print(p2pstore.__file__)")
    assert res.returncode == 0, res.stderr
    assert Path(res.stdout.strip()).resolve().is_relative_to(checkout.resolve())


def test_python_m_p2pstore_help_works_from_a_bare_checkout(tmp_path: Path) -> None:
    checkout = bare_checkout(tmp_path)
    res = run_bare(checkout, "-m", "p2pstore", "--help")
    assert res.returncode == 0, res.stderr
    assert "Usage: p2pstore" in res.stdout
    assert "Traceback" not in res.stderr
    res = run_bare(checkout, "-m", "p2pstore", "node", "start", "--help")
    assert res.returncode == 0, res.stderr
    assert "--data-dir" in res.stdout
