"""pytest plugin: seeded randomness, and the seed printed on failure.

Every test runs with the ``random`` module seeded, and the ``rng`` fixture hands a test its own
``random.Random`` with the same seed. The session seed comes from ``P2PSTORE_TEST_SEED`` or is
fresh; it is printed in the report header, and a failed test's report gets a "random seed"
section that says how to get the same values again::

    P2PSTORE_TEST_SEED=1234567 python3 -m pytest 'tests/...::test_name'

Each test's seed is derived from the session seed and the test's id, so it does not depend on
which other tests run or in what order. Node processes never see the variable (tests strip
``P2PSTORE_*`` from their environment). Hypothesis keeps its own seeds and prints them itself.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterator
from typing import Any

import pytest

ENV = "P2PSTORE_TEST_SEED"
_SESSION_SEED = pytest.StashKey[int]()


def pytest_configure(config: pytest.Config) -> None:
    raw = os.environ.get(ENV, "").strip()
    try:
        seed = int(raw) if raw else random.SystemRandom().randrange(1 << 32)
    except ValueError as exc:
        raise pytest.UsageError(f"{ENV} must be an integer, not {raw!r}") from exc
    config.stash[_SESSION_SEED] = seed


def pytest_report_header(config: pytest.Config) -> str:
    seed = config.stash[_SESSION_SEED]
    return f"random seed: {seed} (run again with {ENV}={seed})"


def seed_for(item: pytest.Item) -> int:
    """The seed of one test: the session seed mixed with the test's id."""
    session = item.config.stash[_SESSION_SEED]
    digest = hashlib.sha256(f"{session}:{item.nodeid}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


@pytest.fixture(autouse=True)
def _seeded_random(request: pytest.FixtureRequest) -> Iterator[None]:
    """``random`` seeded for the test; the previous state is put back afterwards."""
    state = random.getstate()
    random.seed(seed_for(request.node))
    try:
        yield
    finally:
        random.setstate(state)


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    """A ``random.Random`` with this test's seed: use it wherever a random value matters."""
    return random.Random(seed_for(request.node))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed:
        session = item.config.stash[_SESSION_SEED]
        report.sections.append(
            (
                "random seed",
                f"{ENV}={session} (this test's seed: {seed_for(item)}); run again with\n"
                f"  {ENV}={session} python3 -m pytest '{item.nodeid}'",
            )
        )
    return report
