"""File key validation: what a key may be, so that every client can also use it as a path."""

from __future__ import annotations

import re
from typing import Any

MAX_KEY_BYTES = 1024
# NUL and control characters, found in one C scan (a Python loop over the characters cost ~1 %
# of a small PUT).
CONTROL = re.compile("[\x00-\x1f\x7f]")


class InvalidKey(ValueError):
    """A key that cannot be stored; the message says why (the API answers it as bad input)."""

    def __init__(self, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


def validate_key(key: str, max_bytes: int = MAX_KEY_BYTES) -> str:
    """Return ``key`` unchanged if it is safe, else raise InvalidKey saying why.

    Keys are '/'-separated segments of printable UTF-8. Empty keys, NUL and control characters,
    backslashes, empty segments and '.'/'..' segments are refused so that no key can escape a
    directory when a client mirrors keys to a file system.
    """
    if not isinstance(key, str) or key == "":
        raise InvalidKey("invalid key: empty")
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidKey("invalid key: not valid UTF-8") from exc
    if len(encoded) > max_bytes:
        raise InvalidKey(f"invalid key: longer than {max_bytes} bytes", {"bytes": len(encoded)})
    if CONTROL.search(key):
        raise InvalidKey("invalid key: contains NUL or a control character")
    if "\\" in key:
        raise InvalidKey("invalid key: contains a backslash")
    for segment in key.split("/"):
        if segment == "":
            raise InvalidKey("invalid key: empty path segment (leading, trailing or double '/')")
        if segment in (".", ".."):
            raise InvalidKey("invalid key: '.' and '..' segments are not allowed")
    return key


RESERVED_PREFIX = ".p2pstore/"
"""Keys under this folder are cluster metadata (S3 buckets and access keys), written through the
coordinator like files, but refused and hidden by the native API."""


def is_reserved(key: str) -> bool:
    return key.startswith(RESERVED_PREFIX)
