"""AWS Signature Version 4 for S3, sans I/O: canonical request, string to sign, signing key, and
the checks of a request signed in its Authorization header or in a presigned query string.

The caller hands in the request as it arrived (method, decoded path, decoded query pairs,
lower-cased headers) and the time; nothing here reads a socket or a clock. Signatures are
compared in constant time. What the signature covers of the body is told by the payload mode
(x-amz-content-sha256): a hex sha256 the caller checks against the body as it streams,
UNSIGNED-PAYLOAD, or one of the aws-chunked modes that chunked.py decodes and checks.
"""

from __future__ import annotations

import calendar
import email.utils
import functools
import hashlib
import hmac
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import quote

from .errors import S3Error

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
STREAMING_MODES = (STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER)
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
# Payload modes known without a regex: the named modes and the empty body's sha256 (every GET).
_KNOWN_PAYLOADS = frozenset((UNSIGNED, *STREAMING_MODES, EMPTY_SHA256))
# The headers boto3, the AWS CLI and the bench sign on a request without a body to describe.
COMMON_SIGNED = ("host", "x-amz-content-sha256", "x-amz-date")
_COMMON_NAMES = ";".join(COMMON_SIGNED)
MAX_SKEW = 15 * 60  # seconds a request's time may differ from ours
MAX_EXPIRES = 7 * 24 * 3600  # the longest a presigned URL may live
SERVICE = "s3"
TERMINATOR = "aws4_request"

_HEX64 = re.compile(r"[0-9a-f]{64}")
_AMZ_DATE = re.compile(r"(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z")
_SPACES = re.compile(r"\s+")
_RUN = re.compile(r"\s\s|[^\S ]")  # whitespace that trimming changes: a run, or not a plain space
_UNRESERVED = re.compile(r"[A-Za-z0-9\-_.~]*")
_UNRESERVED_PATH = re.compile(r"[A-Za-z0-9\-_.~/]*")
_BLOCK = 64  # SHA-256's block size, which HMAC pads its key to
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


@dataclass(slots=True)
class Request:
    """What a signature covers: method, decoded path, decoded query pairs, lower-case headers
    (a repeated header's values joined with ',')."""

    method: str
    path: str
    query: Sequence[tuple[str, str]]
    headers: Mapping[str, str]

    def param(self, name: str) -> str | None:
        return next((v for k, v in self.query if k == name), None)


class Scope(NamedTuple):
    """A credential's scope. A named tuple: hashed in C when it keys the signing-key cache."""

    date: str  # YYYYMMDD
    region: str
    service: str = SERVICE

    def __str__(self) -> str:
        return _scope_text(self)


@functools.lru_cache(maxsize=256)
def _scope_text(scope: Scope) -> str:
    return f"{scope.date}/{scope.region}/{scope.service}/{TERMINATOR}"


@dataclass(slots=True)
class Signed:
    """The signature a request claims, parsed and checked for shape and time, not yet verified."""

    access_key: str
    scope: Scope
    signed_headers: tuple[str, ...]
    signature: str
    amz_date: str  # YYYYMMDDTHHMMSSZ
    payload: str  # a hex sha256, UNSIGNED-PAYLOAD or a streaming mode
    presigned: bool


@dataclass(slots=True)
class Verified:
    """A verified request: what chunk signatures of its body are checked with."""

    access_key: str
    key: bytes  # the signing key
    scope: Scope
    amz_date: str
    seed: str  # the request's own signature, which the first chunk signature chains from
    payload: str


# ---- the pieces of the algorithm ----
def uri_encode(text: str, slash: bool = True) -> str:
    """S3's URI encoding: everything but unreserved characters (and '/' in paths) as %XX of UTF-8."""
    if (_UNRESERVED if slash else _UNRESERVED_PATH).fullmatch(text):
        return text  # the usual key: nothing to encode
    return quote(text, safe="-_.~" if slash else "/-_.~")


def canonical_query(query: Sequence[tuple[str, str]], presigned: bool = False) -> str:
    if not query:
        return ""
    pairs = sorted(
        (uri_encode(k), uri_encode(v)) for k, v in query if not (presigned and k == "X-Amz-Signature")
    )
    return "&".join(f"{k}={v}" for k, v in pairs)


def canonical_headers(headers: Mapping[str, str], names: Sequence[str]) -> str:
    """The signed headers as signed: values stripped, inner runs of whitespace as one space."""
    out = []
    for n in names:
        value = headers.get(n, "").strip()
        if _RUN.search(value):
            value = _SPACES.sub(" ", value)
        out.append(f"{n}:{value}\n")
    return "".join(out)


def canonical_request(req: Request, signed_headers: Sequence[str], payload: str, presigned: bool) -> str:
    if not req.query and signed_headers == COMMON_SIGNED:
        common = _common_canonical(req, payload)
        if common is not None:
            return common
    return "\n".join((
        req.method,
        uri_encode(req.path or "/", slash=False),
        canonical_query(req.query, presigned),
        canonical_headers(req.headers, signed_headers),
        ";".join(signed_headers),
        payload,
    ))  # fmt: skip


def _common_canonical(req: Request, payload: str) -> str | None:
    """The canonical request of the usual shape (no query, the three COMMON_SIGNED headers) in
    one format, or None when it needs the general path: a header value with any whitespace (to
    trim or fold) or a path with characters to encode. Same text as the general path."""
    headers = req.headers
    host = headers.get("host", "")
    sha = headers.get("x-amz-content-sha256", "")
    date = headers.get("x-amz-date", "")
    values = host + sha + date
    # isprintable() is False for every whitespace character but ' ' (str.isspace's set is
    # Unicode categories Zs, Zl, Zp and control characters): one C scan each, no regex.
    if " " in values or not values.isprintable():
        return None
    path = req.path or "/"
    if not _UNRESERVED_PATH.fullmatch(path):
        return None
    return (f"{req.method}\n{path}\n\nhost:{host}\nx-amz-content-sha256:{sha}\nx-amz-date:{date}\n\n"
            f"{_COMMON_NAMES}\n{payload}")  # fmt: skip


def string_to_sign(amz_date: str, scope: Scope, canonical: str) -> str:
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return _sts_head(amz_date, scope) + digest


@functools.lru_cache(maxsize=64)  # requests signed in the same second share it
def _sts_head(amz_date: str, scope: Scope) -> str:
    return f"{ALGORITHM}\n{amz_date}\n{_scope_text(scope)}\n"


@functools.lru_cache(maxsize=256)
def signing_key(secret: str, scope: Scope) -> bytes:
    """The day's key for ``scope`` (kept: four HMACs saved on every request of the day)."""
    key = _hmac(("AWS4" + secret).encode(), scope.date)
    for part in (scope.region, scope.service, TERMINATOR):
        key = _hmac(key, part)
    return key


@functools.lru_cache(maxsize=256)
def _pads(key: bytes) -> tuple[Any, Any]:
    """HMAC-SHA256's inner and outer hashes with ``key``'s pads already absorbed (RFC 2104): a
    signature is then two hash copies and updates, not an HMAC object built in Python per call.
    A signing key (32 bytes, the output of an HMAC) never exceeds the block size."""
    padded = key.ljust(_BLOCK, b"\0")
    return hashlib.sha256(padded.translate(_IPAD)), hashlib.sha256(padded.translate(_OPAD))


def sign(key: bytes, text: str) -> str:
    """HMAC-SHA256 of ``text`` (hex). Not the one-shot hmac.digest: that one releases the GIL
    around every call, and a node whose SQLite threads hold it then waits for a switch interval
    per request. hashlib keeps the GIL for inputs this short."""
    if len(key) > _BLOCK:
        return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
    inner_base, outer_base = _pads(key)
    inner = inner_base.copy()
    inner.update(text.encode())
    outer = outer_base.copy()
    outer.update(inner.digest())
    return outer.hexdigest()


def chunk_string_to_sign(amz_date: str, scope: Scope, previous: str, chunk_sha256: str) -> str:
    """What one aws-chunked chunk's signature covers: it chains from the previous signature."""
    return f"{ALGORITHM}-PAYLOAD\n{amz_date}\n{scope}\n{previous}\n{EMPTY_SHA256}\n{chunk_sha256}"


def trailer_string_to_sign(amz_date: str, scope: Scope, previous: str, trailer: bytes) -> str:
    """What the trailer signature of a signed aws-chunked body covers (its trailing headers)."""
    return f"{ALGORITHM}-TRAILER\n{amz_date}\n{scope}\n{previous}\n{hashlib.sha256(trailer).hexdigest()}"


def same(a: str, b: str) -> bool:
    """Constant-time equality of two signatures (any text; ASCII compared as it is)."""
    if a.isascii() and b.isascii():
        return hmac.compare_digest(a, b)
    return hmac.compare_digest(a.encode("utf-8", "replace"), b.encode("utf-8", "replace"))


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


# ---- parsing and checking a request ----
def parse(req: Request, now: float, region: str) -> Signed | None:
    """The signature a request claims (None for an anonymous request), checked for shape,
    scope and time. Raises S3Error with the code the real service would answer."""
    auth = req.headers.get("authorization")
    presigned = bool(req.query) and (
        req.param("X-Amz-Algorithm") is not None or req.param("X-Amz-Signature") is not None
    )
    if auth is not None and presigned:
        raise S3Error("InvalidArgument", "Only one auth mechanism allowed; only the X-Amz-Algorithm "
                      "query parameter or the Authorization header should be specified")  # fmt: skip
    if presigned:
        return _parse_query(req, now, region)
    if auth is None:
        if req.query and req.param("AWSAccessKeyId") is not None:
            raise S3Error("InvalidRequest", "Signature Version 2 is not supported; use AWS4-HMAC-SHA256.")
        return None
    return _parse_header(req, auth, now, region)


def _parse_header(req: Request, auth: str, now: float, region: str) -> Signed:
    algorithm, _, rest = auth.strip().partition(" ")
    if algorithm != ALGORITHM:
        if algorithm == "AWS":
            raise S3Error("InvalidRequest", "The authorization mechanism you have provided is not "
                          "supported. Please use AWS4-HMAC-SHA256.")  # fmt: skip
        raise S3Error("AuthorizationHeaderMalformed", f"unsupported authorization type {algorithm[:40]!r}")
    # The usual header ends in its signature: what comes before it is the same for every request
    # of a client's day, parsed once.
    at = rest.rfind("Signature=")
    if at > 0 and "," not in rest[at:]:
        access_key, scope, names = _header_fields(rest[:at], region)
        signature = rest[at + len("Signature=") :].strip()
    else:
        access_key, scope, names, signature = _header_fields_of(rest, region)
    amz_date = _request_date(req)
    _check_scope_date(scope, amz_date, "AuthorizationHeaderMalformed")
    skew = abs(now - _epoch(amz_date))
    if skew > MAX_SKEW:
        raise S3Error("RequestTimeTooSkewed", "The difference between the request time and the "
                      "current time is too large.", RequestTime=amz_date, MaxAllowedSkewMilliseconds=
                      str(MAX_SKEW * 1000))  # fmt: skip
    payload = req.headers.get("x-amz-content-sha256")
    if payload is None:
        raise S3Error("InvalidRequest", "Missing required header for this request: x-amz-content-sha256")
    return Signed(access_key, scope, names, signature, amz_date, check_payload_mode(payload), presigned=False)


def _header_fields_of(rest: str, region: str) -> tuple[str, Scope, tuple[str, ...], str]:
    """(access key, scope, signed header names, signature) of an Authorization header's fields."""
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, eq, value = part.strip().partition("=")
        if eq:
            fields[name] = value.strip()
    missing = [n for n in ("Credential", "SignedHeaders", "Signature") if n not in fields]
    if missing:
        raise S3Error("AuthorizationHeaderMalformed", f"the authorization header lacks {', '.join(missing)}")
    access_key, scope = _credential(fields["Credential"], region, "AuthorizationHeaderMalformed")
    names = _signed_headers(fields["SignedHeaders"], "AuthorizationHeaderMalformed")
    return access_key, scope, names, fields["Signature"]


@functools.lru_cache(maxsize=256)
def _header_fields(head: str, region: str) -> tuple[str, Scope, tuple[str, ...]]:
    """:func:`_header_fields_of` for the fields before a final ``Signature=`` (cached: pure)."""
    access_key, scope, names, _ = _header_fields_of(head + "Signature=", region)
    return access_key, scope, names


def _parse_query(req: Request, now: float, region: str) -> Signed:
    err = "AuthorizationQueryParametersError"
    values = {n: req.param(n) for n in ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date",
                                         "X-Amz-Expires", "X-Amz-SignedHeaders",
                                         "X-Amz-Signature")}  # fmt: skip
    missing = [n for n, v in values.items() if v is None]
    if missing:
        raise S3Error(err, f"Query-string authentication version 4 requires {', '.join(missing)}")
    if values["X-Amz-Algorithm"] != ALGORITHM:
        raise S3Error(err, 'X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"')
    access_key, scope = _credential(values["X-Amz-Credential"] or "", region, err)
    amz_date = values["X-Amz-Date"] or ""
    if not _AMZ_DATE.fullmatch(amz_date):
        raise S3Error(err, "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
    _check_scope_date(scope, amz_date, err)
    raw = values["X-Amz-Expires"] or ""
    if not raw.isdigit():
        raise S3Error(err, "X-Amz-Expires should be a number")
    expires = int(raw)
    if expires < 1:
        raise S3Error(err, "X-Amz-Expires must be non-negative and at least 1 second")
    if expires > MAX_EXPIRES:
        raise S3Error(err, f"X-Amz-Expires must be less than a week (in seconds) that is {MAX_EXPIRES}")
    signed_at = _epoch(amz_date)
    if now < signed_at - MAX_SKEW:
        raise S3Error("AccessDenied", "Request is not valid yet")
    if now > signed_at + expires:
        raise S3Error("AccessDenied", "Request has expired")
    payload = req.headers.get("x-amz-content-sha256") or req.param("X-Amz-Content-Sha256") or UNSIGNED
    return Signed(access_key, scope, _signed_headers(values["X-Amz-SignedHeaders"] or "", err),
                  values["X-Amz-Signature"] or "", amz_date, check_payload_mode(payload),
                  presigned=True)  # fmt: skip


def check_payload_mode(value: str) -> str:
    """x-amz-content-sha256: a hex sha256 or one of the modes this server decodes."""
    if value in _KNOWN_PAYLOADS or _HEX64.fullmatch(value):
        return value
    if value.startswith("STREAMING-"):
        raise S3Error("NotImplemented", f"x-amz-content-sha256 {value[:60]} is not implemented")
    raise S3Error("InvalidArgument", "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, a streaming "
                  "mode or a valid sha256 value.")  # fmt: skip


@functools.lru_cache(maxsize=256)  # one key's credential is the same all day: parsed once
def _credential(raw: str, region: str, err: str) -> tuple[str, Scope]:
    parts = raw.split("/")
    if len(parts) < 5 or not parts[0]:
        raise S3Error(
            err, 'the credential is malformed; expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request"'
        )
    access_key = "/".join(parts[:-4])
    date, got_region, service, terminator = parts[-4:]
    if not re.fullmatch(r"\d{8}", date):
        raise S3Error(err, f"the credential date {date[:20]!r} is not YYYYMMDD")
    if got_region != region:
        raise S3Error(err, f"the region '{got_region[:40]}' is wrong; expecting '{region}'", Region=region)
    if service != SERVICE:
        raise S3Error(err, f"the service '{service[:40]}' is wrong; expecting '{SERVICE}'")
    if terminator != TERMINATOR:
        raise S3Error(err, f"the credential must end in {TERMINATOR}")
    return access_key, Scope(date, got_region, service)


@functools.lru_cache(maxsize=256)
def _signed_headers(raw: str, err: str) -> tuple[str, ...]:
    names = tuple(raw.split(";")) if raw else ()
    if "host" not in names:
        raise S3Error(err, "the host header must be signed")
    if any(n != n.lower() or not n for n in names):
        raise S3Error(err, "signed header names must be lower case")
    return names


def _check_scope_date(scope: Scope, amz_date: str, err: str) -> None:
    if scope.date != amz_date[:8]:
        raise S3Error(err, f"the credential date {scope.date} does not match the request date {amz_date[:8]}")


def _request_date(req: Request) -> str:
    """The request time as YYYYMMDDTHHMMSSZ: x-amz-date, else the Date header."""
    raw = req.headers.get("x-amz-date")
    if raw is not None:
        amz_date = _amz_date(raw)
        if amz_date is None:
            raise S3Error("AccessDenied", "AWS authentication requires a valid Date or x-amz-date header")
        return amz_date
    raw = req.headers.get("date")
    parsed = email.utils.parsedate_tz(raw) if raw else None
    if parsed is None:
        raise S3Error("AccessDenied", "AWS authentication requires a valid Date or x-amz-date header")
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(email.utils.mktime_tz(parsed)))


@functools.lru_cache(maxsize=64)  # requests in the same second share it
def _amz_date(raw: str) -> str | None:
    """An x-amz-date header's value, stripped, when it is YYYYMMDDTHHMMSSZ; else None."""
    raw = raw.strip()
    return raw if _AMZ_DATE.fullmatch(raw) else None


@functools.lru_cache(maxsize=64)  # requests in the same second share it
def _epoch(amz_date: str) -> float:
    m = _AMZ_DATE.fullmatch(amz_date)
    assert m is not None
    y, mo, d, h, mi, s = (int(g) for g in m.groups())
    try:
        return float(calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)))
    except (ValueError, OverflowError):
        raise S3Error("AccessDenied", "the request date is not a valid time") from None


def verify(signed: Signed, req: Request, secret: str) -> Verified:
    """Recompute the signature with ``secret``; SignatureDoesNotMatch unless it is the one sent."""
    payload = UNSIGNED if signed.presigned and signed.payload == UNSIGNED else signed.payload
    canonical = canonical_request(req, signed.signed_headers, payload, signed.presigned)
    sts = string_to_sign(signed.amz_date, signed.scope, canonical)
    key = signing_key(secret, signed.scope)
    expected = sign(key, sts)
    if not same(expected, signed.signature):
        raise S3Error("SignatureDoesNotMatch", "The request signature we calculated does not match the "
                      "signature you provided. Check your key and signing method.")  # fmt: skip
    return Verified(signed.access_key, key, signed.scope, signed.amz_date, expected, signed.payload)
