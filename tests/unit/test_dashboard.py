"""The Grafana dashboard (cluster/grafana/) is wired to metrics that exist, and the metrics behind its less
obvious panels count what they say. Whether every panel shows data from a running service is checked
against a real Prometheus in tests/e2e/test_metrics_serve.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from core import metrics
from deployments.animator import BusyClock
from tests.support.clock import FakeClock
from tests.support.docs import documented_metrics

pytestmark = pytest.mark.unit

DASHBOARD = Path(__file__).parents[2] / "cluster" / "grafana" / "storyreel-dashboard.json"


def test_every_query_names_a_metric_of_ray_serve_or_one_of_ours_the_readme_lists():
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert {variable["name"] for variable in dashboard["templating"]["list"]} == {"datasource", "application"}
    documented = documented_metrics()
    graphs = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    assert len(graphs) >= 17
    for panel in graphs:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            ours = set(re.findall(r"\bray_(storyreel_[a-z_]+?)(?:_total|_bucket|_sum|_count)?\b", expr))
            assert ours <= documented, (panel["title"], sorted(ours - documented))
            assert ours or "ray_serve_" in expr, panel["title"]
            # Every selector is narrowed to the chosen applications, as the variable promises.
            selectors = re.findall(r"\bray_\w+(\{[^}]*\})?", expr)
            assert all('application=~"$application"' in selector for selector in selectors), expr


@pytest.fixture
def busy_seconds(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """What the clock adds to `storyreel_animator_busy_seconds`, one item per increment."""
    added: list[float] = []
    monkeypatch.setattr(metrics.get().animator_busy, "inc", lambda value=1.0, tags=None: added.append(value))
    return added


def test_overlapping_calls_count_once_and_a_long_call_shows_at_each_flush(
    monkeypatch: pytest.MonkeyPatch, busy_seconds: list[float]
):
    clock = FakeClock().install(monkeypatch)
    busy = BusyClock()
    clock.now = 10.0  # idle since the replica started: nothing counts
    first = busy.animating(2)
    first.__enter__()
    clock.now = 11.0
    with busy.animating(1):  # overlaps the first from 11 to 13
        assert busy.scenes == 3
        clock.now = 13.0
    clock.now = 15.0
    busy.flush()  # the health check's, mid-call: the first call's time so far shows now
    assert sum(busy_seconds) == 5.0
    clock.now = 16.0
    first.__exit__(None, None, None)
    clock.now = 30.0
    busy.flush()  # idle again
    assert busy.scenes == 0
    assert sum(busy_seconds) == 6.0  # 10 to 16: the wall time with a scene in a call, overlaps once


@pytest.mark.parametrize(
    ("policy", "loaded", "reason"),
    [("always", False, "policy"), ("auto", False, "unavailable"), ("auto", True, "failed")],
)
def test_a_fallback_is_counted_with_why_it_stood_in(monkeypatch: pytest.MonkeyPatch, policy, loaded, reason):
    counted: list[tuple[float, dict]] = []
    monkeypatch.setattr(
        metrics.get().fallbacks, "inc", lambda value=1.0, tags=None: counted.append((value, tags))
    )
    metrics.get().fell_back("paint", policy, loaded, count=3)
    assert counted == [(3, {"stage": "paint", "reason": reason})]
