"""SigV4 header signing for the benchmark's S3 requests (``p2pstore bench --api s3``).

The bench signs every request as boto3 does (Authorization header, ``x-amz-date``,
``x-amz-content-sha256`` set to the body's sha256, which the node checks as the body streams in,
as the native API checks ``X-Content-SHA256``), with the node's own canonical-request code, so a
signature the node refuses is a bug here or there, and the figures include the node's checks.
The signing key is derived once per day, the date once per second; each request costs two
sha256 and one HMAC.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from urllib.parse import unquote

from ..s3 import sigv4

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
SIGNED = ("host", "x-amz-content-sha256", "x-amz-date")


@dataclass
class Signer:
    """Signs requests with one access key for one region."""

    key_id: str
    secret: str
    region: str = "us-east-1"
    # What every request signed in the same second shares: its date, scope, signing key and
    # the Authorization header up to the signature (the load generator shares the cores with
    # the nodes it measures, so its own cost per request is kept low).
    _second: int = field(default=-1, repr=False)
    _amz_date: str = field(default="", repr=False)
    _scope: sigv4.Scope | None = field(default=None, repr=False)
    _key: bytes = field(default=b"", repr=False)
    _auth_head: str = field(default="", repr=False)

    def _at(self, second: int) -> None:
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second))
        scope = sigv4.Scope(amz_date[:8], self.region)
        if scope != self._scope:
            self._key = sigv4.signing_key(self.secret, scope)  # derived once per day
            self._scope = scope
            self._auth_head = (f"{sigv4.ALGORITHM} Credential={self.key_id}/{scope}, "
                               f"SignedHeaders={';'.join(SIGNED)}, Signature=")  # fmt: skip
        self._second, self._amz_date = second, amz_date

    def headers(self, method: str, host: str, path: str, payload_sha256: str = EMPTY_SHA256,
                now: float | None = None) -> dict[str, str]:  # fmt: skip
        """The headers that sign ``method host path`` (no query) for a body whose sha256 is
        ``payload_sha256``; add them to the request as they are."""
        second = int(time.time() if now is None else now)
        if second != self._second:
            self._at(second)
        amz_date, scope = self._amz_date, self._scope
        assert scope is not None
        lower = {"host": host, "x-amz-content-sha256": payload_sha256, "x-amz-date": amz_date}
        req = sigv4.Request(method, unquote(path), (), lower)
        canonical = sigv4.canonical_request(req, SIGNED, payload_sha256, presigned=False)
        signature = sigv4.sign(self._key, sigv4.string_to_sign(amz_date, scope, canonical))
        return {"x-amz-date": amz_date, "x-amz-content-sha256": payload_sha256,
                "Authorization": self._auth_head + signature}  # fmt: skip
