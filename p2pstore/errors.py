"""Errors that map to one HTTP status and a clear JSON message."""

from __future__ import annotations

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


class CorruptData(StoreError):
    """Stored bytes no longer match their sha256: never served, always reported."""

    status = 500
