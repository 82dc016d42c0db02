"""How much of a file is in the OS page cache (mincore(2) over a private mapping of it)."""

from __future__ import annotations

import ctypes
import mmap
import os
from pathlib import Path

_libc = ctypes.CDLL(None, use_errno=True)
PAGE = mmap.PAGESIZE


def resident_fraction(path: Path, offset: int = 0, length: int | None = None) -> float:
    """The share of the pages of ``path`` (or of its bytes ``offset .. offset + length``) that
    are in the page cache now (1.0 when there is no page to look at).

    For a range inside a larger file (a chunk's record in a segment file) only the pages wholly
    inside the range count: a page at its edge holds a neighbour's bytes too and is cached or
    dropped with it (``posix_fadvise(DONTNEED)`` keeps partial pages). The file's last page
    counts whole: nothing follows it."""
    size = Path(path).stat().st_size
    end = size if length is None else offset + length
    if not 0 <= offset <= end <= size:
        raise ValueError(f"bytes {offset}..{end} are not within {path} ({size} bytes)")
    first = (offset + PAGE - 1) // PAGE
    last = (end + PAGE - 1) // PAGE if end == size else end // PAGE  # one past the last page
    if last <= first:
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
    return sum(v & 1 for v in vec[first:last]) / (last - first)
