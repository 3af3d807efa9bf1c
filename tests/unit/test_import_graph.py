"""Imports point downwards only, between packages and between the rooms of serve_app.

Packages, bottom to top: core, engines, deployments, serve_app, tests.support, bench. Each may import only
the ones below it (and itself): engines never import deployments or serve_app, and tests.support (the
test servers and tiny models that the tests and the benchmarks share) may be imported by bench, never the
other way round.

Rooms of serve_app, top to bottom (``SERVE_APP_ROOMS``); a module may import its own room and any room
below its own, never one above, nor another room on its own level:

- ``app`` (the app builder), ``client`` (the CLI and the demo, which talk HTTP), ``config_docs``: the
  entry points.
- ``api``: routes, bodies, downloads, HTTP errors, the request guard.
- ``videos``: the video service, which the routes call.
- ``jobs``: planning and running a job.
- ``config``: the app's settings, read by every room above; it is made of the settings classes of the rooms
  and engines below it.
- ``webhooks``: the dispatcher that sends the outbox's events, their delivery, and the webhook settings.
- ``store``: the job store, with the webhook outbox (a table written in the store's own transactions).
- ``protocol``: the wire models, read by every room above (the config reads its scene limit).

Only ``serve_app.api`` and the app builder import the web framework (fastapi, starlette): the video
service, the jobs and the store raise ``core.errors``, which ``serve_app.api.errors`` turns into
responses.

The graph is read from the source (every import statement, inside functions too), not from what happens
to be imported at run time, so a lazy import cannot hide a cycle.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from functools import cache
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).parents[2]
# Each package may import only the ones before it (and itself).
LAYERS = ["core", "engines", "deployments", "serve_app", "tests.support", "bench"]
# serve_app's rooms, top to bottom; the rooms on one level are independent of each other.
SERVE_APP_ROOMS = [
    ("serve_app.app", "serve_app.client", "serve_app.config_docs"),
    ("serve_app.api",),
    ("serve_app.videos",),
    ("serve_app.jobs",),
    ("serve_app.config",),
    ("serve_app.webhooks",),
    ("serve_app.store",),
    ("serve_app.protocol",),
]
WEB_FRAMEWORKS = {"fastapi", "starlette"}
WEB_ROOMS = {"serve_app.api", "serve_app.app"}


def _within(module: str, prefixes: list[str]) -> str | None:
    """The first of ``prefixes`` that is ``module`` or a package holding it."""
    return next((prefix for prefix in prefixes if module == prefix or module.startswith(f"{prefix}.")), None)


def _layer(module: str) -> str:
    layer = _within(module, LAYERS)
    assert layer is not None, module
    return layer


def _room(module: str) -> str | None:
    return _within(module, [room for level in SERVE_APP_ROOMS for room in level])


def _level(room: str) -> int:
    return next(index for index, level in enumerate(SERVE_APP_ROOMS) if room in level)


def _modules() -> dict[str, Path]:
    modules = {}
    for package in LAYERS:
        for path in ROOT.joinpath(*package.split(".")).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def _imports(path: Path, module: str, modules: set[str]) -> set[str]:
    """Every module ``path`` imports, ours and others': ``from a.b import c`` counts a.b.c when that is a
    module of ours (a submodule, imported as such), else a.b."""
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
    return found


@cache
def _all_imports() -> dict[str, frozenset[str]]:
    modules = _modules()
    return {name: frozenset(_imports(path, name, set(modules))) for name, path in modules.items()}


def _graph() -> dict[str, set[str]]:
    modules = _all_imports()
    return {
        name: {imported for imported in imports if imported in modules and imported != name}
        for name, imports in modules.items()
    }


def test_every_package_imports_only_the_layers_below_it() -> None:
    upward = [
        f"{module} imports {imported}"
        for module, imports in _graph().items()
        for imported in imports
        if LAYERS.index(_layer(imported)) > LAYERS.index(_layer(module))
    ]
    assert upward == []


def test_every_module_of_serve_app_sits_in_a_room() -> None:
    homeless = [
        name for name in _graph() if _layer(name) == "serve_app" and name != "serve_app" and not _room(name)
    ]
    assert homeless == []


def test_every_room_of_serve_app_imports_only_the_rooms_below_it() -> None:
    # A room above, or another room on the same level: the rooms of one level stay independent.
    upward = [
        f"{module} imports {imported}"
        for module, imports in _graph().items()
        for imported in imports
        if (room := _room(module))
        and (other := _room(imported))
        and other != room
        and _level(other) <= _level(room)
    ]
    assert upward == []


def test_only_the_http_layer_imports_the_web_framework() -> None:
    found = [
        f"{module} imports {imported}"
        for module, imports in _all_imports().items()
        for imported in imports
        if imported.split(".")[0] in WEB_FRAMEWORKS and _room(module) not in WEB_ROOMS
    ]
    assert found == []


def test_there_is_no_import_cycle_between_packages_or_modules() -> None:
    graph = _graph()
    packages: dict[str, set[str]] = defaultdict(set)
    for module, imports in graph.items():
        packages[_layer(module)] |= {_layer(name) for name in imports} - {_layer(module)}
    assert _cycle(packages) is None
    # Within a package, a cycle through module-level imports would break depending on import order.
    assert _cycle(graph) is None


def test_the_graph_is_read_for_real() -> None:
    graph = _graph()
    # Known edges, so an empty graph (a broken reader) cannot pass the tests above.
    assert "core.errors" in graph["engines.video.svd.engine"]
    assert "serve_app.jobs.recipe" in graph["serve_app.jobs.runner"]
    assert "deployments.animator" in graph["serve_app.app"]
    assert "serve_app.videos.service" in graph["serve_app.api.ingress"]
    assert "serve_app.store.jobs" in graph["serve_app.videos.service"]
    assert "tests.support.tiny_models" in graph["bench.pipeline"]
    assert "fastapi" in _all_imports()["serve_app.api.ingress"]
    assert (
        _room("serve_app.jobs.recipe") == "serve_app.jobs" and _room("serve_app.config") == "serve_app.config"
    )
    assert _room("serve_app.config_docs") == "serve_app.config_docs"
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
