"""Run a client with real name resolution of ``<bucket>.localhost`` names to 127.0.0.1.

glibc does not resolve ``*.localhost`` by itself (only systemd-resolved, curl and browsers do),
so a virtual-host-style client runs in a private mount namespace (``unshare --mount``) whose
/etc/hosts maps the names it will ask for to 127.0.0.1. The client's resolver, sockets and HTTP
stack are the real ones; no traffic leaves 127.0.0.0/8, and the machine's /etc/hosts is untouched.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest

MOUNT_HOSTS = 'mount --bind "$0" /etc/hosts && exec "$@"'


@functools.cache
def _namespaces_work() -> str:
    """Empty when `unshare --mount` can bind-mount a hosts file here, else why not."""
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return "unshare/mount (util-linux) are not installed"
    probe = subprocess.run(["unshare", "--mount", "sh", "-c", "mount --bind /etc/hosts /etc/hosts"],
                           capture_output=True, timeout=30, check=False)  # fmt: skip
    if probe.returncode != 0:
        return f"cannot make a mount namespace (needs root): {probe.stderr.decode().strip()[:200]}"
    return ""


def need_namespaces() -> None:
    reason = _namespaces_work()
    if reason:
        pytest.skip(f"virtual-host clients need name resolution of *.localhost: {reason}")


def with_hosts(argv: Sequence[str], names: Iterable[str], folder: Path) -> list[str]:
    """``argv`` run where each of ``names`` (and localhost) resolves to 127.0.0.1."""
    hosts = folder / "hosts"
    hosts.write_text("127.0.0.1 localhost " + " ".join(sorted(set(names))) + "\n")
    return ["unshare", "--mount", "--", "sh", "-c", MOUNT_HOSTS, str(hosts), *argv]
