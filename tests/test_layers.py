"""The import structure: layers point down, and no module imports itself in a circle.

Layers, lowest first: ``throttle`` (the core library), ``workers`` (the Celery side),
``tasks`` (the public task API), ``gateway`` (the HTTP front door). Every import
counts, those inside functions too (a circle broken only by a function-level import is
still a circle). The imports that break the rule today are listed below, each one by
name: a new one fails this test, and so does a listed one that is gone (take it off the
list). Issue 14 is to empty both lists.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("throttle", "workers", "tasks", "gateway")

#: (importer, imported) pairs that point up a layer today.
KNOWN_UPWARD = {
    ("throttle.cli", "gateway.serve"),
    ("throttle.cli", "tasks.batch"),
    ("throttle.cli", "workers.demo"),
    ("workers.harness", "tasks.completion"),
}
#: Circles of modules today, each as the set of its modules.
KNOWN_CIRCLES = [
    {
        "workers.app",
        "workers.context",
        "workers.dispatcher",
        "workers.heartbeat",
        "workers.publish",
    },
]


def modules() -> dict[str, Path]:
    found = {}
    for package in LAYERS:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imported_names(tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def import_graph() -> dict[str, set[str]]:
    """Module -> the project's modules it imports (a name resolved to the longest
    module it names: ``from throttle.errors import X`` -> ``throttle.errors``)."""
    known = modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in known.items():
        for target in imported_names(ast.parse(path.read_text(encoding="utf-8"))):
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                graph[name].add(target)
    return graph


def layer(module: str) -> int:
    return LAYERS.index(module.split(".")[0])


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_imports_point_down_a_layer_or_stay_in_it() -> None:
    graph = import_graph()
    upward = {(a, b) for a, targets in graph.items() for b in targets if layer(b) > layer(a)}
    assert upward - KNOWN_UPWARD == set(), "new imports up a layer"
    assert KNOWN_UPWARD - upward == set(), "gone: take them off KNOWN_UPWARD"


def test_no_new_circle_of_imports() -> None:
    found = circles(import_graph())
    assert [c for c in found if c not in KNOWN_CIRCLES] == [], "a new circle"
    assert [c for c in KNOWN_CIRCLES if c not in found] == [], "gone: update KNOWN_CIRCLES"


def test_the_graph_sees_imports_inside_functions() -> None:
    """The check itself: throttle.cli imports the demo inside a function only."""
    assert "workers.demo" in import_graph()["throttle.cli"]
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
