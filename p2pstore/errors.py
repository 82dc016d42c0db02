"""Domain errors: what went wrong, in words a client can act on. No HTTP here: the API maps
each kind to its status (api/errors.py), and the internal RPC to its wire code."""

from __future__ import annotations

import contextlib
import errno
import sqlite3
from collections.abc import Iterator
from typing import Any


class StoreError(Exception):
    """Base error: a human message and optional detail (JSON-friendly)."""

    def __init__(self, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class Refused(StoreError):
    """The node refuses the request for a reason the client must hear, and nothing changed
    (bad input, too large, disk full). A replica's refusal is passed on to the client as is."""


class BadRequest(Refused):
    """Malformed input: a key, a header, a body that does not match its checksum."""


class PayloadTooLarge(Refused):
    """An upload larger than the configured limit."""


class InsufficientStorage(Refused):
    """The disk is (nearly) full: writes are refused before they could fill it."""


class Unauthorized(StoreError):
    """Missing or wrong credentials."""


class Forbidden(StoreError):
    """The request is understood but not allowed (keys under the reserved .p2pstore/ folder)."""


class WrongProtocol(StoreError):
    """A peer speaks another version of the node-to-node protocol: refused, not misread."""


class NotFound(StoreError):
    """No such key, member, upload or chunk."""


class Conflict(StoreError):
    """The request contradicts the cluster's state (e.g. removing a live member)."""


class LengthRequired(StoreError):
    """A body whose length must be declared up front."""


class RangeNotSatisfiable(StoreError):
    """A byte range outside the file."""


class Unavailable(StoreError):
    """Not enough replicas or members answer right now: retry, or try another node."""


class CorruptData(StoreError):
    """Stored bytes no longer match their sha256: never served, always reported."""


def disk_full(exc: BaseException) -> InsufficientStorage | None:
    """The refusal for a write that found the disk full below our own free-space check (writes
    racing for the last bytes): a file write's ENOSPC or SQLite's "database or disk is full"."""
    full_file = isinstance(exc, OSError) and exc.errno == errno.ENOSPC
    code = getattr(exc, "sqlite_errorcode", 0) if isinstance(exc, sqlite3.OperationalError) else 0
    full_db = code == sqlite3.SQLITE_FULL
    return InsufficientStorage("disk full on this node") if full_file or full_db else None


@contextlib.contextmanager
def full_disk_refused() -> Iterator[None]:
    """Turn a full disk met inside the block into InsufficientStorage (others pass through)."""
    try:
        yield
    except (OSError, sqlite3.OperationalError) as exc:
        full = disk_full(exc)
        if full is None:
            raise
        raise full from exc
