"""bench.streams' pure parts: what an event-stream line is, and the summary of a measurement."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from bench.streams import noisy_png, sse_kind, summarize

pytestmark = pytest.mark.unit


def _raw(status_ms: list[float], upload_ms: list[float]) -> dict:
    return {
        "seconds": 15,
        "stream_cap": 64,
        "streams_held": 64,
        "streams_refused_at_open": {},
        "streams_ended_early": {},
        "stream_events": {"event": 64},
        "over_cap": {"before": {"status": 429, "code": "too_many_streams"}},
        "status_ms": status_ms,
        "status_errors": {},
        "open_streams_at_polls": [64, 64, 63],
        "uploads_in_flight_at_polls": [2, 1, 2],
        "upload_ms": upload_ms,
        "upload_errors": {},
        "upload_bytes": 10_000_000,
        "held_statuses_at_end": {"in_progress": 64},
    }


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("retry: 2000", "retry"),
        ("event: video", "event"),
        (": keep-alive", "keep-alive"),
        ('data: {"id": "video_1"}', None),
        ("", None),
    ],
)
def test_each_line_of_a_stream_is_told_apart(line: str, kind: str | None) -> None:
    assert sse_kind(line) == kind


def test_the_summary_has_the_percentiles_the_counts_and_the_raw_samples() -> None:
    status = [float(v) for v in range(1, 101)]  # 1..100 ms
    summary = summarize(_raw(status, [2000.0, 3000.0]))

    assert summary["status_p50_ms"] == pytest.approx(50.5)
    assert summary["status_p99_ms"] == pytest.approx(99.01)
    assert summary["status_max_ms"] == 100.0
    assert summary["status_samples"] == 100
    assert summary["streams_open_at_polls"] == {"min": 63, "max": 64}
    assert summary["uploads_done"] == 2
    assert summary["upload_p50_ms"] == 2500.0
    assert summary["uploads_in_flight_at_polls"] == {1: 1, 2: 2}
    assert summary["raw_ms"]["status"] == status
    assert summary["raw_ms"]["upload"] == [2000.0, 3000.0]


def test_a_measurement_without_answered_polls_has_no_percentiles() -> None:
    raw = _raw([], []) | {"status_errors": {"503": 12}}
    summary = summarize(raw)

    assert summary["status_p99_ms"] is None
    assert summary["status_samples"] == 0
    assert summary["status_errors"] == {"503": 12}
    assert summary["uploads_done"] == 0 and summary["upload_p50_ms"] is None


def test_the_upload_is_a_png_of_the_asked_size() -> None:
    data = noisy_png(60, 40, seed=1)
    with Image.open(io.BytesIO(data)) as image:
        assert (image.format, image.size, image.mode) == ("PNG", (60, 40), "RGB")
    assert noisy_png(60, 40, seed=1) == data
