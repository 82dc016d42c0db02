"""The import graph of the project: no cycles among its modules (the layer contract itself is
checked by `lint-imports`, run by scripts/test, from [tool.importlinter] in pyproject.toml)."""

from __future__ import annotations

import grimp


def cycles(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(m: str) -> None:
        index[m] = low[m] = len(index)
        stack.append(m)
        on_stack.add(m)
        for n in graph.find_modules_directly_imported_by(m) & modules:
            if n not in index:
                visit(n)
                low[m] = min(low[m], low[n])
            elif n in on_stack:
                low[m] = min(low[m], index[n])
        if low[m] == index[m]:
            component = []
            while True:
                n = stack.pop()
                on_stack.discard(n)
                component.append(n)
                if n == m:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for m in sorted(modules):
        if m not in index:
            visit(m)
    return found


def project_graph() -> tuple[grimp.ImportGraph, set[str]]:
    # Imports made only for type checking count too: a cycle there is a design smell as well.
    graph = grimp.build_graph("p2pstore", "p2pstore_cli", include_external_packages=False)
    # A package's __init__ and its __main__ are entry points, not layers of their own.
    modules = {m for m in graph.modules if not m.endswith("__main__")}
    return graph, modules


def test_no_import_cycles_among_project_modules() -> None:
    graph, modules = project_graph()
    assert len(modules) > 50, "the whole project was analysed"
    assert cycles(graph, modules) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The check itself can fail: a graph with one planted cycle."""
    graph = grimp.ImportGraph()
    for m in ("pkg.a", "pkg.b", "pkg.c", "pkg.d"):
        graph.add_module(m)
    graph.add_import(importer="pkg.a", imported="pkg.b")
    graph.add_import(importer="pkg.b", imported="pkg.c")
    graph.add_import(importer="pkg.c", imported="pkg.a")
    graph.add_import(importer="pkg.c", imported="pkg.d")
    assert cycles(graph, set(graph.modules)) == [["pkg.a", "pkg.b", "pkg.c"]]
