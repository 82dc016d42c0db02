"""p2pstore: a peer-to-peer, self-healing, triple-replicated file store."""

__version__ = "0.1.0"
