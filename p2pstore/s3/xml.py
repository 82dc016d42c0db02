"""S3's XML: the documents this server answers (errors, listings, results) and the few request
bodies it reads (CreateBucketConfiguration, Delete). Built as text with escaping; parsed with
ElementTree after refusing DOCTYPEs (no entities, so no entity expansion)."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape

from .errors import S3Error

NS = "http://s3.amazonaws.com/doc/2006-03-01/"
HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n'


def iso8601(ts: float) -> str:
    """S3's timestamps in XML: 2024-05-01T12:00:00.000Z."""
    ms = round(ts * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{ms:03d}Z"


def el(name: str, value: object) -> str:
    return f"<{name}>{escape(str(value))}</{name}>"


def document(root: str, body: str, namespace: bool = True) -> bytes:
    ns = f' xmlns="{NS}"' if namespace else ""
    return f"{HEAD}<{root}{ns}>{body}</{root}>".encode()


def error(code: str, message: str, resource: str | None, request_id: str, extra: dict[str, str]) -> bytes:
    parts = [el("Code", code), el("Message", message)]
    parts += [el(k, v) for k, v in extra.items()]
    if resource:
        parts.append(el("Resource", resource))
    parts.append(el("RequestId", request_id))
    return document("Error", "".join(parts), namespace=False)


def owner(owner_id: str, name: str) -> str:
    return f"<Owner>{el('ID', owner_id)}{el('DisplayName', name)}</Owner>"


def list_buckets(owner_id: str, owner_name: str, buckets: Iterable[tuple[str, float]]) -> bytes:
    items = "".join(
        f"<Bucket>{el('Name', name)}{el('CreationDate', iso8601(created))}</Bucket>"
        for name, created in buckets
    )
    return document("ListAllMyBucketsResult", f"{owner(owner_id, owner_name)}<Buckets>{items}</Buckets>")


def location(region: str) -> bytes:
    value = "" if region == "us-east-1" else escape(region)  # S3 answers us-east-1 as empty
    return f'{HEAD}<LocationConstraint xmlns="{NS}">{value}</LocationConstraint>'.encode()


@dataclass(frozen=True)
class ObjectItem:
    key: str
    modified: float
    etag: str
    size: int


def list_objects(
    fields: Sequence[tuple[str, object]],
    items: Sequence[ObjectItem],
    prefixes: Sequence[str],
    owner_xml: str | None,
    encode: bool,
    v2: bool,
) -> bytes:
    """ListBucketResult: ``fields`` in order (Name, Prefix, ...), then Contents, CommonPrefixes."""
    from urllib.parse import quote

    def enc(text: str) -> str:
        return quote(text, safe="/") if encode else text

    encoded = {"Prefix", "Delimiter", "Marker", "NextMarker", "StartAfter"}
    parts = [el(name, enc(str(value)) if name in encoded else value) for name, value in fields]
    for item in items:
        parts.append(
            f"<Contents>{el('Key', enc(item.key))}{el('LastModified', iso8601(item.modified))}"
            f"{el('ETag', item.etag)}{el('Size', item.size)}{owner_xml or ''}"
            f"{el('StorageClass', 'STANDARD')}</Contents>"
        )
    parts += [f"<CommonPrefixes>{el('Prefix', enc(p))}</CommonPrefixes>" for p in prefixes]
    return document("ListBucketResult", "".join(parts))


def delete_result(deleted: Iterable[str], errors: Iterable[tuple[str, str, str]]) -> bytes:
    parts = [f"<Deleted>{el('Key', k)}</Deleted>" for k in deleted]
    parts += [f"<Error>{el('Key', k)}{el('Code', c)}{el('Message', m)}</Error>" for k, c, m in errors]
    return document("DeleteResult", "".join(parts))


def copy_result(etag: str, modified: float) -> bytes:
    return document("CopyObjectResult", el("LastModified", iso8601(modified)) + el("ETag", etag))


# ---- request bodies ----
def parse(body: bytes) -> ET.Element:
    """A request body as an element tree; MalformedXML for anything that is not plain XML."""
    if b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
        raise S3Error("MalformedXML", "The XML you provided was not well-formed or did not validate "
                      "against our published schema (DOCTYPE and entities are refused).")  # fmt: skip
    try:
        return ET.fromstring(body)
    except ET.ParseError as exc:
        raise S3Error("MalformedXML", f"The XML you provided was not well-formed: {exc}") from None


def local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def child_text(elem: ET.Element, name: str) -> str | None:
    for child in elem:
        if local(child.tag) == name:
            return child.text or ""
    return None


def parse_delete(body: bytes, limit: int = 1000) -> tuple[bool, list[str]]:
    """DeleteObjects' <Delete>: (quiet, keys). MalformedXML when shaped otherwise."""
    root = parse(body)
    if local(root.tag) != "Delete":
        raise S3Error("MalformedXML", "The XML you provided did not validate: the root must be <Delete>.")
    quiet = (child_text(root, "Quiet") or "").strip().lower() == "true"
    keys: list[str] = []
    for child in root:
        if local(child.tag) == "Object":
            key = child_text(child, "Key")
            if key is None:
                raise S3Error(
                    "MalformedXML", "The XML you provided did not validate: an <Object> has no <Key>."
                )
            keys.append(key)
    if not keys or len(keys) > limit:
        raise S3Error(
            "MalformedXML", f"The XML you provided did not validate: 1 to {limit} objects per request."
        )
    return quiet, keys


def parse_location(body: bytes) -> str | None:
    """CreateBucketConfiguration's LocationConstraint (None for an empty body)."""
    if not body.strip():
        return None
    root = parse(body)
    if local(root.tag) != "CreateBucketConfiguration":
        raise S3Error(
            "MalformedXML", "The XML you provided did not validate: expected <CreateBucketConfiguration>."
        )
    value = child_text(root, "LocationConstraint")
    return value.strip() if value else None


# ---- multipart ----
def initiate_result(bucket: str, key: str, upload_id: str) -> bytes:
    body = el("Bucket", bucket) + el("Key", key) + el("UploadId", upload_id)
    return document("InitiateMultipartUploadResult", body)


def complete_result(location: str, bucket: str, key: str, etag: str) -> bytes:
    body = el("Location", location) + el("Bucket", bucket) + el("Key", key) + el("ETag", etag)
    return document("CompleteMultipartUploadResult", body)


def copy_part_result(etag: str, modified: float) -> bytes:
    return document("CopyPartResult", el("LastModified", iso8601(modified)) + el("ETag", etag))


@dataclass(frozen=True)
class PartItem:
    number: int
    modified: float
    etag: str
    size: int


def list_parts(fields: Sequence[tuple[str, object]], owner_xml: str, parts: Sequence[PartItem]) -> bytes:
    """ListPartsResult: ``fields`` (Bucket, Key, UploadId, markers …), Initiator/Owner, the parts."""
    initiator = owner_xml.replace("<Owner>", "<Initiator>").replace("</Owner>", "</Initiator>")
    items = "".join(
        f"<Part>{el('PartNumber', p.number)}{el('LastModified', iso8601(p.modified))}"
        f"{el('ETag', p.etag)}{el('Size', p.size)}</Part>"
        for p in parts
    )
    head = "".join(el(k, v) for k, v in fields)
    return document("ListPartsResult", f"{head}{initiator}{owner_xml}{el('StorageClass', 'STANDARD')}{items}")


@dataclass(frozen=True)
class UploadItem:
    key: str
    upload_id: str
    initiated: float


def list_uploads(
    fields: Sequence[tuple[str, object]],
    owner_xml: str,
    uploads: Sequence[UploadItem],
    prefixes: Sequence[str],
) -> bytes:
    """ListMultipartUploadsResult: ``fields`` in order, the uploads, the common prefixes."""
    initiator = owner_xml.replace("<Owner>", "<Initiator>").replace("</Owner>", "</Initiator>")
    parts = [el(k, v) for k, v in fields]
    parts += [
        f"<Upload>{el('Key', u.key)}{el('UploadId', u.upload_id)}{initiator}{owner_xml}"
        f"{el('StorageClass', 'STANDARD')}{el('Initiated', iso8601(u.initiated))}</Upload>"
        for u in uploads
    ]
    parts += [f"<CommonPrefixes>{el('Prefix', p)}</CommonPrefixes>" for p in prefixes]
    return document("ListMultipartUploadsResult", "".join(parts))
