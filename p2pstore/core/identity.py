"""Which identity a node with an empty data dir takes: a new one, or a dead member's.

A replaced disk (or a wiped data dir) used to come back under a new id while the old id kept its
place in placement as dead for ``--dead-after``: the files it held had one copy fewer, and only
after that delay were they re-replicated (to other nodes, moving data twice). A node that takes
the dead member's id instead keeps its place in placement, so nothing else moves and repair
refills exactly what that id held.

Pure decision over what the seeds answered (their member tables); the shell
(cluster/identity.py) asks them and probes the address. Who may ask is settled as for every
internal request: the seeds answer only a caller with the cluster's credentials.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .membership import ALIVE, DEAD, LEFT, SUSPECT


class IdentityRefused(ValueError):
    """``--replaces ID`` cannot be honoured safely; the message says why."""


@dataclass(frozen=True)
class Adoption:
    """Take ``node_id``: start above ``incarnation`` (so the first refutation makes it alive
    everywhere) and abstain from voting in terms up to ``term`` (its old self may have voted)."""

    node_id: str
    incarnation: int
    term: int
    reason: str


@dataclass(frozen=True)
class SeedView:
    """One seed's answer: its member records ({"id", "addr", "state", "inc"}) and its term."""

    seed: str
    members: list[dict[str, Any]]
    term: int


def _records(views: list[SeedView], member_id: str) -> list[tuple[str, dict[str, Any]]]:
    return [(v.seed, r) for v in views for r in v.members if r.get("id") == member_id]


def _down_everywhere(recs: list[tuple[str, dict[str, Any]]], address: str, address_free: bool) -> str | None:
    """None when every seed that knows the member sees it dead or left, or sees it at our own
    address, which nobody answers on (its process is gone: we are about to listen there);
    otherwise why not."""
    for seed, r in recs:
        if r["state"] in (DEAD, LEFT):
            continue
        if r["state"] in (ALIVE, SUSPECT) and r["addr"] == address and address_free:
            continue
        return f"{seed} sees {r['id']} {r['state']} at {r['addr']}"
    return None


def choose(
    views: list[SeedView], address: str, replaces: str = "", address_free: bool = False
) -> Adoption | None:
    """The identity to adopt, or None for a new one. Raises IdentityRefused for a ``replaces``
    that is unknown to every seed that answered, or not down."""
    term = max((v.term for v in views), default=0)
    if replaces:
        if not views:
            raise IdentityRefused(f"no seed answered: cannot confirm that {replaces} is down")
        recs = _records(views, replaces)
        if not recs:
            raise IdentityRefused(f"no seed knows a member {replaces}")
        why = _down_everywhere(recs, address, address_free)
        if why is not None:
            raise IdentityRefused(f"{why}: stop it first (or wait until it is dead)")
        inc = max(r["inc"] for _, r in recs)
        return Adoption(replaces, inc, term, f"--replaces {replaces}")
    ids = sorted({r["id"] for v in views for r in v.members if r.get("addr") == address})
    candidates = [i for i in ids if _down_everywhere(_records(views, i), address, address_free) is None]
    if len(candidates) != 1 or len(ids) != 1:
        return None  # nobody, somebody alive, or several old ids at this address: a new id
    recs = _records(views, candidates[0])
    inc = max(r["inc"] for _, r in recs)
    return Adoption(candidates[0], inc, term, f"the member at {address} is down")
