"""Shared pytest setup. Fixtures live in tests/fixtures/, one module per subject, listed here."""

import pytest

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
            # shared apps run in one worker; those that start Ray clusters of their own (the crash and
            # multi-node tests) in the other, beside it, which then takes the tiers that need no cluster.
            own = "serve_cluster" not in getattr(item, "fixturenames", ())
            item.add_marker(pytest.mark.xdist_group("own-clusters" if own else "ray"))
        else:
            # A module's tests in one worker: its module fixtures (loaded engines, the narration-length
            # table's 60 videos) are built once, not once in each worker.
            item.add_marker(pytest.mark.xdist_group(item.path.stem))
