"""The wire encoding of node-to-node messages: msgpack, binary strings kept as bytes."""

from __future__ import annotations

from typing import Any

import msgpack

ENTRY_HEADER = "X-P2PStore-Entry"  # a raw one-phase write's manifest entry: base64 msgpack
MSGPACK = "application/msgpack"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)
