"""Who sent an S3 request: the request as SigV4 sees it, its signature checked against the
access key's secret from the registry."""

from __future__ import annotations

import time
from urllib.parse import parse_qsl, unquote

from aiohttp import web

from . import sigv4
from .errors import S3Error
from .registry import AccessKey, Registry


def sig_request(request: web.Request) -> sigv4.Request:
    """Method, path and query decoded from the raw target (as the client encoded them), headers
    lower-cased with repeated values joined by ','."""
    raw_path, _, raw_query = request.raw_path.partition("?")
    try:
        path = unquote(raw_path, errors="strict")
    except UnicodeDecodeError:
        raise S3Error("InvalidURI", "Couldn't parse the specified URI: the path is not UTF-8.") from None
    raw_headers = request.headers
    headers = {name.lower(): value for name, value in raw_headers.items()}
    if len(headers) != len(raw_headers):  # a repeated header: its values joined, in order
        headers = {}
        for name, value in raw_headers.items():
            name = name.lower()
            headers[name] = f"{headers[name]},{value}" if name in headers else value
    query = parse_qsl(raw_query, keep_blank_values=True) if raw_query else []
    return sigv4.Request(request.method, path, query, headers)


async def authenticate(
    req: sigv4.Request, registry: Registry, region: str
) -> tuple[AccessKey, sigv4.Verified]:
    """The access key that signed ``req``; S3Error (AccessDenied, InvalidAccessKeyId,
    SignatureDoesNotMatch, ...) when none did."""
    signed = sigv4.parse(req, time.time(), region)
    if signed is None:
        raise S3Error("AccessDenied", "Access Denied: anonymous requests are not allowed; sign with SigV4.")
    key = registry.cached_key(signed.access_key) or await registry.get_key(signed.access_key)
    if key is None:
        raise S3Error("InvalidAccessKeyId",
                      "The AWS Access Key Id you provided does not exist in our records.",
                      AWSAccessKeyId=signed.access_key)  # fmt: skip
    return key, sigv4.verify(signed, req, key.secret)
