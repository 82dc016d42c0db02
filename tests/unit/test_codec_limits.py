"""Message limits of the wire codec (cluster/codec.py, cluster/rpc.py's FrameReader): checked
while decoding, the same however the bytes are split across reads."""

from __future__ import annotations

import msgpack
import pytest

from p2pstore.cluster.codec import MAX_CONTAINER_ITEMS, MAX_MESSAGE_ITEMS, unpack
from p2pstore.cluster.rpc import FrameReader


def test_a_message_at_the_item_limit_decodes_one_past_it_does_not() -> None:
    fits = [[None] * 999 for _ in range(MAX_MESSAGE_ITEMS // 1000 - 1)]  # lists count 1 + items
    assert unpack(msgpack.packb(fits)) == fits
    with pytest.raises(ValueError, match="items"):
        unpack(msgpack.packb([[{}] * 1000 for _ in range(MAX_MESSAGE_ITEMS // 1000)]))
    with pytest.raises(ValueError):
        unpack(msgpack.packb([None] * (MAX_CONTAINER_ITEMS + 1)))
    with pytest.raises(ValueError, match="exceeds"):
        unpack(b"\x00" * 11, max_bytes=10)


def test_frames_split_byte_by_byte_are_counted_once() -> None:
    """The decoder keeps a partial frame between feeds: a frame fed one byte at a time costs
    its items once, and many frames in a row each start a fresh count."""
    frame = msgpack.packb([1, "m", [[0] * 100 for _ in range(1000)]])  # ~101,000 items
    reader = FrameReader()
    got = []
    for _ in range(3):  # three frames together hold more items than one message may
        for i in range(0, len(frame), 7):
            got += reader.feed(frame[i : i + 7])
    assert len(got) == 3 and got[0][2][999] == [0] * 100


def test_a_frame_over_the_byte_limit_is_refused_before_it_is_complete() -> None:
    reader = FrameReader(max_bytes=1 << 20)
    frame = msgpack.packb([1, "m", b"x" * (4 << 20)])
    with pytest.raises(ValueError, match="undecodable frame"):
        for i in range(0, len(frame), 64 * 1024):
            reader.feed(frame[i : i + 64 * 1024])
    assert i < 2 << 20, "refused once the buffer passed its limit, not at the end"
