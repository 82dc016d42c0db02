"""pytest plugin: node-process fixtures (enable with ``pytest_plugins = ["tests.support.fixtures"]``).

Every node a fixture starts is terminated at teardown, even when the test fails; on failure
the tail of each node's log is printed so the report shows what the nodes said.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from .processes import NodeProcess, start_nodes


class NodeFactory(Protocol):
    def __call__(
        self, n: int = 1, *, env: dict[str, str] | None = None, **flags: Any
    ) -> list[NodeProcess]: ...


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Remember each phase's outcome on the item so fixtures know whether the test failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    rep = getattr(request.node, "rep_call", None)
    return rep is None or rep.failed


def _teardown(nodes: list[NodeProcess], request: pytest.FixtureRequest) -> None:
    show_logs = _failed(request)
    for node in nodes:
        node.terminate()
        if show_logs:
            print(f"\n----- log of {node.url} ({node.data_dir.name}) -----\n{node.log_tail(60)}")


@pytest.fixture
def node(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[NodeProcess]:
    """One running node (fsync=never for speed), terminated at teardown."""
    pytest.importorskip("p2pstore.server")
    nodes = start_nodes(tmp_path, 1, fsync="never")
    try:
        yield nodes[0]
    finally:
        _teardown(nodes, request)


@pytest.fixture
def node_factory(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[NodeFactory]:
    """``node_factory(n=1, env=None, **flags)`` starts a cluster of n ready nodes.

    Each call makes a new cluster (node 0 seeds the rest, one shared secret) under its own
    directory; every node from every call is terminated at teardown.
    """
    pytest.importorskip("p2pstore.server")
    started: list[NodeProcess] = []
    calls = 0

    def factory(n: int = 1, *, env: dict[str, str] | None = None, **flags: Any) -> list[NodeProcess]:
        nonlocal calls
        calls += 1
        nodes = start_nodes(tmp_path / f"cluster{calls}", n, env=env, **flags)
        started.extend(nodes)
        return nodes

    try:
        yield factory
    finally:
        _teardown(started, request)
