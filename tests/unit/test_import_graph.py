"""Imports point downwards only: core, then engines, then deployments, then serve_app, then bench.

The graph is read from the source (every import statement, inside functions too), not from what happens
to be imported at run time, so a lazy import cannot hide a cycle.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).parents[2]
# Each package may import only the ones before it (and itself).
LAYERS = ["core", "engines", "deployments", "serve_app", "bench"]


def _modules() -> dict[str, Path]:
    modules = {}
    for package in LAYERS:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def _imports(path: Path, module: str, modules: set[str]) -> set[str]:
    """Every module of ours that ``path`` imports: ``from a.b import c`` counts a.b.c when that is a module
    (a submodule, imported as such), else a.b."""
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {name for name in found if name.split(".")[0] in LAYERS}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {
        name: {
            imported
            for imported in _imports(path, name, set(modules))
            if imported in modules and imported != name
        }
        for name, path in modules.items()
    }


def test_every_package_imports_only_the_layers_below_it() -> None:
    upward = [
        f"{module} imports {imported}"
        for module, imports in _graph().items()
        for imported in imports
        if LAYERS.index(imported.split(".")[0]) > LAYERS.index(module.split(".")[0])
    ]
    assert upward == []


def test_there_is_no_import_cycle_between_packages_or_modules() -> None:
    graph = _graph()
    packages: dict[str, set[str]] = defaultdict(set)
    for module, imports in graph.items():
        packages[module.split(".")[0]] |= {name.split(".")[0] for name in imports} - {module.split(".")[0]}
    assert _cycle(packages) is None
    # Within a package, a cycle through module-level imports would break depending on import order.
    assert _cycle(graph) is None


def test_the_graph_is_read_for_real() -> None:
    graph = _graph()
    # Known edges, so an empty graph (a broken reader) cannot pass the tests above.
    assert "core.errors" in graph["engines.video.svd.engine"]
    assert "serve_app.jobs.recipe" in graph["serve_app.jobs.runner"]
    assert "deployments.animator" in graph["serve_app.app"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that returns to its start, or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for following in sorted(graph.get(node, ())):
            if state.get(following) == "open":
                return [*stack[stack.index(following) :], following]
            if following not in state and (found := visit(following)):
                return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None
