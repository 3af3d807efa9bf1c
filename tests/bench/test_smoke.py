"""Every benchmark's entry point, run end to end in its smoke form, must still write its figures.

A benchmark is run by hand, rarely, so a change elsewhere can break it unseen (`make bench` crashed in its
last part once the animator became a stream). Each test here calls one benchmark's `main` as its command
line does, with `--smoke` (one short round on small inputs) or, for the GPU benchmarks, `--tiny` (CPU), and
checks that every figure it reports is there and is a finite number. What the figures say is not checked:
a smoke round measures nothing. The benchmarks that need the service share the session's one Ray start,
and those on the benchmark app share one deploy of it.

`make bench-smoke` runs this folder; `make test` leaves it out (marker `bench`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench import __main__ as bench_main
from bench import (
    duty_cycle,
    gpu_svd,
    gpu_video,
    narration,
    replica_memory,
    report,
    service,
    soak,
    step_scheduling,
    store,
    timeline,
)
from tests.fixtures.serve import DEPLOYMENTS

pytestmark = pytest.mark.bench


def assert_figures(result: dict[str, Any], *paths: str) -> None:
    """Each dotted path (``"mix.mix_ratio"``) names a finite number in ``result``."""
    for path in paths:
        value: Any = result
        for key in path.split("."):
            assert isinstance(value, dict) and key in value, f"{path}: no {key!r} in {value!r}"[:300]
            value = value[key]
        assert isinstance(value, int | float) and not isinstance(value, bool), f"{path} = {value!r}"
        assert math.isfinite(value), f"{path} = {value!r}"


# -- without Ray ----------------------------------------------------------------------------------


def test_narration(tmp_path: Path) -> None:
    out = tmp_path / "narration.json"
    narration.main(["--smoke", "--out", str(out)])

    result = json.loads(out.read_text())
    assert_figures(
        result, "mix.mix_ratio", "mix.cpu_ratio", "mix.median_wall_s.ours", "mix.median_wall_s.cli"
    )
    for language in narration.JOBS:
        assert_figures(result, f"share.{language}.narration_share", f"share.{language}.job_wall_s")


def test_duty_cycle(tmp_path: Path) -> None:
    out = tmp_path / "duty.json"
    duty_cycle.main(["--smoke", "--out", str(out)])

    result = json.loads(out.read_text())
    assert set(result["levels"]) == {"1", "4"}
    for level in result["levels"].values():
        assert_figures(level, "duty_cycle", "busy_s", "wall_s", "cpu_share", "process_cpu_s", "ffmpeg_cpu_s")
        assert level["model_calls"] >= 1 and 0 < level["duty_cycle"] <= 1
        assert set(level["stage_wall_s"]) >= {"write", "narrate", "paint", "animate", "encode", "stitch"}


def test_step_scheduling(tmp_path: Path) -> None:
    out = tmp_path / "step.json"
    step_scheduling.main(["--smoke", "--out", str(out)])

    result = json.loads(out.read_text())
    near = result["rates"]["near"]
    assert_figures(result, "call_capacity_per_s")
    assert_figures(
        near, "rate_per_s", "ratio_median.p90_s", "ratio_median.throughput_per_s", "ratio_median.mean_s"
    )
    assert near["rate_per_s"] == pytest.approx(step_scheduling.RATES["near"] * result["call_capacity_per_s"])
    for side in ("call", "step"):
        assert_figures(near["medians"][side], "mean_s", "p90_s", "throughput_per_s")


def test_replica_memory(capsys: pytest.CaptureFixture[str]) -> None:
    replica_memory.main([])

    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert [row[0] for row in rows] == list(replica_memory.REPLICAS)
    for name, rss_mb, torch in rows:
        assert 0 < float(rss_mb) < 100_000, name
        # Under the CPU profile no replica holds a model, so none may load the model stack.
        assert torch == "no", name


def _gpu_sides(result: dict[str, Any]) -> None:
    assert result["gpu_measured"] is False
    assert_figures(result, "speedup", "difference.relative_l2", "difference.max_abs_levels")
    for side in ("plain_diffusers", "engine"):
        assert_figures(result[side], "video_s", "unet_step_s", "vae_decode_s")
        assert 0 < result[side]["vae_decode_s"] < result[side]["video_s"]
    # Same weights, same noise, same kernels on CPU: the engine's options must not change a single pixel.
    assert result["difference"]["max_abs_levels"] == 0


def test_gpu_svd_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "gpu_svd.json"
    gpu_svd.main(["--tiny", "--out", str(out)])

    result = json.loads(out.read_text())
    assert result["mode"] == "tiny"
    _gpu_sides(result)


@pytest.mark.parametrize("family", ["ltx", "wan"])
def test_gpu_video_on_cpu(family: str, tmp_path: Path) -> None:
    out = tmp_path / f"gpu_{family}.json"
    gpu_video.main(["--family", family, "--tiny", "--out", str(out)])

    result = json.loads(out.read_text())
    assert result["family"] == family and result["mode"] == "tiny"
    _gpu_sides(result)


# -- through the service, on the session's one cluster ----------------------------------------------


def test_store(serve_cluster: str, tmp_path: Path) -> None:
    out = tmp_path / "store.json"
    store.main(["--smoke", "--out", str(out)])

    result = json.loads(out.read_text())
    assert result["busiest"] == 1
    assert_figures(result, "status_p99_ms_postgresql")
    for name in ("sqlite", "postgresql"):
        assert_figures(result["medians"][name]["1"], "jobs_per_min", "status_p50_ms", "status_p99_ms")
    # On a loaded host a job can outlast the smoke's 8 s window: no SQLite job ended, no ratio.
    if result["medians"]["sqlite"]["1"]["jobs_per_min"]:
        assert_figures(result, "throughput_ratio.1")
    else:
        assert result["throughput_ratio"]["1"] is None


@pytest.fixture(scope="module")
def tiny_app(serve_cluster: str) -> Iterator[service.TinyApp]:
    """The benchmark app, deployed once: the benchmarks below deploy it themselves, and find it there."""
    with service.tiny_app("bench-smoke-") as app:
        yield app


def test_make_bench(tiny_app: service.TinyApp, tmp_path: Path) -> None:
    bench_main.main(["--smoke", "--out", str(tmp_path)])

    latest = json.loads((tmp_path / "latest.json").read_text())
    assert_figures(latest, *report.GOALS)
    assert latest["details"]["streams"]["over_cap"]["before"] == {"status": 429, "code": "too_many_streams"}
    # The batch size was switched: no scenes shared a call at 1, four did at 4.
    seen = latest["details"]["batch"]["batch_sizes_seen"]
    assert set(seen["1"]) == {"1"} and "4" in seen["4"]


def test_soak(tiny_app: service.TinyApp, tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    soak.main(["--smoke", "--out", str(out)])

    lines = json.loads(out.read_text())["lines"]
    assert [line["jobs"] for line in lines] == [1, 2]
    assert_figures(lines[-1], "seconds_per_job")
    # Every replica of the app is found by its process title, with its three readings.
    assert set(lines[-1]["replicas"]) == set(DEPLOYMENTS)
    for name in DEPLOYMENTS:
        assert_figures(lines[-1]["replicas"][name], "rss_mb", "threads", "fds")


def test_timeline(tiny_app: service.TinyApp, tmp_path: Path) -> None:
    out = tmp_path / "timeline.json"
    timeline.main(["--smoke", "--out", str(out)])

    result = json.loads(out.read_text())
    assert_figures(result, "job_s")
    # The job's calls, read from the replicas' access logs.
    calls = {(span["deployment"], span["method"]) for span in result["spans"]}
    assert {("VideoAnimator", "animate"), ("Encoder", "encode_scene"), ("Encoder", "stitch")} <= calls
    for span in result["spans"]:
        assert_figures(span, "start", "end")
