"""Bucket operations: ListBuckets, CreateBucket, DeleteBucket, HeadBucket, GetBucketLocation,
ListObjects (v1) and ListObjectsV2."""

from __future__ import annotations

import dataclasses

from aiohttp import web

from ..cluster.versioning import has_versions
from . import cors
from . import xml as s3xml
from .context import S3Call
from .errors import S3Error
from .listing import decode_token, encode_token, list_page
from .meta import etag
from .names import check_bucket_name
from .payload import read_all
from .registry import Bucket

XML = "application/xml"
MAX_CONFIG_BODY = 64 * 1024
MAX_KEYS = 1000


def xml_response(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type=XML)


async def list_buckets(call: S3Call) -> web.Response:
    """The buckets this key may read (an admin key: all of them), by name."""
    buckets = [b for b in await call.registry.list_buckets() if call.key.may(b, "read")]
    items = sorted((b.name, b.created) for b in buckets)
    return xml_response(s3xml.list_buckets(call.key.key_id, call.key.name, items))


async def create_bucket(call: S3Call) -> web.Response:
    name = check_bucket_name(call.bucket)
    location = s3xml.parse_location(await read_all(call.request, call.verified, MAX_CONFIG_BODY))
    if location and location != call.region:
        raise S3Error("InvalidLocationConstraint", f"The specified location-constraint is not valid: "
                      f"this cluster's region is {call.region}")  # fmt: skip
    existing = await call.registry.get_bucket(name)
    if existing is not None:
        if existing.owner == call.key.key_id:
            raise S3Error("BucketAlreadyOwnedByYou", "Your previous request to create the named bucket "
                          "succeeded and you already own it.", BucketName=name)  # fmt: skip
        raise S3Error("BucketAlreadyExists", "The requested bucket name is not available.", BucketName=name)
    if not call.key.admin:
        raise S3Error("AccessDenied", "Access Denied: only admin keys create buckets")
    await call.registry.create_bucket(name, call.key.key_id)
    return web.Response(status=200, headers={"Location": f"/{name}"})


async def delete_bucket(call: S3Call) -> web.Response:
    bucket = await call.bucket_for("write")
    if not (call.key.admin or bucket.owner == call.key.key_id):
        raise S3Error("AccessDenied", "Access Denied: only the bucket's owner or an admin key deletes it")
    if call.node.store.db.list(bucket.name + "/", "", 1) or has_versions(call.node.store, bucket.name):
        raise S3Error("BucketNotEmpty", "The bucket you tried to delete is not empty", BucketName=bucket.name)
    await call.registry.delete_bucket(bucket.name)
    await call.node.cluster.versions.forget(bucket.name)  # a new bucket of that name starts unversioned
    return web.Response(status=204)


async def head_bucket(call: S3Call) -> web.Response:
    await call.bucket_for("read")
    return web.Response(status=200, headers={"x-amz-bucket-region": call.region})


async def get_location(call: S3Call) -> web.Response:
    await call.bucket_for("read")
    return xml_response(s3xml.location(call.region))


def _max_keys(call: S3Call) -> int:
    raw = call.param("max-keys")
    if raw is None or raw == "":
        return MAX_KEYS
    if not raw.lstrip("-").isdigit() or int(raw) < 0:
        raise S3Error("InvalidArgument", "Provided max-keys not an integer or within integer range")
    return min(int(raw), MAX_KEYS)


async def list_objects(call: S3Call) -> web.Response:
    """ListObjects (v1: marker) and ListObjectsV2 (list-type=2: continuation token, start-after)."""
    await call.bucket_for("read")
    v2 = call.param("list-type") == "2"
    if call.param("list-type") not in (None, "2"):
        raise S3Error("InvalidArgument", "list-type must be 2 when given")
    encoding = call.param("encoding-type")
    if encoding not in (None, "url"):
        raise S3Error("InvalidArgument", "Invalid Encoding Method specified in Request")
    prefix = call.param("prefix") or ""
    delimiter = call.param("delimiter") or ""
    max_keys = _max_keys(call)
    token = call.param("continuation-token") if v2 else None
    if v2:
        start = decode_token(token) if token else (call.param("start-after") or "")
    else:
        start = call.param("marker") or ""
    page = list_page(call.node.store.db.list, call.bucket, prefix, delimiter, start, max_keys)
    fields: list[tuple[str, object]] = [("Name", call.bucket), ("Prefix", prefix)]
    if v2:
        if token:
            fields.append(("ContinuationToken", token))
        if call.param("start-after"):
            fields.append(("StartAfter", call.param("start-after")))
        fields.append(("KeyCount", len(page.items) + len(page.prefixes)))
    else:
        fields.append(("Marker", start))
    fields.append(("MaxKeys", max_keys))
    if delimiter:
        fields.append(("Delimiter", delimiter))
    if encoding:
        fields.append(("EncodingType", encoding))
    fields.append(("IsTruncated", "true" if page.truncated else "false"))
    if page.truncated:
        fields.append(("NextContinuationToken", encode_token(page.last)) if v2 else ("NextMarker", page.last))
    show_owner = not v2 or call.param("fetch-owner") == "true"
    owner = s3xml.owner(call.key.key_id, call.key.name) if show_owner else None
    items = [s3xml.ObjectItem(key, e.modified, etag(e), e.size) for key, e in page.items]
    return xml_response(s3xml.list_objects(fields, items, page.prefixes, owner, encoding == "url", v2))


# ---- CORS ----
async def put_cors(call: S3Call) -> web.Response:
    """PutBucketCors: the owner (or an admin) replaces the bucket's rules, cluster-wide."""
    bucket = await _owned(call)
    rules = cors.parse(await read_all(call.request, call.verified, MAX_CONFIG_BODY))
    await call.registry.put_bucket(dataclasses.replace(bucket, cors=[r.record() for r in rules]))
    return web.Response(status=200)


async def get_cors(call: S3Call) -> web.Response:
    bucket = await call.bucket_for("read")
    if not bucket.cors:
        raise S3Error(
            "NoSuchCORSConfiguration", "The CORS configuration does not exist", BucketName=call.bucket
        )
    return xml_response(cors.document(cors.rules_from_record(bucket.cors)))


async def delete_cors(call: S3Call) -> web.Response:
    bucket = await _owned(call)
    if bucket.cors:
        await call.registry.put_bucket(dataclasses.replace(bucket, cors=[]))
    return web.Response(status=204)


async def _owned(call: S3Call) -> Bucket:
    bucket = await call.bucket_for("write")
    if not (call.key.admin or bucket.owner == call.key.key_id):
        raise S3Error("AccessDenied", f"Access Denied: only the owner of {call.bucket} or an admin key may "
                      "change its CORS configuration")  # fmt: skip
    return bucket
