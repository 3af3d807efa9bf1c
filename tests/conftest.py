"""Shared pytest setup. Fixtures live in tests/fixtures/, one module per subject, listed here."""

import os
import sys
from collections.abc import Callable

import pytest

# Under pytest-xdist (make test, make test-fast: a worker per core) each worker's torch gets its share of the
# cores, not a thread per core: two workers of two threads each on two cores spent 129 s of CPU on
# make test-fast where one thread each spent 84 s (and 83 -> 61 s of wall time). Set before torch loads, and
# inherited by the Ray cluster a worker starts.
if workers := int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0")):
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

from tests.fixtures.serve import SHARED_APP_FIXTURES, shared_apps_of  # noqa: E402

pytest_plugins = [
    "tests.fixtures.browser",
    "tests.fixtures.jobs",
    "tests.fixtures.media",
    "tests.fixtures.models",
    "tests.fixtures.postgres",
    "tests.fixtures.s3",
    "tests.fixtures.serve",
    "tests.fixtures.writer",
]

# The tier of a test is the folder it lies in: `-m "not e2e"` (make test-fast) leaves out every test that
# needs the Ray cluster, whatever its module declares.
TIERS = {"unit", "integration", "e2e", "bench"}


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items):
    for item in items:
        tier = item.path.parent.name
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))
        if tier == "e2e":
            # Under `pytest -n 2 --dist loadgroup` (make test) the tests on the session's Ray cluster and its
            # shared apps run in one worker; those that start a Ray cluster of their own (the multi-node
            # test) in the other, beside it, which then takes the tiers that need no cluster.
            own = "serve_cluster" not in getattr(item, "fixturenames", ())
            item.add_marker(pytest.mark.xdist_group("own-clusters" if own else "ray"))
        else:
            # A module's tests in one worker: its module fixtures (loaded engines, the narration-length
            # table's 60 videos) are built once, not once in each worker.
            item.add_marker(pytest.mark.xdist_group(item.path.stem))
    items[:] = sorted(items, key=shared_apps_order(items))


def shared_apps_order(items: list[pytest.Item]) -> Callable[[pytest.Item], tuple[int, int, int]]:
    """A sort key that puts the e2e modules using the same shared app (`SHARED_APP_FIXTURES`) next to each
    other, so each app lives through one stretch of the run, not all of it; a module keeps its tests
    together and in order, and every other test keeps its place after the e2e tier."""
    used: dict[str, set[int]] = {}
    for item in items:
        apps = (SHARED_APP_FIXTURES.index(name) for name in shared_apps_of(item))
        used.setdefault(str(item.path), set()).update(apps)
    last = len(SHARED_APP_FIXTURES)

    def key(item: pytest.Item) -> tuple[int, int, int]:
        if item.path.parent.name != "e2e":
            return (1, 0, 0)
        apps = used[str(item.path)] or {last}
        return (0, min(apps), max(apps))

    return key
