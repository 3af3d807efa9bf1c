"""bench.timeline reads one job's calls out of Serve's replica access logs: the app's calls in the job's time."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from bench.timeline import job_spans

pytestmark = pytest.mark.unit

REQUEST = "0933c728-806f-400b-98f9-af8c21569676"


def _at(seconds: float) -> float:
    return datetime(2026, 11, 29, 14, 39, 55).timestamp() + seconds


def test_spans_are_the_apps_calls_that_started_within_the_job_by_start_time(tmp_path: Path) -> None:
    (tmp_path / "replica_bench_VideoAnimator_08mow4b7.log").write_text(
        f"INFO 2026-11-29 14:39:55,713 bench_VideoAnimator 08mow4b7 {REQUEST} -- CALL animate OK 304.4ms\n"
        f"INFO 2026-11-29 14:39:55,901 bench_VideoAnimator 08mow4b7 {REQUEST} -- some other line\n"
        # Started before the POST: the previous job's.
        f"INFO 2026-11-29 14:39:55,350 bench_VideoAnimator 08mow4b7 {REQUEST} -- CALL animate OK 100.0ms\n"
        # Started after the job ended.
        f"INFO 2026-11-29 14:39:57,100 bench_VideoAnimator 08mow4b7 {REQUEST} -- CALL animate OK 10.0ms\n"
    )
    (tmp_path / "replica_bench_KeyframePainter_oyy7ooh4.log").write_text(
        f"INFO 2026-11-29 14:39:55,400 bench_KeyframePainter oyy7ooh4 {REQUEST} -- CALL paint ERROR 38.1ms\n"
    )
    (tmp_path / "replica_other_KeyframePainter_ab12cd34.log").write_text(  # another app's replica
        f"INFO 2026-11-29 14:39:55,500 other_KeyframePainter ab12cd34 {REQUEST} -- CALL paint OK 1.0ms\n"
    )
    (tmp_path / "proxy_192.0.2.2.log").write_text(
        f"INFO 2026-11-29 14:39:55,500 proxy 192.0.2.2 {REQUEST} -- CALL paint OK 1.0ms\n"
    )

    spans = job_spans(tmp_path, "bench", posted_at=_at(0.3), ended_at=_at(2.0))

    assert [(s.deployment, s.method, s.outcome) for s in spans] == [
        ("KeyframePainter", "paint", "ERROR"),
        ("VideoAnimator", "animate", "OK"),
    ]
    assert spans[0].end == pytest.approx(0.100, abs=1e-6)
    assert spans[0].start == pytest.approx(0.100 - 0.0381, abs=1e-6)
    assert spans[1].start == pytest.approx(0.413 - 0.3044, abs=1e-6)
