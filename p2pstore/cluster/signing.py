"""Signed internal requests, for clusters that run without TLS (``--insecure-plain``).

Why: a static bearer secret sent in clear text can be captured and replayed, and the request it
travels with altered. Instead every internal request carries an HMAC-SHA256, keyed with the
cluster secret, over what it asks for: the method, the node it is meant for (Host), the path
and query, a timestamp, a nonce (unique: a random per-process prefix and a counter), a digest
of its body and the protocol version. The receiver recomputes it (compared in constant time),
refuses timestamps outside a window of ``WINDOW`` seconds and remembers every nonce it
accepted for that long, so a captured request is accepted at most once, by the node it was
sent to, and never with another body.

The body digest is the body's sha256, except for two bulk endpoints whose bytes are checked
against a signed manifest entry anyway: a staged upload (``UNSIGNED``: its chunks name
themselves and the signed commit lists them) and a raw one-phase write (``ENTRY``: the signed
``X-P2PStore-Entry`` header carries the body's sha256, which the replica checks).

The secret never travels. What this does not give: confidentiality, nor integrity of answers or
of the frames after an RPC stream's signed upgrade (see docs/security.md); TLS gives those.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import secrets
import time
from collections import OrderedDict
from collections.abc import Mapping

from .codec import ENTRY_HEADER, PROTOCOL_VERSION

SIGNATURE_HEADER = "X-P2PStore-Signature"
TIME_HEADER = "X-P2PStore-Time"
NONCE_HEADER = "X-P2PStore-Nonce"
BODY_HEADER = "X-P2PStore-Body"
UNSIGNED = "UNSIGNED"  # a staged upload's body: checked chunk by chunk at the signed commit
ENTRY = "ENTRY"  # a raw write's body: checked against the signed entry header's sha256
EMPTY = hashlib.sha256(b"").hexdigest()
WINDOW = 60.0  # seconds a signed request stays valid either side of the receiver's clock
MAX_NONCES = 500_000  # accepted nonces remembered at once; beyond this new requests wait (refused)
SCHEME = "p2pstore-hmac-sha256-v1"


# A nonce needs to be unique, not secret: a random prefix per process and a counter give that
# without a getrandom() call per signed request (2-3 % of a busy event loop).
_NONCE_PREFIX = secrets.token_hex(12)
_nonce_counter = itertools.count()


class SignatureError(Exception):
    """A request's signature is missing, wrong, stale or replayed (the message says which)."""


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def canonical(method: str, host: str, path: str, timestamp: str, nonce: str, body: str, entry: str) -> bytes:
    """The exact bytes signed: one field a line, so no field can borrow from its neighbour."""
    fields = (SCHEME, method.upper(), host, path, timestamp, nonce, body, entry, str(PROTOCOL_VERSION))
    return "\n".join(fields).encode()


def signature(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(
    secret: str, method: str, host: str, path: str, body: str = EMPTY, entry: str = "",
    now: float | None = None,
) -> dict[str, str]:  # fmt: skip
    """The headers that authenticate one request (``body``: its digest, UNSIGNED or ENTRY;
    ``entry``: the X-P2PStore-Entry header's value when it has one)."""
    timestamp = f"{time.time() if now is None else now:.3f}"
    nonce = f"{_NONCE_PREFIX}{next(_nonce_counter):x}"
    mac = signature(secret, canonical(method, host, path, timestamp, nonce, body, entry))
    return {
        "Host": host, TIME_HEADER: timestamp, NONCE_HEADER: nonce, BODY_HEADER: body, SIGNATURE_HEADER: mac,
    }  # fmt: skip


class Verifier:
    """The receiving end: checks signatures and remembers the nonces it accepted."""

    def __init__(
        self, secret: str, window: float = WINDOW, max_nonces: int = MAX_NONCES, started: float | None = None
    ) -> None:
        self.secret = secret
        self.window = window
        self.max_nonces = max_nonces
        # the nonces live in memory: a request signed before this start may have been accepted
        # by the previous process, so it is refused (peers sign afresh when they retry)
        self.started = time.time() if started is None else started
        self._nonces: OrderedDict[str, float] = OrderedDict()  # nonce -> when it may be forgotten

    def verify(self, method: str, path: str, headers: Mapping[str, str], now: float | None = None) -> str:
        """Check one request; return the body digest it claims (the caller checks the body
        against it). Raises SignatureError saying why."""
        now = time.time() if now is None else now
        mac = headers.get(SIGNATURE_HEADER, "")
        timestamp, nonce = headers.get(TIME_HEADER, ""), headers.get(NONCE_HEADER, "")
        body, host = headers.get(BODY_HEADER, ""), headers.get("Host", "")
        if not (self.secret and mac and timestamp and nonce and body):
            raise SignatureError("unsigned internal request (wrong cluster secret or an old node?)")
        if not (8 <= len(nonce) <= 64) or len(mac) != 64:
            raise SignatureError("malformed signature headers")
        message = canonical(method, host, path, timestamp, nonce, body, headers.get(ENTRY_HEADER, ""))
        if not hmac.compare_digest(mac, signature(self.secret, message)):
            raise SignatureError("bad signature: wrong cluster secret, or the request was altered")
        try:
            sent = float(timestamp)
        except ValueError as exc:
            raise SignatureError("malformed timestamp") from exc
        if not abs(now - sent) <= self.window:  # also refuses nan
            raise SignatureError(
                f"signed {now - sent:+.0f}s from this node's clock (window ±{self.window:g}s): "
                "a replay, or the clocks differ (run NTP)"
            )
        if sent < self.started:
            raise SignatureError("signed before this node started (a replay across its restart?)")
        self._forget(now)
        if nonce in self._nonces:
            raise SignatureError("replayed request (nonce already used)")
        if len(self._nonces) >= self.max_nonces:
            raise SignatureError("too many signed requests in the replay window; retry shortly")
        self._nonces[nonce] = sent + self.window
        return body

    def _forget(self, now: float) -> None:
        """Drop nonces whose timestamp left the window: a replay of them is refused as stale."""
        nonces = self._nonces
        while nonces:
            nonce, until = next(iter(nonces.items()))
            if until >= now:  # insertion order is nearly time order: later ones wait a little longer
                break
            del nonces[nonce]

    def __len__(self) -> int:
        return len(self._nonces)
