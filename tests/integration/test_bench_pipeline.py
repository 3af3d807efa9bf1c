"""The overhead benchmark's in-process reference makes the benchmark job's whole video through the one recipe."""

from __future__ import annotations

import av
import pytest

from bench.pipeline import JOB, InProcessJob, app_config
from engines.video.step_loop import StepScheduler
from serve_app.jobs.plan import plan_job
from serve_app.protocol import CreateVideoRequest

pytestmark = pytest.mark.integration


@pytest.mark.slow
def test_the_in_process_job_writes_the_video_and_its_extras(tiny_svd_path, tiny_painter_path, tmp_path):
    config = app_config({"svd": tiny_svd_path, "painter": tiny_painter_path}, tmp_path / "storage")
    job = InProcessJob(config, tmp_path / "in-process")

    video = job.run()

    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.width, stream.height) == ("h264", 128, 128)
        seconds = sum(1 for _ in container.decode(stream)) / float(stream.average_rate)
    # As the service plans it: equal clips joined by cross-fades.
    plan = plan_job(CreateVideoRequest.model_validate(JOB), config, seed=JOB["seed"])
    clip_seconds = sum(plan.scene_frames([plan.scene_seconds] * plan.num_scenes)) / plan.fps / plan.num_scenes
    processing = config.video_processing
    fades = (
        (plan.num_scenes - 1) * processing.transition_seconds if processing.transition == "crossfade" else 0
    )
    assert seconds == pytest.approx(plan.num_scenes * clip_seconds - fades, abs=0.2)
    assert (video.parent / "captions.vtt").read_text().count(" --> ") == plan.num_scenes
    assert {path.name for path in video.parent.iterdir()} >= {
        "thumbnail.jpg",
        "spritesheet.jpg",
        "captions.vtt",
        *(f"scene_{i:03d}.mp4" for i in range(JOB["num_scenes"])),
    }
    again = job.run()  # a second run starts from an empty folder: only its own job is there
    assert again.is_file() and not video.exists()
    assert [folder.name for folder in (again.parents[1]).iterdir()] == [again.parent.name]


@pytest.mark.slow
def test_with_step_scheduling_the_in_process_job_steps_every_scene_in_the_loop(
    tiny_svd_path, tiny_painter_path, tmp_path
):
    config = app_config({"svd": tiny_svd_path, "painter": tiny_painter_path}, tmp_path / "storage")
    config.video = config.video.model_copy(update={"scheduling": "step"})
    # Cuts, not cross-fades: each scene is then one model call's frames (one segment).
    config.video_processing = config.video_processing.model_copy(update={"transition": "cut"})
    job = InProcessJob(config, tmp_path / "in-process")

    video = job.run()

    loop = job.stages.svd
    assert isinstance(loop, StepScheduler)
    assert video.is_file()
    # Each scene entered the loop on its own; every step of every scene ran there once.
    scene_steps = sum(size * calls for size, calls in loop.stats.calls.items())
    assert scene_steps == JOB["num_scenes"] * config.video.num_inference_steps
    loop.unload()
