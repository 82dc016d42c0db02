"""How much of a file is in the OS page cache (mincore(2) over a private mapping of it)."""

from __future__ import annotations

import ctypes
import mmap
import os
from pathlib import Path

_libc = ctypes.CDLL(None, use_errno=True)
PAGE = mmap.PAGESIZE


def resident_fraction(path: Path) -> float:
    """The share of ``path``'s pages that are in the page cache now (1.0 for an empty file)."""
    size = path.stat().st_size
    if size == 0:
        return 1.0
    pages = (size + PAGE - 1) // PAGE
    vec = (ctypes.c_ubyte * pages)()
    with open(path, "rb") as fh:
        mapped = mmap.mmap(fh.fileno(), size, access=mmap.ACCESS_COPY)  # nothing is read
    try:
        buf = (ctypes.c_char * size).from_buffer(mapped)
        try:
            if _libc.mincore(ctypes.c_void_p(ctypes.addressof(buf)), ctypes.c_size_t(size), vec) != 0:
                raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        finally:
            del buf
    finally:
        mapped.close()
    return sum(v & 1 for v in vec) / pages
