"""Object metadata through the write path: kept with the entry, and the body's MD5 computed as
it streams when asked (S3's ETag), for one-round-trip and staged writes alike."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from p2pstore.config import NodeConfig
from p2pstore.errors import BadRequest
from p2pstore.node import Node

MiB = 1 << 20


async def pieces(data: bytes, size: int = 256 * 1024) -> AsyncIterator[bytes]:
    for at in range(0, len(data), size):
        yield data[at : at + size]


@pytest.mark.parametrize("size", [0, 1000, 300 * 1024, 3 * MiB + 7])  # empty, inline, one-phase, staged
async def test_metadata_and_md5_are_kept_with_the_entry(tmp_path: Path, size: int) -> None:
    cfg = NodeConfig(data_dir=tmp_path / "n", replicas=1, write_quorum=1, chunk_size=MiB, scrub_rate=0,
                     read_lease=0, fsync="never")  # fmt: skip
    node = Node(cfg)
    node.start()
    try:
        data = os.urandom(size)
        writes = node.cluster.writes
        meta = {"content-disposition": "attachment", "x-amz-meta-colour": "blue"}
        result = await writes.put("k", pieces(data), "x/y", None, size, None, meta=meta, md5=True)
        expected = {**meta, "md5": hashlib.md5(data).hexdigest()}
        assert dict(result.entry.meta) == expected
        assert dict(node.store.db.get("k").meta) == expected
        plain = await writes.put("plain", pieces(data), "x/y", None, size, None)
        assert plain.entry.meta == () and node.store.db.get("plain").meta == ()
        with pytest.raises(BadRequest, match="metadata"):
            await writes.put("bad", pieces(data), "x/y", None, size, None, meta={"a": "b\nc"})
        assert node.store.db.get("bad") is None
    finally:
        await node.stop()
        node.close()
