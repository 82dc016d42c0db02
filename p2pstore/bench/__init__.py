"""Benchmarks shipped with the package, so ``p2pstore bench`` works from an installed copy.

``http``: PUT/GET throughput and latency against running or local nodes; ``local``: starting
throw-away node processes for them (a small copy of the test helpers, which are not installed).
"""
