"""Lifecycle rules of a folder (S3's PutBucketLifecycleConfiguration, a subset) and what they
decide for one key, sans I/O: given the key's versions (newest first) and the time, which
actions to take. The leader's runner (s3/lifecycle.py) feeds it and carries the actions out
through the coordinator, so they replicate like any delete.

Subset: ``Filter``/``Prefix``, ``Status``, ``Expiration`` (``Days`` for current objects;
``ExpiredObjectDeleteMarker``), ``NoncurrentVersionExpiration`` (``NoncurrentDays``,
``NewerNoncurrentVersions``), ``AbortIncompleteMultipartUpload`` (``DaysAfterInitiation``).
A version becomes noncurrent when the next one is written: its noncurrent age counts from the
newer version's time, as on S3.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

DAY = 86400.0
MAX_RULES = 100


@dataclass(frozen=True)
class Rule:
    id: str
    prefix: str = ""
    enabled: bool = True
    expiration_days: int | None = None
    expired_object_delete_marker: bool = False
    noncurrent_days: int | None = None
    newer_noncurrent_versions: int = 0
    abort_upload_days: int | None = None

    def validate(self) -> Rule:
        """Raise ValueError saying what is wrong (S3's own rules for these fields)."""
        for name in ("expiration_days", "noncurrent_days", "abort_upload_days"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive whole number of days")
        newer = self.newer_noncurrent_versions
        if not isinstance(newer, int) or not 0 <= newer <= 100:
            raise ValueError("NewerNoncurrentVersions must be between 1 and 100")
        if self.expiration_days is not None and self.expired_object_delete_marker:
            raise ValueError("Expiration takes Days or ExpiredObjectDeleteMarker, not both")
        if not any((self.expiration_days, self.expired_object_delete_marker, self.noncurrent_days,
                    self.abort_upload_days)):  # fmt: skip
            raise ValueError(f"rule {self.id!r} has no action")
        if len(self.id) > 255:
            raise ValueError("a rule ID is at most 255 characters")
        return self


def dumps(rules: list[Rule]) -> str:
    return json.dumps([asdict(r) for r in rules], separators=(",", ":"))


def loads(text: str) -> list[Rule]:
    return [Rule(**r) for r in json.loads(text)] if text else []


@dataclass(frozen=True)
class Version:
    """What the rules look at of one version."""

    vid: str
    modified: float
    delete_marker: bool


@dataclass(frozen=True)
class Action:
    kind: str  # "expire": delete the current object (a marker where versioned); "remove": one version
    key: str
    vid: str = ""


def decide(rules: list[Rule], key: str, versions: list[Version], now: float) -> list[Action]:
    """The actions the enabled rules matching ``key`` take on its versions (newest first)."""
    if not versions:
        return []
    removed: set[str] = set()
    expire = False
    current = versions[0]
    for rule in rules:
        if not rule.enabled or not key.startswith(rule.prefix):
            continue
        days = rule.expiration_days
        if days is not None and not current.delete_marker and current.modified <= now - days * DAY:
            expire = True
        if rule.expired_object_delete_marker and current.delete_marker and len(versions) == 1:
            removed.add(current.vid)
        if rule.noncurrent_days is not None:
            for i in range(1, len(versions)):
                since = versions[i - 1].modified  # noncurrent since its successor was written
                if i - 1 >= rule.newer_noncurrent_versions and since <= now - rule.noncurrent_days * DAY:
                    removed.add(versions[i].vid)
    actions = [Action("expire", key)] if expire else []
    return actions + [Action("remove", key, v.vid) for v in versions if v.vid in removed]


def rule_json(rule: Rule) -> dict[str, Any]:
    return asdict(rule)
