"""One authenticated S3 request as the handlers see it: who sent it, which bucket and key it
names, its query, and the node and registry it acts on."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from ..node import Node
from . import sigv4
from .errors import S3Error
from .registry import AccessKey, Bucket, Registry

NATIVE_SEPARATOR = "/"


@dataclass(slots=True)
class S3Call:
    request: web.Request
    node: Node
    registry: Registry
    region: str
    sig: sigv4.Request
    key: AccessKey
    verified: sigv4.Verified
    bucket: str
    object_key: str
    # Headers every answer carries (x-amz-request-id, CORS): added by the handler to an answer it
    # returns, and by a handler that streams its answer to the head it sends.
    extra: dict[str, str] = field(default_factory=dict)

    def param(self, name: str) -> str | None:
        return self.sig.param(name)

    def has(self, name: str) -> bool:
        return any(k == name for k, _ in self.sig.query)

    @property
    def native_key(self) -> str:
        """Object ``k`` of bucket ``b`` is the native key ``b/k``."""
        return self.bucket + NATIVE_SEPARATOR + self.object_key

    def may_now(self, action: str) -> bool:
        """Whether this key may ``action`` the request's bucket, told from a fresh cached record
        without a coroutine; False also when that needs a read (then ask bucket_for)."""
        bucket = self.registry.cached_bucket(self.bucket)
        return bucket is not None and self.key.may(bucket, action)

    async def bucket_for(self, action: str) -> Bucket:
        """The request's bucket, if it exists and this key may ``action`` ("read"/"write") it."""
        bucket = self.registry.cached_bucket(self.bucket) or await self.registry.get_bucket(self.bucket)
        if bucket is None:
            raise S3Error("NoSuchBucket", "The specified bucket does not exist", BucketName=self.bucket)
        if not self.key.may(bucket, action):
            raise S3Error("AccessDenied", f"Access Denied: this key may not {action} bucket {self.bucket}")
        return bucket
