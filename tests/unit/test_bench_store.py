"""bench.store: the summary of its runs (the runs themselves need Ray and a PostgreSQL server: the
benchmark's own business; the store's behaviour on both databases is tests/integration/test_store.py's)."""

from __future__ import annotations

import pytest

from bench.store import LEVELS, summarize

pytestmark = pytest.mark.unit


def _run(jobs_per_min: float, p99: float) -> dict[str, float]:
    return {
        "jobs_per_min": jobs_per_min,
        "status_p50_ms": p99 / 2,
        "status_p99_ms": p99,
        "status_samples": 100,
    }


def test_the_summary_gives_medians_and_per_round_ratios_of_postgresql_over_sqlite():
    runs = {
        "sqlite": {level: [_run(60.0, 20.0), _run(30.0, 40.0)] for level in LEVELS},
        "postgresql": {level: [_run(54.0, 10.0), _run(33.0, 30.0)] for level in LEVELS},
    }

    result = summarize(runs)

    assert result["throughput_ratio"][8] == pytest.approx((0.9 + 1.1) / 2)
    assert result["throughput_ratio_spread"][8] == pytest.approx([0.9, 1.1])
    assert result["medians"]["sqlite"][1]["jobs_per_min"] == pytest.approx(45.0)
    assert result["busiest"] == 8
    assert result["status_p99_ms_postgresql"] == pytest.approx(20.0)


def test_the_goals_are_read_at_the_busiest_level_that_ran():
    runs = {"sqlite": {1: [_run(60.0, 20.0)]}, "postgresql": {1: [_run(30.0, 12.0)]}}

    result = summarize(runs)

    assert result["busiest"] == 1
    assert result["status_p99_ms_postgresql"] == pytest.approx(12.0)
    assert result["throughput_ratio"] == {1: pytest.approx(0.5)}


def test_a_round_in_which_sqlite_finished_no_job_has_no_ratio():
    runs = {
        "sqlite": {1: [_run(0.0, 20.0), _run(30.0, 20.0)], 8: [_run(0.0, 20.0)]},
        "postgresql": {1: [_run(6.0, 12.0), _run(33.0, 12.0)], 8: [_run(6.0, 12.0)]},
    }

    result = summarize(runs)

    assert result["throughput_ratio"] == {1: pytest.approx(1.1), 8: None}
    assert result["throughput_ratio_spread"][8] is None
