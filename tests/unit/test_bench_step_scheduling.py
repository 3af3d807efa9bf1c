"""bench.step_scheduling: the arrival schedule (a short run of both schedulers end to end is in tests/bench)."""

from __future__ import annotations

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
