"""What jobs promise under races and failures, in-process: every end expires, writes after a DELETE leave
nothing, a cancel during the stitch stands, poison jobs stop, errors show no server paths, the JobBoard
forgets. The deployments' real classes do the work; fakes only hold a call back where a race needs it."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from core.errors import MediaError, ModelUnavailable
from core.files import JobFiles
from deployments.board import CANCEL_KEPT_S, JobBoard
from deployments.encoder import Encoder, JobFolderGone
from serve_app import ingress
from serve_app.errors import NotFound
from serve_app.jobs import JobRunner
from serve_app.protocol import CreateVideoRequest
from serve_app.serving import ORPHAN_GRACE_S, VideoService
from serve_app.store import JobStore, now
from tests.fixtures.jobs import Fake, job_row, local_handles

pytestmark = pytest.mark.integration


def service_with(config, **replaced) -> VideoService:
    """A service over the real local handles, with some handle methods replaced (name -> Fake)."""
    handles = dataclasses.replace(local_handles(config), **replaced)
    store = JobStore(config.storage.database_path)
    return VideoService(config, store, JobRunner(config, store, handles))


async def create(service: VideoService, **body) -> str:
    video = await service.create(CreateVideoRequest(prompt="Dawn. Noon.", **body), None, None)
    return video.id


# -- expiry ---------------------------------------------------------------------------------------------


def test_failed_and_cancelled_jobs_expire_like_completed_ones(local_config):
    async def failing_write(*args):
        raise RuntimeError("the writer broke")

    async def scenario():
        service = service_with(local_config, writer=Fake(write=failing_write))
        failed = await create(service)
        await service._tasks[failed]
        cancelled = await create(service, num_scenes=2, seconds=2)
        await service.cancel(cancelled)
        return service.store.get(failed), service.store.get(cancelled)

    failed, cancelled = asyncio.run(scenario())
    retention = local_config.jobs.retention_seconds
    assert failed.status == "failed" and failed.expires_at == failed.completed_at + retention
    assert cancelled.status == "cancelled" and cancelled.expires_at == cancelled.completed_at + retention


def test_the_sweep_removes_expired_ends_of_every_kind_and_folders_without_a_row(local_service):
    store, root = local_service.store, Path(local_service.config.storage.root)
    long_ago = now() - local_service.config.jobs.retention_seconds - 10
    ids = {name: f"video_{digit * 32}" for name, digit in (("failed", "a"), ("legacy", "b"), ("kept", "c"))}
    store.create(job_row(ids["failed"], "failed", completed_at=long_ago, expires_at=now() - 1))
    store.create(
        job_row(ids["legacy"], "cancelled", completed_at=long_ago)
    )  # no expires_at: an older version
    store.create(job_row(ids["kept"], "failed", completed_at=now(), expires_at=now() + 3600))
    orphan, fresh_orphan = (JobFiles(root, f"video_{d * 32}").folder for d in "de")
    for folder in (orphan, fresh_orphan, *(JobFiles(root, i).folder for i in ids.values())):
        folder.mkdir(parents=True)
        (folder / "scene_000.mp4").write_bytes(b"clip")
    old = time.time() - ORPHAN_GRACE_S - 1
    os.utime(orphan, (old, old))

    async def sweep():
        local_service.sweep()

    asyncio.run(sweep())
    assert store.get(ids["failed"]) is None and store.get(ids["legacy"]) is None
    assert store.get(ids["kept"]) is not None
    remaining = sorted(path.name for path in (root / "jobs").iterdir())
    # A folder without a row goes once it is older than the grace a create needs to write its row.
    assert remaining == sorted([ids["kept"], fresh_orphan.name])


# -- races ----------------------------------------------------------------------------------------------


def test_a_cancel_that_lands_during_the_stitch_stands(local_config):
    encoder = Encoder.func_or_class(local_config.video_processing, local_config.storage.root)
    stitching, release = asyncio.Event(), asyncio.Event()

    async def slow_finish(*args):
        stitching.set()
        await release.wait()
        return await encoder.finish(*args)

    async def scenario():
        service = service_with(
            local_config, encoder=Fake(encode_scene=encoder.encode_scene, finish=slow_finish)
        )
        job_id = await create(service, num_scenes=2, seconds=2)
        await stitching.wait()
        # Another ingress replica cancels: its write lands while this runner stitches.
        assert service.store.finish(job_id, "cancelled", local_config.jobs.retention_seconds)
        release.set()
        await service._tasks[job_id]
        return service.store.get(job_id)

    job = asyncio.run(scenario())
    assert job.status == "cancelled" and job.progress < 100
    assert [scene.status for scene in job.scenes] == ["completed", "completed"]


def test_a_cancel_after_completion_is_a_409_not_a_second_end(local_service):
    async def scenario():
        job_id = await create(local_service, num_scenes=1, seconds=1)
        await local_service._tasks[job_id]
        with pytest.raises(Exception) as raised:
            await local_service.cancel(job_id)
        return raised.value, local_service.store.get(job_id)

    error, job = asyncio.run(scenario())
    assert getattr(error, "status", None) == 409 and job.status == "completed"


def test_a_scene_encoded_after_its_job_was_deleted_leaves_no_files(local_config):
    encoder = Encoder.func_or_class(local_config.video_processing, local_config.storage.root)
    encoding, release = asyncio.Event(), asyncio.Event()
    late: list[asyncio.Task] = []

    async def remote_encode(*args):
        # Like a replica: the call goes on after the runner that made it was cancelled.
        async def encode():
            encoding.set()
            await release.wait()
            return await encoder.encode_scene(*args)

        late.append(asyncio.ensure_future(encode()))
        return await asyncio.shield(late[-1])

    async def scenario():
        service = service_with(local_config, encoder=Fake(encode_scene=remote_encode, finish=encoder.finish))
        job_id = await create(service, num_scenes=1, seconds=1)
        await encoding.wait()
        await service.delete(job_id)
        release.set()
        outcome = (await asyncio.gather(*late, return_exceptions=True))[0]
        return job_id, outcome

    job_id, outcome = asyncio.run(scenario())
    assert isinstance(outcome, JobFolderGone)
    assert not JobFiles(local_config.storage.root, job_id).folder.exists()


def test_a_download_racing_a_delete_gets_the_whole_file_or_a_404(local_service):
    async def scenario():
        job_id = await create(local_service, num_scenes=1, seconds=1)
        await local_service._tasks[job_id]
        content = local_service.content(job_id, "video")  # the route has opened the file
        await local_service.delete(job_id)
        return job_id, content

    job_id, content = asyncio.run(scenario())
    size = os.fstat(content.file.fileno()).st_size
    with content.file as file:
        data = file.read()
    assert size > 0 and len(data) == size and data[4:8] == b"ftyp"  # the whole MP4, after the DELETE
    with pytest.raises(NotFound):
        local_service.content(job_id, "video")


def test_a_file_gone_from_under_a_finished_video_is_a_404_over_http(local_service):
    ingress.install(local_service)
    with TestClient(ingress.app) as client:
        video = client.post("/v1/videos", json={"prompt": "Dawn.", "num_scenes": 1, "seconds": 1}).json()
        deadline = time.monotonic() + 60
        while client.get(f"/v1/videos/{video['id']}").json()["status"] != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        ranged = client.get(f"/v1/videos/{video['id']}/content", headers={"range": "bytes=0-99"})
        assert ranged.status_code == 206 and len(ranged.content) == 100  # ranges still work
        JobFiles(local_service.config.storage.root, video["id"]).variant("video").unlink()
        response = client.get(f"/v1/videos/{video['id']}/content")
        assert response.status_code == 404 and response.json()["error"]["param"] == "variant"


# -- poison jobs ------------------------------------------------------------------------------------------


def test_a_job_whose_runner_died_max_attempts_times_fails_instead_of_running_again(local_service):
    job_id = "video_" + "f" * 32
    attempts = local_service.config.jobs.max_attempts
    local_service.store.create(
        job_row(job_id, "in_progress", attempts=attempts, runner_id="dead", lease_until=1.0)
    )
    assert asyncio.run(local_service.runner.run(job_id))
    job = local_service.store.get(job_id)
    assert job.status == "failed" and job.error_code == "too_many_attempts"
    assert f"jobs.max_attempts={attempts}" in job.error_message and job.expires_at is not None
    assert local_service.runner.handles.writer.write.calls == 0


# -- what errors say ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code", "hidden"),
    [
        (
            MediaError("ffmpeg exited with status 1", "ffmpeg -i /srv/storage/jobs/x/scene_000.mp4 -y out"),
            "media_error",
            ["/srv/storage", "ffmpeg -i"],
        ),
        (ModelUnavailable("no weights at /opt/models/svd-xt/unet"), "model_unavailable", ["/opt/models"]),
    ],
    ids=["ffmpeg", "model"],
)
def test_job_errors_carry_no_server_paths_or_command_lines(local_config, caplog, error, code, hidden):
    async def broken_finish(*args):
        raise error

    encoder = Encoder.func_or_class(local_config.video_processing, local_config.storage.root)

    async def scenario():
        service = service_with(
            local_config, encoder=Fake(encode_scene=encoder.encode_scene, finish=broken_finish)
        )
        job_id = await create(service, num_scenes=1, seconds=1)
        await service._tasks[job_id]
        return service.store.get(job_id)

    serve_log = logging.getLogger("ray.serve")  # Ray's logger does not propagate to caplog's root handler
    serve_log.addHandler(caplog.handler)
    try:
        job = asyncio.run(scenario())
    finally:
        serve_log.removeHandler(caplog.handler)
    assert job.status == "failed" and job.error_code == code
    assert not any(text in job.error_message for text in hidden), job.error_message
    assert all(text in caplog.text for text in hidden) and job.id in caplog.text  # the log keeps it all


def test_fallback_reasons_carry_no_server_paths(local_config):
    handles = local_handles(local_config)
    animate = handles.svd.animate.function

    async def animate_without_weights(*args):
        result = await animate(*args)
        return dataclasses.replace(result, fallback_reason="weights missing at /home/ops/.cache/svd/unet")

    async def scenario():
        service = service_with(local_config, svd=Fake(animate=animate_without_weights))
        job_id = await create(service, num_scenes=1, seconds=1)
        await service._tasks[job_id]
        return service.store.get(job_id)

    job = asyncio.run(scenario())
    assert job.scenes[0].fallback_reason == "weights missing at <path>"


# -- the JobBoard -------------------------------------------------------------------------------------------


def test_the_board_forgets_progress_when_a_job_ends_and_cancel_flags_after_a_while():
    clock = [0.0]
    board = JobBoard.func_or_class(clock=lambda: clock[0])

    async def scenario():
        await board.report(["video_a:0", "video_a:1", "video_b:0"], 3, 10)
        await board.forget("video_a")
        await board.cancel("video_c")
        kept = await board.cancelled(["video_c"])
        clock[0] = CANCEL_KEPT_S + 1
        await board.cancel("video_d")  # each cancel drops the flags older than CANCEL_KEPT_S
        return kept, await board.size(), await board.cancelled(["video_c", "video_d"])

    kept, size, cancelled = asyncio.run(scenario())
    assert kept == ["video_c"] and cancelled == ["video_d"]
    assert size == {"cancelled": 1, "progress": 1}  # only video_b's scene, which has not ended


def test_the_runner_tells_the_board_when_it_stops(local_config):
    board = JobBoard.func_or_class()
    fake = Fake(forget=board.forget, progress=board.progress, cancel=board.cancel, report=board.report)

    async def scenario():
        await board.report(["video_" + "1" * 32 + ":0"], 1, 4)  # a stale entry of a job run before
        service = service_with(local_config, board=fake)
        job_id = await create(service, num_scenes=2, seconds=2)
        await board.report([f"{job_id}:0", f"{job_id}:1"], 2, 4)
        await service._tasks[job_id]
        return job_id, await board.size()

    job_id, size = asyncio.run(scenario())
    assert fake.forget.calls == 1
    assert size == {"cancelled": 0, "progress": 1}


# -- ids ------------------------------------------------------------------------------------------------------


def test_ids_with_a_trailing_newline_are_not_ids(local_service):
    job_id = asyncio.run(create(local_service, num_scenes=1, seconds=1))
    with pytest.raises(ValueError):
        JobFiles("storage", job_id + "\n")
    with pytest.raises(NotFound):
        local_service.retrieve(job_id + "\n")
