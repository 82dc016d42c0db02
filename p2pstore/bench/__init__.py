"""Benchmarks shipped with the package, so ``p2pstore bench`` works from an installed copy.

``runner``: the benchmark run (PUT/GET phases, the 1 GiB memory check) against running nodes or
local ones it starts through p2pstore/launcher.py; ``client``: the lean HTTP client it loads
them with.
"""
