"""The signature of plain-HTTP internal requests (cluster/signing.py): what it binds, how long
it lives, and that each one is accepted once."""

from __future__ import annotations

import pytest

from p2pstore.cluster.signing import (
    BODY_HEADER,
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIME_HEADER,
    SignatureError,
    Verifier,
    body_digest,
    sign,
)

NOW = 1_800_000_000.0
HOST = "10.0.0.1:7000"


def signed(body: bytes = b"msg", path: str = "/_internal/commit", **kw: object) -> dict[str, str]:
    return sign("s3cret", "POST", HOST, path, body_digest(body), **kw)  # type: ignore[arg-type]


def test_a_signed_request_is_accepted_once() -> None:
    v = Verifier("s3cret")
    headers = signed(now=NOW)
    assert v.verify("POST", "/_internal/commit", headers, now=NOW + 1) == body_digest(b"msg")
    with pytest.raises(SignatureError, match="replayed"):
        v.verify("POST", "/_internal/commit", headers, now=NOW + 2)


@pytest.mark.parametrize(
    ("field", "value"),
    [("method", "PUT"), ("path", "/_internal/purge"), (BODY_HEADER, body_digest(b"other")),
     ("Host", "10.0.0.2:7000"), (TIME_HEADER, f"{NOW + 5:.3f}"), (NONCE_HEADER, "ab" * 16)],
)  # fmt: skip
def test_every_signed_field_is_bound(field: str, value: str) -> None:
    v = Verifier("s3cret")
    headers = signed(now=NOW)
    method, path = "POST", "/_internal/commit"
    if field == "method":
        method = value
    elif field == "path":
        path = value
    else:
        headers[field] = value
    with pytest.raises(SignatureError, match="bad signature"):
        v.verify(method, path, headers, now=NOW)


def test_stale_and_future_timestamps_are_refused_and_nonces_are_forgotten_after_the_window() -> None:
    v = Verifier("s3cret", window=60)
    with pytest.raises(SignatureError, match="window"):
        v.verify("POST", "/_internal/commit", signed(now=NOW - 61), now=NOW)
    with pytest.raises(SignatureError, match="window"):
        v.verify("POST", "/_internal/commit", signed(now=NOW + 61), now=NOW)
    headers = signed(now=NOW)
    v.verify("POST", "/_internal/commit", headers, now=NOW)
    v.verify("POST", "/_internal/commit", signed(now=NOW + 100), now=NOW + 100)
    assert len(v) == 1  # the first nonce left with its window; its replay is stale anyway
    with pytest.raises(SignatureError, match="window"):
        v.verify("POST", "/_internal/commit", headers, now=NOW + 100)


def test_a_request_signed_before_the_node_started_is_refused() -> None:
    """Nonces are remembered in memory only: what the previous process accepted is refused."""
    v = Verifier("s3cret", started=NOW)
    with pytest.raises(SignatureError, match="before this node started"):
        v.verify("POST", "/_internal/commit", signed(now=NOW - 1), now=NOW + 1)
    v.verify("POST", "/_internal/commit", signed(now=NOW + 0.5), now=NOW + 1)


def test_wrong_secret_missing_headers_and_a_full_nonce_cache_are_refused() -> None:
    with pytest.raises(SignatureError, match="bad signature"):
        Verifier("other").verify("POST", "/_internal/commit", signed(now=NOW), now=NOW)
    with pytest.raises(SignatureError, match="unsigned"):
        Verifier("s3cret").verify("POST", "/_internal/commit", {"Authorization": "Bearer s3cret"}, now=NOW)
    with pytest.raises(SignatureError, match="unsigned"):
        Verifier("").verify("POST", "/_internal/commit", signed(now=NOW), now=NOW)
    headers = signed(now=NOW)
    headers[SIGNATURE_HEADER] = headers[SIGNATURE_HEADER][:10]
    with pytest.raises(SignatureError, match="malformed"):
        Verifier("s3cret").verify("POST", "/_internal/commit", headers, now=NOW)
    small = Verifier("s3cret", max_nonces=2)
    for _ in range(2):
        small.verify("POST", "/_internal/commit", signed(now=NOW), now=NOW)
    with pytest.raises(SignatureError, match="too many"):
        small.verify("POST", "/_internal/commit", signed(now=NOW), now=NOW)
