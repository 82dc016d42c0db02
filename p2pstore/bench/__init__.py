"""Benchmarks shipped with the package, so ``p2pstore bench`` works from an installed copy.

``runner``: the benchmark run (PUT/GET phases, the 1 GiB memory check) against running or local
nodes; ``client``: the lean HTTP client it loads them with; ``local``: starting throw-away node
processes for them (a small copy of the test helpers, which are not installed).
"""
