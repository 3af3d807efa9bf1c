"""Videos as long as asked: scenes longer than one model call are made of segments chained on the last
frame, each its own checkpoint. In process, over the real engines (title cards) and real encoding."""

from __future__ import annotations

import asyncio
import time

import pytest

from core.files import JobFiles
from engines.media import VideoProcessor
from serve_app.config import AppConfig
from serve_app.jobs.plan import plan_job, segment_frames
from serve_app.jobs.recipe import VideoRecipe, seed_of
from serve_app.jobs.runner import JobWorker
from serve_app.jobs.stages import local_stages
from serve_app.protocol import CreateVideoRequest
from serve_app.videos.service import VideoService
from tests.fixtures.jobs import runners, service_with, stages_with

pytestmark = pytest.mark.integration


@pytest.fixture
def short_calls(local_config: AppConfig) -> AppConfig:
    """The CPU profile's settings with model calls of at most 8 frames: a 4 s scene at 4 fps takes three."""
    return local_config.model_copy(
        update={"limits": local_config.limits.model_copy(update={"max_frames_per_segment": 8})}
    )


async def create(service: VideoService, **body) -> str:
    video = await service.create(CreateVideoRequest(prompt="Dawn. Noon. Dusk. Night.", **body), None, None)
    return video.id


@pytest.mark.slow
@pytest.mark.parametrize("seconds, scenes, interpolation", [(16, 4, 1), (10, 2, 1), (10, 2, 2)])
def test_a_video_lasts_what_was_asked(short_calls, seconds, scenes, interpolation):
    short_calls.video_processing.interpolation_factor = interpolation

    async def scenario():
        service = service_with(short_calls)
        job_id = await create(service, seconds=seconds, num_scenes=scenes)
        await runners(service).finished(job_id)
        return service.store.get(job_id), service.retrieve(job_id)

    job, video = asyncio.run(scenario())
    assert job.status == "completed", job.error_message
    files = JobFiles(short_calls.storage.root, job.id)
    length = VideoProcessor.probe(files.variant("video")).duration
    assert length == pytest.approx(seconds, abs=0.3)
    assert float(video.seconds) == pytest.approx(length, abs=0.01)  # the object says the file's length
    for scene in job.scenes:
        assert scene.segments > 1 and scene.segments_done == scene.segments
        assert files.segment(scene.idx, scene.segments - 1).is_file()
    cues = (files.variant("captions")).read_text().count(" --> ")
    assert cues == scenes


def test_segments_split_a_scene_evenly_and_chain_on_the_last_frame():
    assert segment_frames(8, 8) == [8]
    assert segment_frames(17, 8) == [7, 6, 6]  # 1 + 6 + 5 + 5 = 17 frames once the repeats are dropped
    for frames in range(2, 200):
        parts = segment_frames(frames, 25)
        assert 1 + sum(n - 1 for n in parts) == frames
        assert max(parts) <= 25 and min(parts) >= 2 and max(parts) - min(parts) <= 1


class StallOn:
    """An animator that hands calls on to the in-process one, except call ``stall`` (1-based), which never
    ends: a runner that dies while that segment is being made. Records every request it gets."""

    def __init__(self, config: AppConfig, stall: int | None = None) -> None:
        self.inner = local_stages(config)
        self.stall = stall
        self.requests = []
        self.stalled = asyncio.Event()

    def animate(self, request, keyframe):
        self.requests.append(request.scene)
        if len(self.requests) == self.stall:
            return self._forever()
        return self.inner.animate(request, keyframe)

    async def _forever(self):
        self.stalled.set()
        await asyncio.Event().wait()
        yield


def test_a_job_killed_mid_segment_resumes_after_its_last_finished_segment(short_calls):
    async def scenario():
        first = StallOn(short_calls, stall=2)  # scene 0's second segment
        service = service_with(short_calls, animator=first)
        job_id = await create(service, seconds=4, num_scenes=1)
        await asyncio.wait_for(first.stalled.wait(), 30)
        before = service.store.get(job_id).scenes[0]
        # The runner dies: its task ends, its lease is left to run out.
        worker = runners(service).worker
        worker.tasks[job_id].cancel()
        await runners(service).finished(job_id)
        service.store.update(job_id, runner_id="runner-dead", lease_until=time.time() - 1)

        second = StallOn(short_calls)
        again = JobWorker(
            short_calls,
            service.store,
            VideoRecipe(short_calls, service.store, stages_with(short_calls, animator=second)),
        )
        assert await again.run(job_id)
        return before, service.store.get(job_id), first, second

    before, job, first, second = asyncio.run(scenario())
    assert (before.segments, before.segments_done) == (3, 1)
    assert job.status == "completed", job.error_message
    # The second run made segments 1 and 2 only, with their own seeds, and the scene is whole.
    made = [(request.seed, request.num_frames) for request in second.requests]
    plan = plan_job(CreateVideoRequest.model_validate(job.request), short_calls, job.request["seed"])
    frames = plan.scene_frames([4.0])[0]
    lengths = segment_frames(frames, 8)
    assert made == [(seed_of(plan, 0, 1), lengths[1]), (seed_of(plan, 0, 2), lengths[2])]
    assert len({seed_of(plan, 0, k) for k in range(3)} | {seed_of(plan, 1, 0)}) == 4
    assert first.requests[0].seed == plan.seed  # a first segment keeps the seed it had before segments
    assert job.scenes[0].attempts == 2 and job.scenes[0].segments_done == 3
    files = JobFiles(short_calls.storage.root, job.id)
    assert VideoProcessor.probe(files.clip(0)).frames == frames == 16
