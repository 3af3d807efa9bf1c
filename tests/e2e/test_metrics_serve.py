"""The README's metrics reach Prometheus: Ray's metrics export on the node, scraped as Prometheus would."""

from __future__ import annotations

import re
import time

import httpx
import pytest

from tests.fixtures.serve import Deployed
from tests.support.docs import documented_metrics

pytestmark = pytest.mark.e2e

# Recorded by any job the CPU profile completes; the others need a GPU model (gpu_memory), a retry, step
# scheduling or a painter model.
AFTER_ANY_JOB = {
    "storyreel_jobs",
    "storyreel_jobs_finished",
    "storyreel_stage_seconds",
    "storyreel_scenes",
    "storyreel_queue_depth",
}


def exported(url: str) -> set[str]:
    """The storyreel metric families on the node's Prometheus endpoint (Ray prefixes them ``ray_``)."""
    text = httpx.get(url, timeout=10).text
    return set(re.findall(r"^# TYPE ray_(storyreel_[a-z_]+?)(?:_total)? ", text, flags=re.MULTILINE))


def test_a_finished_job_shows_in_the_exported_metrics(cpu_app: Deployed, metrics_url: str):
    documented = documented_metrics()
    assert documented >= AFTER_ANY_JOB
    video = cpu_app.client.post("/v1/videos", json={"prompt": "Counted.", "seconds": 2}).json()
    assert cpu_app.wait(video["id"])["status"] == "completed"

    deadline = time.monotonic() + 90  # Ray reports every few seconds; this only guards against a hang
    while not (found := exported(metrics_url)) >= AFTER_ANY_JOB:
        assert time.monotonic() < deadline, f"not exported: {sorted(AFTER_ANY_JOB - found)}"
        time.sleep(1)
    assert found <= documented, f"exported but not in the README: {sorted(found - documented)}"
