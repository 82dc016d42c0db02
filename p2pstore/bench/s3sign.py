"""SigV4 header signing for the benchmark's S3 requests (``p2pstore bench --api s3``).

The bench signs every request as boto3 does (Authorization header, ``x-amz-date``,
``x-amz-content-sha256`` set to the body's sha256, which the node checks as the body streams in,
as the native API checks ``X-Content-SHA256``), with the node's own canonical-request code, so a
signature the node refuses is a bug here or there, and the figures include the node's checks.
The signing key is derived once per day; each request costs two sha256 and one HMAC.
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
    _keys: dict[str, bytes] = field(default_factory=dict, repr=False)

    def headers(self, method: str, host: str, path: str, payload_sha256: str = EMPTY_SHA256,
                now: float | None = None) -> dict[str, str]:  # fmt: skip
        """The headers that sign ``method host path`` (no query) for a body whose sha256 is
        ``payload_sha256``; add them to the request as they are."""
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
        scope = sigv4.Scope(amz_date[:8], self.region)
        key = self._keys.get(scope.date)
        if key is None:
            self._keys.clear()
            key = self._keys[scope.date] = sigv4.signing_key(self.secret, scope)
        lower = {"host": host, "x-amz-content-sha256": payload_sha256, "x-amz-date": amz_date}
        req = sigv4.Request(method, unquote(path), (), lower)
        canonical = sigv4.canonical_request(req, SIGNED, payload_sha256, presigned=False)
        signature = sigv4.sign(key, sigv4.string_to_sign(amz_date, scope, canonical))
        auth = (f"{sigv4.ALGORITHM} Credential={self.key_id}/{scope}, "
                f"SignedHeaders={';'.join(SIGNED)}, Signature={signature}")  # fmt: skip
        return {"x-amz-date": amz_date, "x-amz-content-sha256": payload_sha256, "Authorization": auth}
