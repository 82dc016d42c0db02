"""The wire encoding of node-to-node messages: msgpack, binary strings kept as bytes."""

from __future__ import annotations

from typing import Any

import msgpack

ENTRY_HEADER = "X-P2PStore-Entry"  # a raw one-phase write's manifest entry: base64 msgpack
# Every internal request names the protocol version it speaks; a node answers another version
# with WRONG_PROTOCOL (HTTP 426 Upgrade Required) and one log line per peer, on both sides.
PROTOCOL_HEADER = "X-P2PStore-Protocol"
PROTOCOL_VERSION = 3  # 3: signed requests (no bearer secret), mutual TLS on an internal port
WRONG_PROTOCOL = 426
MSGPACK = "application/msgpack"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)
