"""bench.step_scheduling: the arrival schedule and a short run of both schedulers end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench import step_scheduling

pytestmark = pytest.mark.unit


def test_arrivals_are_a_poisson_stream_at_the_asked_rate():
    times = step_scheduling.arrivals(4000, rate=5.0, seed=1)

    assert times[0] == 0.0 and times == sorted(times)
    gaps = np.diff(times)
    assert np.mean(gaps) == pytest.approx(1 / 5.0, rel=0.05)
    assert np.std(gaps) == pytest.approx(1 / 5.0, rel=0.1)  # exponential: the spread equals the mean
    assert step_scheduling.arrivals(10, 5.0, seed=1) == step_scheduling.arrivals(10, 5.0, seed=1)


@pytest.mark.slow
def test_a_short_run_measures_both_schedulers_on_the_same_scenes(tmp_path: Path):
    out = tmp_path / "step.json"
    step_scheduling.main(
        ["--rounds", "2", "--scenes", "6", "--steps", "2", "--rates", "near", "--out", str(out)]
    )

    result = json.loads(out.read_text())
    near = result["rates"]["near"]
    assert result["call_capacity_per_s"] > 0
    assert near["rate_per_s"] == pytest.approx(0.9 * result["call_capacity_per_s"])
    for side in ("call", "step"):
        assert len(near["runs"][side]) == 2
        assert all(run["p90_s"] > 0 and run["throughput_per_s"] > 0 for run in near["runs"][side])
    low, high = near["ratio_spread"]["p90_s"]
    assert low <= near["ratio_median"]["p90_s"] <= high
