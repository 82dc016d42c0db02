"""Errors that map to one HTTP status and a clear JSON message."""

from __future__ import annotations

import contextlib
import errno
import sqlite3
from collections.abc import Iterator
from typing import Any


class StoreError(Exception):
    """Base error: carries the HTTP status, a human message and optional detail."""

    status = 500

    def __init__(self, message: str, detail: Any = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        if status is not None:
            self.status = status


class BadRequest(StoreError):
    status = 400


class Unauthorized(StoreError):
    status = 401


class NotFound(StoreError):
    status = 404


class Conflict(StoreError):
    status = 409


class LengthRequired(StoreError):
    status = 411


class PayloadTooLarge(StoreError):
    status = 413


class RangeNotSatisfiable(StoreError):
    status = 416


class Unavailable(StoreError):
    status = 503


class InsufficientStorage(StoreError):
    status = 507


def disk_full(exc: BaseException) -> InsufficientStorage | None:
    """The 507 for a write that found the disk full below our own free-space check (writes
    racing for the last bytes): a file write's ENOSPC or SQLite's "database or disk is full"."""
    full_file = isinstance(exc, OSError) and exc.errno == errno.ENOSPC
    code = getattr(exc, "sqlite_errorcode", 0) if isinstance(exc, sqlite3.OperationalError) else 0
    full_db = code == sqlite3.SQLITE_FULL
    return InsufficientStorage("disk full on this node") if full_file or full_db else None


@contextlib.contextmanager
def full_disk_is_507() -> Iterator[None]:
    """Turn a full disk met inside the block into InsufficientStorage (others pass through)."""
    try:
        yield
    except (OSError, sqlite3.OperationalError) as exc:
        full = disk_full(exc)
        if full is None:
            raise
        raise full from exc


class CorruptData(StoreError):
    """Stored bytes no longer match their sha256: never served, always reported."""

    status = 500
