"""``python -m p2pstore`` and the node launcher from a checkout that was never installed.

pyproject maps the package ``p2pstore_cli`` to the folder ``cli/``, so that name exists only in an
installed copy. These tests run Python without site processing of the installed environment
(``-S``, or a bare virtual environment: no .pth file, no editable-install finder) in a copy of the
sources, with only the dependencies' directories on PYTHONPATH: whatever imports there comes from
the copy.
"""

from __future__ import annotations

import json
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


def run_bare(
    cwd: Path, *args: str, python: tuple[str, ...] = (sys.executable, "-S"), timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """``python *args`` in ``cwd``; the dependencies come from the site-packages folders only."""
    deps = [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("P2PSTORE_", "PYTHON"))}
    env["PYTHONPATH"] = os.pathsep.join(deps)
    return subprocess.run(
        [*python, *args], cwd=str(cwd), env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


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


LAUNCH = """
import json, sys
from pathlib import Path
from p2pstore.launcher import LocalNode

node = LocalNode(Path(sys.argv[1]), args=["--fsync", "never"])
try:
    node.start()
    body = node.wait_ready(60)
    print(json.dumps({"health": body, "command": node.command()}))
finally:
    node.terminate()
"""


def test_the_launcher_starts_nodes_from_a_bare_checkout(tmp_path: Path) -> None:
    """The launcher's children run ``sys.executable -m p2pstore`` with the checkout importable.

    A child does its own site processing, so the launcher runs here in a virtual environment
    that holds nothing: neither the launcher nor its node can find an installed p2pstore.
    """
    checkout = bare_checkout(tmp_path / "checkout")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    res = run_bare(checkout, "-c", LAUNCH, str(tmp_path / "n0"), python=(str(venv / "bin" / "python"),))
    assert res.returncode == 0, res.stderr + (tmp_path / "n0.log").read_text(errors="replace")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["health"]["ok"] is True
    assert out["command"][:3] == [str(venv / "bin" / "python"), "-m", "p2pstore"]
