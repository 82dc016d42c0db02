"""Benchmarks shipped with the package, so ``p2pstore bench`` works from an installed copy.

``options``: what a run is asked to do, and the command-line flag of each option; ``runner``: the
run (PUT/GET phases, the 1 GiB memory check) against running nodes or local ones it starts
through p2pstore/launcher.py; ``client``: the lean HTTP client it loads them with.
"""
