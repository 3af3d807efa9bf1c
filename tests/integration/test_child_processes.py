"""A job's ffmpeg dies with the job, in process (``LocalStages``): a cancel or a DELETE kills the stitch's ffmpeg
at once, a stitch past its time limit fails the job with `media_error`, and either way the runner's slot is free
for the next job.

The stitch is made to hang as the issue found it: the job's music bed is swapped, after the create checked it,
for a bare WAV header, which ffmpeg's `-stream_loop -1` loops over for ever.
"""

from __future__ import annotations

import asyncio

import pytest

from core.files import JobFiles
from serve_app.config import AppConfig
from serve_app.protocol import CreateVideoRequest
from serve_app.store.jobs import JobRow
from serve_app.videos.service import VideoService
from tests.fixtures.jobs import runners, service_with
from tests.fixtures.media import pids_running, seconds_until_gone, wait_for_process, wav_bytes

pytestmark = pytest.mark.integration


async def create_hanging(service: VideoService) -> str:
    """A one-scene job with a music bed that will make its stitch loop for ever."""
    video = await service.create(
        CreateVideoRequest(prompt="A bell rings.", num_scenes=1, seconds=1), None, None, music=wav_bytes(1)
    )
    # In process, the job's task has not run yet: its stitch will read this.
    JobFiles(service.config.storage.root, video.id).music.write_bytes(wav_bytes(0))
    return video.id


def music_of(job_id: str) -> str:
    """What only the command line of the job's audio mix holds: the path of its music bed."""
    return f"{job_id}/music.audio"


async def completes(service: VideoService) -> str:
    """The status of a plain job made after, on the same runner (one slot)."""
    video = await service.create(CreateVideoRequest(prompt="After.", num_scenes=1, seconds=1), None, None)
    await runners(service).finished(video.id)
    return service.store.get(video.id).status


@pytest.mark.parametrize("stop", ["cancel", "delete"])
def test_a_cancel_or_delete_kills_the_stitch_ffmpeg_at_once(local_config: AppConfig, stop: str):
    local_config.jobs.max_concurrent_jobs = 1

    async def scenario() -> tuple[float, JobRow | None, str]:
        service = service_with(local_config)
        job_id = await create_hanging(service)
        await asyncio.to_thread(wait_for_process, music_of(job_id), 60)  # the stitch's mix has begun
        await (service.cancel(job_id) if stop == "cancel" else service.delete(job_id))
        gone_in = await asyncio.to_thread(seconds_until_gone, job_id, 5)
        return gone_in, service.store.get(job_id), await completes(service)

    gone_in, job, next_status = asyncio.run(scenario())
    assert gone_in < 2
    if stop == "cancel":  # a cancel, not a failure of ffmpeg
        assert job is not None and (job.status, job.error_code) == ("cancelled", None)
    else:
        assert job is None
    assert next_status == "completed"


@pytest.mark.slow
def test_a_stitch_past_its_time_limit_fails_the_job_with_media_error(local_config: AppConfig):
    local_config.jobs.max_concurrent_jobs = 1
    # Room for the scene's encode of four 64x64 frames on a busy machine; a loop for ever has none.
    local_config.video_processing.ffmpeg_timeout_base_s = 3
    local_config.video_processing.ffmpeg_timeout_per_media_s = 1

    async def scenario() -> tuple[str, str | None, list[int], str]:
        service = service_with(local_config)
        job_id = await create_hanging(service)
        await runners(service).finished(job_id)
        job = service.store.get(job_id)
        return job.status, job.error_code, pids_running(job_id), await completes(service)

    status, code, left, next_status = asyncio.run(scenario())
    assert (status, code) == ("failed", "media_error")
    assert left == []
    assert next_status == "completed"
