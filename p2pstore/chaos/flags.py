"""The flags every chaos node runs with, shared by the process and network-namespace harnesses."""

from __future__ import annotations

from ..launcher import flags_to_args

DEFAULT_NODE_FLAGS: dict[str, str] = {
    "gossip-interval": "0.2",
    "fsync": "never",  # kill -9 keeps the page cache; only power cuts need fsync, and it costs CPU
    "chunk-size": "16KiB",  # several chunks per value, so corruption hits multi-chunk reads too
    "scrub-rate": "1MiB",
    "scrub-chunk-rate": "0",  # a chaos run's few thousand chunks: scrubbed in seconds, as before
    "checkpoint-interval": "0",
}


def node_args(flags: dict[str, str], secret: str) -> list[str]:
    """The command-line flags of a chaos node: the harness's defaults, the secret, then ``flags``."""
    return flags_to_args({**DEFAULT_NODE_FLAGS, "cluster-secret": secret, **flags})
