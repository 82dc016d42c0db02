"""Small shared types and validators for the sans-I/O protocol cores.

Every core speaks plain msgpack-friendly dicts with a ``"type"`` key. Messages arrive from the
network, so each field is checked before the core looks at it: a malformed gossip message must
produce a clear ``ValueError``, never a crash deep inside the state machine.
"""

from __future__ import annotations

from typing import Any

Message = dict[str, Any]
Outgoing = tuple[str, Message]
"""(destination, message): an address for membership, a node id for election."""

MAX_ID_LEN = 256
MAX_ADDR_LEN = 512
MAX_INT = 2**63 - 1


def require_dict(msg: object) -> Message:
    """Return ``msg`` if it is a dict with a string ``type``; raise ValueError otherwise."""
    if not isinstance(msg, dict):
        raise ValueError(f"message must be a map, got {type(msg).__name__}")
    if not isinstance(msg.get("type"), str):
        raise ValueError("message has no string 'type' field")
    return msg


def require_str(msg: Message, key: str, *, max_len: int = MAX_ID_LEN, empty: bool = False) -> str:
    """A bounded string field (ids and addresses)."""
    value = msg.get(key)
    if not isinstance(value, str):
        raise ValueError(f"field {key!r} must be a string, got {type(value).__name__}")
    if len(value) > max_len:
        raise ValueError(f"field {key!r} is longer than {max_len} characters")
    if not value and not empty:
        raise ValueError(f"field {key!r} must not be empty")
    return value


def optional_str(msg: Message, key: str, *, max_len: int = MAX_ID_LEN) -> str | None:
    """A bounded string field that may be missing or None."""
    if msg.get(key) is None:
        return None
    return require_str(msg, key, max_len=max_len)


def require_int(msg: Message, key: str, *, low: int = 0, high: int = MAX_INT) -> int:
    """A bounded integer field (bool is rejected: it is an int subclass in Python)."""
    value = msg.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"field {key!r} must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"field {key!r}={value} is outside [{low}, {high}]")
    return value


def require_float(msg: Message, key: str, *, low: float = 0.0, high: float = 1e9) -> float:
    """A bounded finite number field (int or float)."""
    value = msg.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueError(f"field {key!r} must be a number, got {type(value).__name__}")
    if not low <= value <= high:  # also rejects NaN
        raise ValueError(f"field {key!r}={value} is outside [{low}, {high}]")
    return float(value)


def require_bool(msg: Message, key: str) -> bool:
    """A boolean field."""
    value = msg.get(key)
    if not isinstance(value, bool):
        raise ValueError(f"field {key!r} must be a boolean, got {type(value).__name__}")
    return value


def require_list(msg: Message, key: str, *, max_len: int) -> list[Any]:
    """A bounded list field."""
    value = msg.get(key)
    if not isinstance(value, list):
        raise ValueError(f"field {key!r} must be a list, got {type(value).__name__}")
    if len(value) > max_len:
        raise ValueError(f"field {key!r} has {len(value)} items, more than {max_len}")
    return value
