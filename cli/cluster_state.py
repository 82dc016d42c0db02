"""The state of a `cluster up` cluster in one file: ``<data root>/cluster.json``.

Ports, data dirs, logs, command lines, the pids and (in plain mode) the cluster secret, so that
`cluster status`, `cluster restart NODE` and `cluster stop`, run from any shell, act on the
cluster that `cluster up` started. The file is written whole and renamed into place (0600: it
may hold the secret). The data root defaults to ``$XDG_STATE_HOME/p2pstore/cluster`` (else
``~/.local/state/p2pstore/cluster``): outside the current folder, so a cluster started inside a
git checkout leaves nothing untracked there.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from .failures import EXIT_NOT_FOUND, BadInput, CliError

STATE_FILE = "cluster.json"


def default_root() -> Path:
    """Where `cluster up` keeps its nodes unless told (``--data-root`` / P2PSTORE_CLUSTER_ROOT)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "p2pstore" / "cluster"


def save(root: Path, state: dict[str, Any]) -> None:
    """Write the state file atomically, readable by its owner only."""
    path = root / STATE_FILE
    tmp = path.with_suffix(".json.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(state, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load(root: Path) -> dict[str, Any]:
    """The state `cluster up` left in ``root``; a clear error when there is none."""
    path = root / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        raise CliError(f"no cluster in {root} (start one: p2pstore cluster up)", EXIT_NOT_FOUND) from None
    except ValueError as exc:
        raise CliError(f"{path} is not a cluster state file: {exc}") from exc
    if not isinstance(state, dict) or not isinstance(state.get("nodes"), list):
        raise CliError(f"{path} is not a cluster state file")
    return state


def find_node(state: dict[str, Any], name: str) -> dict[str, Any]:
    """A node by name (node2), index (2) or port."""
    for i, node in enumerate(state["nodes"]):
        if name in (node["name"], str(i), str(node["port"])):
            return dict(node)
    names = ", ".join(n["name"] for n in state["nodes"])
    raise BadInput(f"no node {name!r} in this cluster (its nodes: {names})")


def alive(pid: int | None, data_dir: str) -> bool:
    """Whether ``pid`` is still that node (a pid the OS gave to another program does not count)."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":  # a zombie has ended
        return False
    return data_dir.encode() in cmdline


def stop_pid(pid: int, data_dir: str, timeout: float = 15.0) -> None:
    """SIGTERM (a graceful stop), then SIGKILL if it takes longer than ``timeout``."""
    if not alive(pid, data_dir):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive(pid, data_dir):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            break
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)  # our own child: reap it
        time.sleep(0.05)


def launch(node: dict[str, Any], secret: str | None) -> int:
    """Start a node again with the command line `cluster up` gave it; returns its pid."""
    from p2pstore.launcher import CLUSTER_SECRET_ENV, child_env

    command = [str(c) for c in node["command"]]
    env = child_env({CLUSTER_SECRET_ENV: secret} if secret else {}, keep_settings=True)
    log = Path(node["log"])
    with log.open("ab") as fh:
        fh.write(f"\n=== {time.strftime('%H:%M:%S')} restart {' '.join(command)}\n".encode())
        fh.flush()
        proc = subprocess.Popen(
            command, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            cwd=str(Path(node["data_dir"]).parent), start_new_session=True,
        )  # fmt: skip
    return proc.pid


def set_pid(root: Path, name: str, pid: int | None) -> None:
    """Record a node's new pid (re-reading the file: another command may have changed it)."""
    state = load(root)
    for node in state["nodes"]:
        if node["name"] == name:
            node["pid"] = pid
    save(root, state)
