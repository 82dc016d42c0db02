"""The history checker: a pure function from (history, final reads, convergence) to a verdict.

What it proves, for a last-writer-wins store whose versions sort in LWW order:

* **no lost write** - after healing, each key reads as its acknowledged write with the highest
  version, or as a write whose outcome is unknown (it may have landed later), never older;
* **no resurrection** - a key whose newest acknowledged write is a delete reads as absent unless
  an unknown-outcome put exists (which may legitimately win);
* **nothing corrupt served** - every read (during the faults too) returned bytes that hash to the
  ETag the node promised and to a put of that key that was acknowledged or in flight (invoked
  before the read ended); bytes of a write the node said it refused count as phantom;
* **convergence** - every gateway answers the same for every key, and every live file reached
  R verified replicas within the bound (measured by the runner, judged here).

Stale reads *during* faults are allowed (reads need one replica, not a quorum) and only counted.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .history import FinalRead, Op


@dataclass
class Violation:
    kind: str
    key: str
    message: str
    ops: list[int] = field(default_factory=list)

    def __str__(self) -> str:
        ids = f" (ops {', '.join(map(str, self.ops[:8]))})" if self.ops else ""
        return f"[{self.kind}] {self.key}: {self.message}{ids}"


@dataclass
class CheckReport:
    violations: list[Violation]
    stats: dict[str, Any]

    @property
    def ok(self) -> bool:
        return not self.violations

    def kinds(self) -> set[str]:
        return {v.kind for v in self.violations}

    def summary(self) -> str:
        s = self.stats
        lines = [
            f"chaos check: {'PASS' if self.ok else 'FAIL'} - "
            f"{s.get('ops', 0)} ops on {s.get('keys', 0)} keys",
            "  outcomes: " + ", ".join(f"{k}={v}" for k, v in sorted(s.get("outcomes", {}).items())),
            f"  reads: {s.get('reads_with_data', 0)} with data, {s.get('stale_reads', 0)} stale "
            f"(allowed), {s.get('final_reads', 0)} final reads",
        ]
        conv = s.get("convergence")
        if conv:
            lines.append(
                f"  convergence: {'yes' if conv.get('converged') else 'NO'} in {conv.get('seconds', 0):.1f}s "
                f"(bound {conv.get('bound', 0):.0f}s, {conv.get('files', '?')} files, R={conv.get('r', '?')})"
            )
        for extra in ("faults", "duration"):
            if extra in s:
                lines.append(f"  {extra}: {s[extra]}")
        for v in self.violations[:50]:
            lines.append(f"  VIOLATION {v}")
        if len(self.violations) > 50:
            lines.append(f"  ... and {len(self.violations) - 50} more violations")
        return "\n".join(lines)


def _writes(ops: list[Op]) -> list[Op]:
    return [o for o in ops if o.op in ("put", "delete")]


def check(
    history: Iterable[Op],
    final_reads: Iterable[FinalRead] = (),
    convergence: dict[str, Any] | None = None,
    leaders: Iterable[tuple[int, str]] = (),
) -> CheckReport:
    """Judge a history; see the module docstring for exactly what is checked.

    ``leaders`` are (term, leader id) pairs observed in the nodes' /status during the run: a
    node only names a leader it heard from in that term, so two ids for one term is split brain.
    """
    ops = sorted(history, key=lambda o: (o.start, o.id))
    finals = list(final_reads)
    violations: list[Violation] = []
    by_key: dict[str, list[Op]] = defaultdict(list)
    for o in ops:
        by_key[o.key].append(o)

    stale = 0
    with_data = 0
    for o in ops:
        if o.op != "get" or o.outcome != "ok":
            continue
        if o.sha256 is not None:
            with_data += 1
            violations += _check_read(o, by_key[o.key])
        stale += _is_stale(o, by_key[o.key])

    finals_by_key: dict[str, list[FinalRead]] = defaultdict(list)
    for fr in finals:
        finals_by_key[fr.key].append(fr)
    for key, key_ops in sorted(by_key.items()):
        acked = [w for w in _writes(key_ops) if w.outcome == "ok"]
        if acked and key not in finals_by_key and finals:
            violations.append(Violation("missing_final_read", key, "acknowledged writes but no final read"))
    for key, frs in sorted(finals_by_key.items()):
        violations += _check_final(key, by_key.get(key, []), frs)

    if convergence is not None and not convergence.get("converged", False):
        lagging = convergence.get("lagging") or []
        violations.append(
            Violation(
                "not_converged",
                "*",
                f"files did not reach R verified replicas within {convergence.get('bound')}s: {lagging[:5]}",
            )
        )

    by_term: dict[int, set[str]] = defaultdict(set)
    for term, leader in leaders:
        by_term[term].add(leader)
    for term, ids in sorted(by_term.items()):
        if len(ids) > 1:
            violations.append(Violation("two_leaders", f"term {term}", f"leaders {sorted(ids)}"))

    stats: dict[str, Any] = {
        "terms_observed": len(by_term),
        "ops": len(ops),
        "keys": len(by_key),
        "outcomes": dict(Counter(f"{o.op}:{o.outcome}" for o in ops)),
        "reads_with_data": with_data,
        "stale_reads": stale,
        "final_reads": len(finals),
        "violations": dict(Counter(v.kind for v in violations)),
    }
    if convergence is not None:
        stats["convergence"] = convergence
    return CheckReport(violations, stats)


def _check_read(o: Op, key_ops: list[Op]) -> list[Violation]:
    """A read that returned bytes: they must be the promised ones and belong to a possible write."""
    out: list[Violation] = []
    if o.etag is not None and o.etag != o.sha256:
        out.append(
            Violation("corrupt_read", o.key, f"body sha256 {o.sha256[:12]} != ETag {o.etag[:12]}", [o.id])
        )
    puts = [p for p in key_ops if p.op == "put" and p.sha256 == o.sha256]
    possible = [p for p in puts if p.outcome in ("ok", "unknown") and p.start <= o.end]
    if possible:
        return out
    if any(p.outcome == "fail" for p in puts):
        ids = [o.id] + [p.id for p in puts]
        out.append(Violation("phantom_read", o.key, "read returned a write the node refused", ids))
    elif puts:
        ids = [o.id] + [p.id for p in puts]
        out.append(Violation("future_read", o.key, "read returned a write invoked after it ended", ids))
    else:
        out.append(
            Violation("corrupt_read", o.key, f"read bytes {str(o.sha256)[:12]} match no write", [o.id])
        )
    return out


def _is_stale(o: Op, key_ops: list[Op]) -> bool:
    """A read that missed an acknowledged write completed before it began (allowed, counted)."""
    done_before = [w for w in _writes(key_ops) if w.outcome == "ok" and w.end < o.start and w.version]
    if not done_before:
        return False
    newest = max(done_before, key=lambda w: w.version or "")
    if o.version is not None:
        return o.version < (newest.version or "")
    return newest.op == "put"  # absent, yet a put was acknowledged earlier


def _check_final(key: str, key_ops: list[Op], frs: list[FinalRead]) -> list[Violation]:
    """After healing: the newest acknowledged write (or a possibly-later unknown one) everywhere."""
    out: list[Violation] = []
    writes = _writes(key_ops)
    acked = [w for w in writes if w.outcome == "ok" and w.version is not None]
    newest = max(acked, key=lambda w: w.version or "") if acked else None
    unknown_puts = {w.sha256 for w in writes if w.op == "put" and w.outcome == "unknown"}
    unknown_delete = any(w.op == "delete" and w.outcome == "unknown" for w in writes)
    failed_puts = {w.sha256: w for w in writes if w.op == "put" and w.outcome == "fail"}
    answers: set[str | None] = set()
    for fr in frs:
        if fr.error is not None:
            out.append(Violation("final_read_failed", key, f"{fr.gateway}: {fr.error}"))
            continue
        if fr.body_sha256 is not None and fr.sha256 is not None and fr.body_sha256 != fr.sha256:
            out.append(
                Violation("corrupt_read", key, f"final read on {fr.gateway}: body does not match its ETag")
            )
        value = fr.body_sha256 or fr.sha256
        answers.add(value)
        where = f"on {fr.gateway}"
        if newest is not None and fr.version is not None and fr.version < (newest.version or ""):
            out.append(
                Violation(
                    "lost_write",
                    key,
                    f"{where} version {fr.version} is older than acknowledged {newest.op} {newest.version}",
                    [newest.id],
                )
            )
            continue
        if value is None:
            if newest is not None and newest.op == "put" and not unknown_delete:
                out.append(
                    Violation(
                        "lost_write",
                        key,
                        f"{where} absent, but put {newest.id} was acknowledged",
                        [newest.id],
                    )
                )
            continue
        if newest is not None and newest.op == "put" and value == newest.sha256:
            continue
        if value in unknown_puts:
            continue
        if value in failed_puts:
            out.append(
                Violation(
                    "phantom_write", key, f"{where} serves a write the node refused", [failed_puts[value].id]
                )
            )
        elif (
            newest is not None
            and newest.op == "delete"
            and any(w.sha256 == value for w in writes if w.op == "put")
        ):
            out.append(
                Violation("resurrected", key, f"{where} serves data deleted by op {newest.id}", [newest.id])
            )
        elif any(w.sha256 == value for w in writes if w.op == "put"):
            ids = [newest.id] if newest else []
            out.append(
                Violation("lost_write", key, f"{where} serves an older write than the newest ack", ids)
            )
        else:
            out.append(Violation("corrupt_read", key, f"{where} serves bytes that match no write"))
    if len(answers) > 1:
        out.append(Violation("divergent", key, f"gateways disagree: {sorted(map(str, answers))}"))
    return out
