"""The package's import graph, read from the source: no cycles, and nothing below
imports anything above (DESIGN.md, "Layers").

Every import statement counts -- at module level, inside functions and under
``if TYPE_CHECKING:`` -- since a cycle that only the type checker sees is still a
layer that knows about the one above it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import payout_async

PACKAGE = Path(payout_async.__file__).parent
#: The layers that drive the provider clients and the ledger; nothing below imports them.
UPPER = ("payout_async.payouts", "payout_async.cli", "payout_async.sandbox", "payout_async.testing")
#: The provider clients and the ledger.
LOWER = ("payout_async.enot", "payout_async.intellectmoney", "payout_async.ledger")


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ["payout_async", *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _imported(name: str, path: Path, modules: dict[str, Path]) -> Iterator[str]:
    """The package's modules that ``name`` imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                target = submodule if submodule in modules else source
                if target in modules:
                    yield target


def import_graph() -> dict[str, set[str]]:
    """Each module of the package and the modules of the package it imports."""
    modules = _modules()
    return {
        name: {target for target in _imported(name, path, modules) if target != name}
        for name, path in modules.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The graph's strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while (top := stack.pop()) != node:
                component.append(top)
            if component:
                found.append(sorted([node, *component]))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _within(name: str, parts: tuple[str, ...]) -> bool:
    return any(name == part or name.startswith(part + ".") for part in parts)


def _lower(name: str) -> bool:
    """A provider client's or the ledger's module, or a private one they share
    (``payout_async._errors``, ``payout_async._transport``...)."""
    parent, _, leaf = name.rpartition(".")
    shared = parent == "payout_async" and leaf.startswith("_") and leaf != "__main__"
    return shared or _within(name, LOWER)


def test_the_graph_is_read_from_the_source() -> None:
    graph = import_graph()
    assert "payout_async.payouts._orchestrator" in graph
    assert "payout_async.enot" in graph["payout_async.payouts._orchestrator"]
    assert "payout_async.enot._webhook" in graph["payout_async.enot._webhook_handler"]


def test_cycles_are_found_also_under_type_checking() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_provider_clients_and_ledger_import_nothing_above_them() -> None:
    upward = sorted(
        (name, target)
        for name, targets in import_graph().items()
        if _lower(name)
        for target in targets
        if _within(target, UPPER)
    )
    assert upward == []
