"""The test suite's shared Serve apps (tests/fixtures/serve.py) are deleted after their last user, never
before it, and the e2e modules that use one app run next to each other (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import shared_apps_order
from tests.fixtures.serve import SharedApps


@dataclass
class Item:
    """What the suite's hooks read of a pytest item."""

    nodeid: str
    fixturenames: list[str] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return Path(self.nodeid.partition("::")[0])


def test_an_app_is_deleted_after_its_last_user_and_not_before():
    events = []

    @contextmanager
    def app(name: str) -> Iterator[str]:
        events.append(f"deploy {name}")
        yield name
        events.append(f"delete {name}")

    items = [
        Item("tests/e2e/test_a.py::one", ["cpu_app"]),
        Item("tests/e2e/test_a.py::two", ["cpu_app", "keyed_app"]),
        Item("tests/e2e/test_b.py::three", ["keyed_app"]),
    ]
    apps = SharedApps()
    apps.plan(items)
    with apps.hold("cpu_app", app("cpu")), apps.hold("keyed_app", app("keyed")):
        apps.finished(items[0])
        assert events == ["deploy cpu", "deploy keyed"]
        apps.finished(items[1])
        assert events[-1] == "delete cpu"
        apps.finished(items[2])
        assert events[-1] == "delete keyed"
    # The session's end deletes nothing twice.
    assert events == ["deploy cpu", "deploy keyed", "delete cpu", "delete keyed"]


def test_an_app_whose_users_did_not_all_run_is_deleted_at_the_end():
    events = []

    @contextmanager
    def app() -> Iterator[None]:
        yield
        events.append("delete")

    items = [
        Item("tests/e2e/test_a.py::one", ["serial_app"]),
        Item("tests/e2e/test_a.py::two", ["serial_app"]),
    ]
    apps = SharedApps()
    apps.plan(items)
    with apps.hold("serial_app", app()):
        apps.finished(items[0])
        assert events == []
    assert events == ["delete"]


def test_modules_of_one_app_run_together_and_other_tiers_keep_their_order():
    items = [
        Item("tests/e2e/test_a.py::x", ["keyed_app"]),
        Item("tests/e2e/test_b.py::x", ["cpu_app"]),
        Item("tests/e2e/test_c.py::x", []),
        Item("tests/e2e/test_d.py::x", ["keyed_app"]),
        Item("tests/e2e/test_e.py::x", ["cpu_app"]),
        Item("tests/e2e/test_e.py::y", []),
        Item("tests/unit/test_f.py::x", []),
        Item("tests/integration/test_g.py::x", []),
    ]
    ordered = [item.nodeid for item in sorted(items, key=shared_apps_order(items))]
    assert ordered == [
        "tests/e2e/test_b.py::x",
        "tests/e2e/test_e.py::x",
        "tests/e2e/test_e.py::y",  # its module's tests stay together
        "tests/e2e/test_a.py::x",
        "tests/e2e/test_d.py::x",
        "tests/e2e/test_c.py::x",  # no shared app: after those that use one
        "tests/unit/test_f.py::x",
        "tests/integration/test_g.py::x",
    ]
