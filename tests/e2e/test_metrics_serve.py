"""The README's metrics reach Prometheus, and every panel of the Grafana dashboard (cluster/grafana/) shows
data: Debian's Prometheus scrapes the session cluster's metrics export every second while jobs run, and each
panel's query, as Grafana sends it, answers with a number."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.status import TERMINAL
from tests.fixtures.serve import Deployed
from tests.fixtures.webhooks import Receiver
from tests.support.docs import documented_metrics
from tests.support.prometheus import has_data, prometheus_server, query

pytestmark = pytest.mark.e2e

DASHBOARD = Path(__file__).parents[2] / "cluster" / "grafana" / "storyreel-dashboard.json"
# Recorded by any job the CPU profile completes; the others need a GPU model (gpu_memory), a retry, step
# scheduling, a model that fails (write and narrate fallbacks) or a webhook.
AFTER_ANY_JOB = {
    "storyreel_jobs",
    "storyreel_jobs_finished",
    "storyreel_stage_seconds",
    "storyreel_scenes",
    "storyreel_queue_depth",
    "storyreel_queue_wait_seconds",
    "storyreel_animator_busy_seconds",
    "storyreel_animator_batch_size",
    "storyreel_painter_batch_size",
    "storyreel_fallbacks",
}
# Panels whose metrics only a model on a GPU records: nothing sets them on this machine. Their metrics
# are still checked to be ones the code defines and the README lists.
GPU_PANELS = {"GPU memory"}
# What Grafana puts in a query before it sends it: the rate window it picks, and the chosen application.
RATE_WINDOW = "1m"


def exported(url: str) -> set[str]:
    """The storyreel metric families on the node's Prometheus endpoint (Ray prefixes them ``ray_``)."""
    text = httpx.get(url, timeout=10).text
    return set(re.findall(r"^# TYPE ray_(storyreel_[a-z_]+?)(?:_total)? ", text, flags=re.MULTILINE))


def panels() -> list[dict]:
    return [panel for panel in json.loads(DASHBOARD.read_text())["panels"] if panel["type"] != "row"]


def as_sent(expr: str, application: str) -> str:
    return expr.replace("$__rate_interval", RATE_WINDOW).replace("$application", re.escape(application))


@pytest.fixture(scope="module")
def prometheus(metrics_url: str) -> Iterator[str]:
    """Scraping from before this module's first job, so each later job's counts show as rates."""
    with prometheus_server(metrics_url) as url:
        yield url


def test_a_finished_job_shows_in_the_exported_metrics(keyed_app: Deployed, metrics_url: str, prometheus: str):
    documented = documented_metrics()
    assert documented >= AFTER_ANY_JOB
    video = keyed_app.client.post("/v1/videos", json={"prompt": "Counted.", "seconds": 2}).json()
    assert keyed_app.wait(video["id"])["status"] == "completed"

    deadline = time.monotonic() + 90  # Ray reports every few seconds; this only guards against a hang
    while not (found := exported(metrics_url)) >= AFTER_ANY_JOB:
        assert time.monotonic() < deadline, f"not exported: {sorted(AFTER_ANY_JOB - found)}"
        time.sleep(1)
    assert found <= documented, f"exported but not in the README: {sorted(found - documented)}"


def test_every_dashboard_panel_shows_data_while_jobs_run(keyed_app: Deployed, prometheus: str):
    receiver = Receiver(failures=1)  # one delivery retried, then delivered
    try:
        created = keyed_app.client.post(
            "/v1/videos", json={"prompt": "Graphed. Twice.", "seconds": 4, "webhook_url": receiver.url}
        )
        assert created.status_code == 200, created.text
        video_id = created.json()["id"]
        assert keyed_app.wait(video_id)["status"] == "completed"
        queries = {
            (panel["title"], target["expr"]): as_sent(target["expr"], keyed_app.name)
            for panel in panels()
            if panel["title"] not in GPU_PANELS
            for target in panel["targets"]
        }
        empty = dict(queries)
        deadline = time.monotonic() + 120  # Ray exports every few seconds, Prometheus scrapes every second
        while empty and time.monotonic() < deadline:
            # Jobs go on, one after another, with a client polling them and asking once a second for a video
            # that is not there (the errors panel's). A rate needs a count to grow after Prometheus first saw
            # it, and a series first appears with its first count: Serve's proxy exports its counts some
            # seconds after its first requests, and a runner replica started since (the runner autoscales)
            # shows its first job's queue wait as a new series.
            polled = keyed_app.client.get(f"/v1/videos/{video_id}")
            assert polled.status_code == 200
            if polled.json()["status"] in TERMINAL:
                video_id = keyed_app.client.post(
                    "/v1/videos", json={"prompt": "Graphed again.", "seconds": 2}
                ).json()["id"]
            assert keyed_app.client.get("/v1/videos/video_missing").status_code == 404
            empty = {key: sent for key, sent in empty.items() if not has_data(query(prometheus, sent))}
            time.sleep(1)
    finally:
        receiver.close()
    assert not empty, f"panels without data: {sorted(empty)}"
