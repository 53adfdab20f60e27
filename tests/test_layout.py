"""The tree is the architecture: layers import in one direction, never in a cycle.

The import graph is read from the source with ``ast``, every import counted:
module level, inside functions, and under ``if TYPE_CHECKING:`` (a type-only
import is still a dependency a reader has to follow). Layers, lowest first,
and what each may import (see each subpackage's ``__init__`` docstring):
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
#: source folder -> import package (pyproject's package-dir)
TOPS = {"pool": "guestpool", "inspectors": "guestpool.inspectors", "bench": "guestpool.bench"}
BASE = {"_errors", "_paths", "_cache"}
#: part of guestpool -> the other parts it may import
ALLOWED: dict[str, set[str]] = {
    "_errors": set(),
    "_paths": set(),
    "_cache": set(),
    "inspectors": BASE,
    "fleet": BASE | {"inspectors"},
    "appliance": BASE | {"inspectors", "fleet"},
    "store": BASE | {"inspectors", "fleet"},
    "supply": BASE | {"store"},
    "rounds": BASE | {"inspectors", "fleet", "appliance", "store", "supply"},
    "demo": BASE | {"inspectors", "fleet", "appliance"},
    "nats": BASE | {"inspectors", "fleet", "appliance", "store", "supply", "rounds"},
    "service": BASE | {"inspectors", "fleet", "appliance", "store", "supply", "rounds", "nats"},
    "bench": BASE | {"guestpool", "inspectors", "fleet", "appliance", "store", "supply",
                     "rounds", "nats", "demo"},
    "cli": BASE | {"inspectors", "fleet", "appliance", "store", "supply", "rounds", "nats",
                   "service", "demo", "bench"},
    "__main__": {"cli"},
    "guestpool": set(),
}


def modules() -> dict[str, Path]:
    found = {}
    for folder, package in TOPS.items():
        for path in (REPO / folder).rglob("*.py"):
            parts = list(path.relative_to(REPO / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def imported(module: str, path: Path, known: dict[str, Path]) -> Iterator[str]:
    """Every guestpool module ``module`` imports, wherever the import statement is."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            targets = [f"{source}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != module:
                yield target


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: set(imported(m, p, known)) for m, p in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def part(module: str) -> str:
    """The layer a module belongs to: ``inspectors``, ``rounds``, ``_errors``, ..."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_the_graph_sees_function_level_and_type_only_imports(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                   "    from guestpool.rounds import _pool\n"
                   "def f():\n    from ._results import InspectResult\n")
    known = {"guestpool.store._m": src, "guestpool.rounds._pool": src,
             "guestpool.store._results": src}
    assert set(imported("guestpool.store._m", src, known)) == {
        "guestpool.rounds._pool", "guestpool.store._results"}


def test_cycles_are_found() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle() -> None:
    assert cycles(graph()) == []


def test_layers_import_downwards_only() -> None:
    wrong = sorted(f"{m} imports {t}" for m, targets in graph().items() for t in targets
                   if part(t) != part(m) and part(t) not in ALLOWED[part(m)])
    assert wrong == []


def test_every_part_of_guestpool_has_a_layer() -> None:
    assert {part(m) for m in modules()} <= set(ALLOWED)


@pytest.mark.parametrize("plugin_api", ["guestpool.inspectors"])
def test_the_inspector_api_needs_nothing_of_the_supervisor(plugin_api: str) -> None:
    """A plugin author's import of the inspector API loads no supervisor module."""
    leaks = {f"{m} -> {t}" for m, targets in graph().items() if m.startswith(plugin_api)
             for t in targets if not t.startswith(plugin_api) and part(t) not in BASE}
    assert leaks == set()


def test_modules_stay_small_and_the_top_level_short() -> None:
    long = {str(p.relative_to(REPO)): n for p in modules().values()
            if (n := len(p.read_text().splitlines())) > 600}
    assert long == {}
    top = sorted(p.name for p in (REPO / "pool").glob("*.py"))
    assert len(top) <= 10, top
