"""The wire encoding of node-to-node messages: msgpack, binary strings kept as bytes.

Every message is bounded *before* it is decoded: its size in bytes (a body longer than its limit
is refused unread; a stream frame that outgrows it ends the connection) and, while it is
decoded, the number of items in any one list or map and in the whole message. A message of
small items costs far more memory decoded than on the wire (a one-byte empty map becomes a
64-byte dict), so a byte limit alone would still let a few MiB become gigabytes.
"""

from __future__ import annotations

from typing import Any

import msgpack

ENTRY_HEADER = "X-P2PStore-Entry"  # a raw one-phase write's manifest entry: base64 msgpack
# Every internal request names the protocol version it speaks; a node answers another version
# with WRONG_PROTOCOL (HTTP 426 Upgrade Required) and one log line per peer, on both sides.
PROTOCOL_HEADER = "X-P2PStore-Protocol"
PROTOCOL_VERSION = 4  # 3: signed requests, mutual TLS; 4: entries with chunk lengths, compose, kept versions
WRONG_PROTOCOL = 426
MSGPACK = "application/msgpack"
# A message a peer sends us unasked (a call, an internal POST body): the largest legitimate one
# is a manifest exchange batch (5,000 entries of a few hundred bytes) or a 1 MiB one-phase write.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
# An answer to a call this node made: it asked for it (a sync batch of entries with long
# chunk lists can be large), so the bound is looser.
MAX_ANSWER_BYTES = 64 * 1024 * 1024
MAX_CONTAINER_ITEMS = 200_000  # items in one list or map (a chunk list of an 800 GB file)
# lists and maps in one message, each counted with its items: a sync batch of 5,000 entries
# is ~60,000; 250,000 empty maps are ~16 MB decoded
MAX_MESSAGE_ITEMS = 250_000


class ItemBudget:
    """Counts the lists and maps decoded for one message and their items; raises ValueError
    past ``limit`` (msgpack calls the hooks as each container is complete)."""

    def __init__(self, limit: int = MAX_MESSAGE_ITEMS) -> None:
        self.limit = limit
        self.used = 0

    def reset(self) -> None:
        self.used = 0

    def _charge(self, n: int) -> None:
        self.used += n
        if self.used > self.limit:
            raise ValueError(f"message has more than {self.limit} items")

    def list_hook(self, items: list) -> list:
        self._charge(1 + len(items))
        return items

    def object_hook(self, items: dict) -> dict:
        self._charge(1 + len(items))
        return items


def bounded_unpacker(max_bytes: int, budget: ItemBudget) -> msgpack.Unpacker:
    """A streaming decoder that holds at most ``max_bytes`` and charges ``budget``."""
    return msgpack.Unpacker(
        raw=False, strict_map_key=False, max_buffer_size=max_bytes,
        max_array_len=MAX_CONTAINER_ITEMS, max_map_len=MAX_CONTAINER_ITEMS,
        list_hook=budget.list_hook, object_hook=budget.object_hook,
    )  # fmt: skip


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes, max_bytes: int = MAX_ANSWER_BYTES) -> Any:
    """Decode one whole message (ValueError when it exceeds ``max_bytes`` or the item limits)."""
    if len(data) > max_bytes:
        raise ValueError(f"message of {len(data)} bytes exceeds {max_bytes}")
    budget = ItemBudget()
    return msgpack.unpackb(
        data, raw=False, strict_map_key=False,
        max_array_len=MAX_CONTAINER_ITEMS, max_map_len=MAX_CONTAINER_ITEMS,
        list_hook=budget.list_hook, object_hook=budget.object_hook,
    )  # fmt: skip
