"""The history checker for versioned folders (docs/versions.md): after healing, every
acknowledged write must be listed as a version on every node, with its own bytes.

* **no acknowledged version lost** - each acknowledged put's version (its HLC version, which is
  its version id) is listed by every node, with the sha256 of the bytes that put sent; each
  acknowledged delete's version is listed as a delete marker;
* **no version served with another's bytes** - every listed version is read through every node
  (``?version=V``) and hashes to the sha256 of the put that wrote that version (for a put
  whose answer never came, so whose version is unknown: to the bytes it sent); a version no
  put wrote, or one a node said it refused, is a phantom;
* **convergence** - every node lists the same versions of every key.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .checker import Violation
from .history import Op


@dataclass(frozen=True)
class ListedVersion:
    """A version as one node lists it, and the sha256 of the bytes it served for it."""

    gateway: str
    key: str
    vid: str
    marker: bool
    sha256: str  # what the listing says
    served: str | None  # sha256 of the bytes read with ?version= (None: a marker, or unreadable)
    error: str | None = None


def _get(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read()


def final_versions(
    gateways: Sequence[tuple[str, str]], keys: Iterable[str], timeout: float = 10.0
) -> list[ListedVersion]:
    """Every version of every key as each (name, url) gateway lists and serves it."""
    out: list[ListedVersion] = []
    for name, url in gateways:
        for key in keys:
            path = f"{url}/files/{urllib.parse.quote(key)}"
            try:
                listed = json.loads(_get(path + "?versions=1", timeout))["versions"]
            except urllib.error.HTTPError as exc:
                if exc.code != 404:
                    out.append(ListedVersion(name, key, "", False, "", None, f"listing: HTTP {exc.code}"))
                continue
            for v in listed:
                served, error = None, None
                if not v["delete_marker"]:
                    try:
                        body = _get(f"{path}?version={urllib.parse.quote(v['version'])}", timeout)
                        served = hashlib.sha256(body).hexdigest()
                    except (OSError, ValueError) as exc:
                        error = f"{type(exc).__name__}: {exc}"
                out.append(
                    ListedVersion(name, key, v["version"], v["delete_marker"], v["sha256"], served, error)
                )
    return out


def check_versions(
    history: Iterable[Op], listed: Iterable[ListedVersion]
) -> tuple[list[Violation], dict[str, Any]]:
    """Judge the final version listings against the history (see the module docstring)."""
    ops = list(history)
    puts_by_version = {(o.key, o.version): o for o in ops if o.op == "put" and o.version}
    unknown: dict[str, set[str | None]] = defaultdict(set)
    for o in ops:
        if o.op == "put" and o.outcome == "unknown" and not o.version:
            unknown[o.key].add(o.sha256)
    versions_of: dict[tuple[str, str], dict[str, ListedVersion]] = defaultdict(dict)
    keys_of: dict[str, set[str]] = defaultdict(set)
    violations: list[Violation] = []
    for lv in listed:
        keys_of[lv.key].add(lv.gateway)
        if lv.error is not None:
            violations.append(Violation("version_unreadable", lv.key, f"{lv.gateway} {lv.vid}: {lv.error}"))
            continue
        versions_of[(lv.key, lv.gateway)][lv.vid] = lv
        if lv.marker:
            continue
        if lv.served != lv.sha256:
            violations.append(
                Violation(
                    "version_corrupt", lv.key, f"{lv.gateway} served other bytes for {lv.vid} than it lists"
                )
            )
        put = puts_by_version.get((lv.key, lv.vid))
        if put is None and lv.served in unknown.get(lv.key, set()):
            continue  # a put whose answer never came (so no version is known for it) landed
        if put is None or put.outcome == "fail":
            violations.append(
                Violation("phantom_version", lv.key, f"{lv.gateway} lists {lv.vid}, which no put wrote")
            )
        elif put.sha256 != lv.served:
            violations.append(
                Violation(
                    "version_bytes_of_another",
                    lv.key,
                    f"{lv.gateway} serves {lv.vid} with bytes put {put.id} did not write",
                    [put.id],
                )
            )
    gateways = sorted({g for gs in keys_of.values() for g in gs})
    acked = [o for o in ops if o.op in ("put", "delete") and o.outcome == "ok" and o.version]
    for o in acked:
        for g in gateways:
            lv = versions_of.get((o.key, g), {}).get(o.version or "")
            if lv is None:
                violations.append(
                    Violation(
                        "lost_version", o.key, f"{g} does not list acknowledged {o.op} {o.version}", [o.id]
                    )
                )
            elif lv.marker != (o.op == "delete"):
                violations.append(
                    Violation("wrong_version_kind", o.key, f"{g} lists {o.version} as the wrong kind", [o.id])
                )
    for key in sorted({k for k, _ in versions_of}):
        seen = {tuple(sorted(versions_of.get((key, g), {}))) for g in gateways}
        if len(seen) > 1:
            violations.append(Violation("divergent_versions", key, "nodes list different versions"))
    stats = {
        "versions_listed": sum(len(v) for v in versions_of.values()),
        "acknowledged_writes": len(acked),
        "violations": len(violations),
    }
    return violations, stats
