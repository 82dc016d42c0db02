"""Bucket CORS: the rules of PutBucketCors (parsed from and written as S3's XML, kept in the
bucket's registry record) and S3's matching of a browser's request against them. Plain
functions, no I/O: the S3 app answers preflights and stamps responses with what they return.

A rule matches when the request's Origin matches one of its AllowedOrigin (each may hold one
``*`` wildcard), its method (or, in a preflight, Access-Control-Request-Method) is one of its
AllowedMethod, and, in a preflight, every header of Access-Control-Request-Headers matches
one of its AllowedHeader (case-insensitive, one ``*`` wildcard each). The first rule that matches
wins, as on S3.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from . import xml as s3xml
from .errors import S3Error

METHODS = ("GET", "PUT", "POST", "DELETE", "HEAD")
MAX_RULES = 100


@dataclass(frozen=True)
class Rule:
    origins: tuple[str, ...]
    methods: tuple[str, ...]
    headers: tuple[str, ...] = ()
    expose: tuple[str, ...] = ()
    max_age: int | None = None
    rule_id: str | None = None

    def record(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def rules_from_record(raw: Iterable[Mapping[str, Any]] | None) -> tuple[Rule, ...]:
    """Rules as the registry record holds them (lists of strings)."""
    if not raw:
        return ()
    return tuple(
        Rule(tuple(r.get("origins", ())), tuple(r.get("methods", ())), tuple(r.get("headers", ())),
             tuple(r.get("expose", ())), r.get("max_age"), r.get("rule_id"))
        for r in raw
    )  # fmt: skip


def _malformed(why: str) -> S3Error:
    return S3Error(
        "MalformedXML", f"The XML you provided did not validate against our published schema: {why}"
    )


def parse(body: bytes) -> tuple[Rule, ...]:
    """A PutBucketCors body; MalformedXML or InvalidRequest when it is not a valid configuration."""
    root = s3xml.parse(body)
    if s3xml.local(root.tag) != "CORSConfiguration":
        raise _malformed("the root must be <CORSConfiguration>")
    rules: list[Rule] = []
    for elem in root:
        if s3xml.local(elem.tag) != "CORSRule":
            raise _malformed(f"unexpected <{s3xml.local(elem.tag)[:40]}>")
        values: dict[str, list[str]] = {}
        for child in elem:
            values.setdefault(s3xml.local(child.tag), []).append((child.text or "").strip())
        unknown = set(values) - {"AllowedOrigin", "AllowedMethod", "AllowedHeader", "ExposeHeader",
                                 "MaxAgeSeconds", "ID"}  # fmt: skip
        if unknown:
            raise _malformed(f"unexpected <{sorted(unknown)[0][:40]}> in <CORSRule>")
        origins, methods = values.get("AllowedOrigin", []), values.get("AllowedMethod", [])
        if not origins or not methods:
            raise _malformed("each CORSRule needs an AllowedOrigin and an AllowedMethod")
        for method in methods:
            if method not in METHODS:
                raise S3Error("InvalidRequest", f"Found unsupported HTTP method in CORS config. "
                              f"Unsupported method is {method[:20]}")  # fmt: skip
        for pattern in origins + values.get("AllowedHeader", []):
            if pattern.count("*") > 1:
                raise S3Error("InvalidRequest", f'AllowedOrigin/AllowedHeader "{pattern[:80]}" can not '
                              "have more than one wildcard.")  # fmt: skip
        max_age = None
        if "MaxAgeSeconds" in values:
            raw = values["MaxAgeSeconds"][-1]
            if not raw.isdigit():
                raise _malformed("MaxAgeSeconds must be a non-negative integer")
            max_age = int(raw)
        rule_id = values["ID"][-1] if "ID" in values else None
        rules.append(Rule(tuple(origins), tuple(methods), tuple(values.get("AllowedHeader", [])),
                          tuple(values.get("ExposeHeader", [])), max_age, rule_id))  # fmt: skip
    if not rules:
        raise _malformed("a CORSConfiguration needs at least one CORSRule")
    if len(rules) > MAX_RULES:
        raise _malformed(f"at most {MAX_RULES} CORSRules")
    return tuple(rules)


def document(rules: Iterable[Rule]) -> bytes:
    """GetBucketCors' answer."""
    parts = []
    for r in rules:
        body = s3xml.el("ID", r.rule_id) if r.rule_id is not None else ""
        body += "".join(s3xml.el("AllowedOrigin", o) for o in r.origins)
        body += "".join(s3xml.el("AllowedMethod", m) for m in r.methods)
        body += "".join(s3xml.el("AllowedHeader", h) for h in r.headers)
        body += "".join(s3xml.el("ExposeHeader", h) for h in r.expose)
        body += s3xml.el("MaxAgeSeconds", r.max_age) if r.max_age is not None else ""
        parts.append(f"<CORSRule>{body}</CORSRule>")
    return s3xml.document("CORSConfiguration", "".join(parts))


def wildcard_match(pattern: str, value: str) -> bool:
    """``pattern`` with at most one ``*`` (any run of characters) against ``value``."""
    if "*" not in pattern:
        return pattern == value
    head, _, tail = pattern.partition("*")
    return len(value) >= len(head) + len(tail) and value.startswith(head) and value.endswith(tail)


def find(rules: Iterable[Rule], origin: str, method: str, request_headers: Iterable[str] = ()) -> Rule | None:
    """The first rule allowing ``origin`` to send ``method`` with ``request_headers``."""
    wanted = [h.strip().lower() for h in request_headers if h.strip()]
    for rule in rules:
        if method not in rule.methods or not any(wildcard_match(o, origin) for o in rule.origins):
            continue
        allowed = [h.lower() for h in rule.headers]
        if all(any(wildcard_match(a, h) for a in allowed) for h in wanted):
            return rule
    return None


def response_headers(
    rule: Rule, origin: str, preflight_headers: Iterable[str] | None = None
) -> dict[str, str]:
    """What S3 adds for a matching rule: the allowed origin (``*`` when the rule allows any),
    methods, exposed headers, max age, and for a preflight the request headers it allows."""
    headers = {
        "Access-Control-Allow-Origin": "*" if "*" in rule.origins else origin,
        "Access-Control-Allow-Methods": ", ".join(rule.methods),
        "Vary": "Origin, Access-Control-Request-Headers, Access-Control-Request-Method",
    }
    if "*" not in rule.origins:
        headers["Access-Control-Allow-Credentials"] = "true"
    if rule.expose:
        headers["Access-Control-Expose-Headers"] = ", ".join(rule.expose)
    if rule.max_age is not None:
        headers["Access-Control-Max-Age"] = str(rule.max_age)
    wanted = [h.strip() for h in preflight_headers or () if h.strip()]
    if wanted:
        headers["Access-Control-Allow-Headers"] = ", ".join(h.lower() for h in wanted)
    return headers
