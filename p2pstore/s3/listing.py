"""ListObjects (v1) and ListObjectsV2 over the manifest, sans I/O: keys of a bucket in UTF-8
byte order (the manifest's own order), rolled up into CommonPrefixes by a delimiter, in pages.

``fetch(prefix, after, limit)`` returns entries of native keys (``bucket/key``) in key order;
a run of keys under one common prefix is skipped with one more fetch, not read key by key.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass, field

from ..core.manifest import ManifestEntry
from .errors import S3Error
from .names import shown_key, stored_key

MAX_TEXT = "\U0010ffff"  # sorts after every character: prefix + MAX_TEXT is past prefix's keys
BATCH = 1000

Fetch = Callable[[str, str, int], list[ManifestEntry]]


@dataclass
class Page:
    items: list[tuple[str, ManifestEntry]] = field(default_factory=list)  # (key in the bucket, entry)
    prefixes: list[str] = field(default_factory=list)
    truncated: bool = False
    last: str = ""  # the last key or common prefix returned: where the next page starts


def list_page(
    fetch: Fetch, bucket: str, prefix: str, delimiter: str, start_after: str, max_keys: int
) -> Page:
    base = bucket + "/"
    page = Page()
    if max_keys <= 0:
        return page
    after = base + stored_key(start_after) if start_after else ""
    if delimiter and start_after.startswith(prefix):
        i = start_after.find(delimiter, len(prefix))
        if i >= 0:  # the page before ended in (or inside) this common prefix: skip all of it
            after = max(after, base + start_after[: i + len(delimiter)] + MAX_TEXT)
    count = 0
    while True:
        batch = fetch(base + prefix, after, BATCH)
        skip_to = None
        for entry in batch:
            key = entry.key[len(base) :]
            common = None
            if delimiter:
                i = key.find(delimiter, len(prefix))
                if i >= 0:
                    common = key[: i + len(delimiter)]
            if common is not None and page.prefixes and page.prefixes[-1] == common:
                continue
            if count == max_keys:
                page.truncated = True
                return page
            count += 1
            if common is not None:
                page.prefixes.append(common)
                page.last = common
                skip_to = base + common + MAX_TEXT
                break
            shown = shown_key(key)  # a folder marker's stored key back to 'dir/'
            page.items.append((shown, entry))
            page.last = shown
        if skip_to is not None:
            after = skip_to
            continue
        if len(batch) < BATCH:
            return page
        after = batch[-1].key


def encode_token(position: str) -> str:
    return base64.urlsafe_b64encode(position.encode()).decode()


def decode_token(token: str) -> str:
    try:
        return base64.b64decode(token.encode(), altchars=b"-_", validate=True).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise S3Error("InvalidArgument", "The continuation token provided is incorrect") from None
