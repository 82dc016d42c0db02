"""Planted corruption for tests: bytes that always differ from the good ones.

Overwriting a byte with a constant (``b"x" + data[1:]``) changes nothing when that byte already
is the constant, 1 time in 256 with random content, and the test then fails by chance. XOR with
a non-zero mask always changes the byte.
"""

from __future__ import annotations


def rotted(data: bytes, at: int = 0, mask: int = 0xFF) -> bytes:
    """``data`` with the byte at ``at`` XORed with ``mask`` (non-zero): never equal to ``data``."""
    if not 0 < mask < 256:
        raise ValueError(f"mask must be a non-zero byte, not {mask!r}")
    if not data:
        raise ValueError("an empty value has no byte to flip")
    raw = bytearray(data)
    raw[at] ^= mask
    return bytes(raw)
