"""bench.timeline reads one job's calls out of Serve's replica access logs."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from bench.timeline import job_spans

pytestmark = pytest.mark.unit

JOB = "0933c728-806f-400b-98f9-af8c21569676"
OTHER = "bce74bf9-caf9-4fa3-b3f8-e593f3f9d13a"


def test_spans_are_the_jobs_calls_by_start_time(tmp_path: Path) -> None:
    (tmp_path / "replica_bench_SVDGenerator_08mow4b7.log").write_text(
        f"INFO 2026-11-29 14:39:55,713 bench_SVDGenerator 08mow4b7 {JOB} -- CALL animate OK 304.4ms\n"
        f"INFO 2026-11-29 14:39:55,900 bench_SVDGenerator 08mow4b7 {OTHER} -- CALL animate OK 100.0ms\n"
        f"INFO 2026-11-29 14:39:55,901 bench_SVDGenerator 08mow4b7 {JOB} -- some other line\n"
    )
    (tmp_path / "replica_bench_KeyframePainter_oyy7ooh4.log").write_text(
        f"INFO 2026-11-29 14:39:55,400 bench_KeyframePainter oyy7ooh4 {JOB} -- CALL paint ERROR 38.1ms\n"
    )
    (tmp_path / "proxy_192.0.2.2.log").write_text(
        f"INFO 2026-11-29 14:39:55,300 proxy 192.0.2.2 {JOB} -- CALL paint OK 1.0ms\n"
    )
    posted_at = datetime(2026, 11, 29, 14, 39, 55, 300000).timestamp()

    spans = job_spans(tmp_path, JOB, posted_at)

    assert [(s.deployment, s.method, s.outcome) for s in spans] == [
        ("KeyframePainter", "paint", "ERROR"),
        ("SVDGenerator", "animate", "OK"),
    ]
    assert spans[0].end == pytest.approx(0.100, abs=1e-6)
    assert spans[0].start == pytest.approx(0.100 - 0.0381, abs=1e-6)
    assert spans[1].start == pytest.approx(0.413 - 0.3044, abs=1e-6)
