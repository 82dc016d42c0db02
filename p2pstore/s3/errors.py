"""S3 errors as the real service names them: a code, an HTTP status and a message.

Pure: the modules that check requests (sigv4, chunked, names) raise these, and the S3
application's middleware turns them into XML answers.
"""

from __future__ import annotations

from aiohttp import web

from ..errors import (
    BadRequest,
    Conflict,
    InsufficientStorage,
    LengthRequired,
    NotFound,
    PayloadTooLarge,
    RangeNotSatisfiable,
    StoreError,
    Unauthorized,
    Unavailable,
    disk_full,
)

STATUS: dict[str, int] = {
    "AccessDenied": 403,
    "AccessForbidden": 403,
    "AuthorizationHeaderMalformed": 400,
    "AuthorizationQueryParametersError": 400,
    "BadDigest": 400,
    "ExpectationFailed": 417,
    "BadRequest": 400,
    "BucketAlreadyExists": 409,
    "BucketAlreadyOwnedByYou": 409,
    "BucketNotEmpty": 409,
    "EntityTooLarge": 400,
    "EntityTooSmall": 400,
    "IncompleteBody": 400,
    "InsufficientStorage": 507,
    "InternalError": 500,
    "InvalidAccessKeyId": 403,
    "InvalidArgument": 400,
    "InvalidBucketName": 400,
    "InvalidDigest": 400,
    "InvalidLocationConstraint": 400,
    "InvalidPart": 400,
    "InvalidPartNumber": 416,
    "InvalidPartOrder": 400,
    "InvalidRange": 416,
    "InvalidRequest": 400,
    "InvalidURI": 400,
    "KeyTooLongError": 400,
    "MalformedXML": 400,
    "MetadataTooLarge": 400,
    "MethodNotAllowed": 405,
    "MissingContentLength": 411,
    "MissingSecurityHeader": 400,
    "NoSuchBucket": 404,
    "NoSuchCORSConfiguration": 404,
    "NoSuchKey": 404,
    "NoSuchUpload": 404,
    "NoSuchVersion": 404,
    "NoSuchLifecycleConfiguration": 404,
    "NotImplemented": 501,
    "PreconditionFailed": 412,
    "RequestTimeTooSkewed": 403,
    "RequestHeaderSectionTooLarge": 400,
    "RequestTimeout": 400,
    "OperationAborted": 409,
    "ServiceUnavailable": 503,
    "SignatureDoesNotMatch": 403,
    "XAmzContentSHA256Mismatch": 400,
}


# The S3 code of each domain error the coordinator raises (the first class that matches)
DOMAIN_CODES: list[tuple[type[StoreError], str]] = [
    (PayloadTooLarge, "EntityTooLarge"),
    (InsufficientStorage, "InsufficientStorage"),
    (BadRequest, "InvalidArgument"),
    (Unauthorized, "AccessDenied"),
    (NotFound, "NoSuchKey"),
    (Conflict, "OperationAborted"),
    (LengthRequired, "MissingContentLength"),
    (RangeNotSatisfiable, "InvalidRange"),
    (Unavailable, "ServiceUnavailable"),
]


class S3Error(Exception):
    """An S3 error answer: ``code`` (S3's name for it), ``message`` for people, the status."""

    def __init__(self, code: str, message: str, resource: str | None = None, **extra: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.resource = resource
        self.extra = extra  # further elements of the error document (e.g. BucketName)
        self.headers: dict[str, str] = {}  # further response headers (e.g. x-amz-delete-marker)

    @property
    def status(self) -> int:
        return STATUS.get(self.code, 500)


def s3_error(exc: Exception) -> S3Error:
    """The S3 error for what a handler raised (domain errors of the coordinator included)."""
    exc = disk_full(exc) or exc
    if isinstance(exc, S3Error):
        return exc
    if isinstance(exc, StoreError):
        code = next((c for cls, c in DOMAIN_CODES if isinstance(exc, cls)), "InternalError")
        return S3Error(code, exc.message)
    if isinstance(exc, web.HTTPException):
        return S3Error("MethodNotAllowed" if exc.status == 405 else "InvalidRequest", exc.reason or "error")
    return S3Error("InternalError", "We encountered an internal error. Please try again.")
