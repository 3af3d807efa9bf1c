"""What jobs promise under races and failures, in-process: every end expires, writes after a DELETE leave
nothing, a cancel during the stitch stands, poison jobs stop, errors show no server paths, the JobBoard
keeps only cancel flags. In-process stages do the work; fakes implement a stage protocol only where a race
needs a call held back."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from core.errors import JobGone, MediaError, ModelUnavailable, NotFound
from core.files import JobFiles
from deployments.board import CANCEL_KEPT_S, JobBoard
from engines.stages.protocols import Animated, StepDone
from serve_app.api import ingress
from serve_app.jobs.progress import WRITE_INTERVAL_S
from serve_app.jobs.recipe import VideoRecipe
from serve_app.jobs.runner import ORPHAN_GRACE_S
from serve_app.jobs.stages import local_stages
from serve_app.protocol import CreateVideoRequest
from serve_app.store.jobs import JobStore, now
from serve_app.videos.service import VideoService
from tests.fixtures.jobs import InProcessRunners, Spy, job_row, runners, service_with, stages_with

pytestmark = pytest.mark.integration


class EncoderAround:
    """An encoder (the protocol) that hands both calls to the in-process one, through hooks a test sets."""

    def __init__(self, config, encode=None, stitch=None) -> None:
        self.inner = local_stages(config)
        self._encode, self._stitch = encode, stitch

    async def encode_scene(self, request, animated):
        if self._encode is not None:
            return await self._encode(self.inner, request, animated)
        return await self.inner.encode_scene(request, animated)

    async def stitch(self, request):
        if self._stitch is not None:
            return await self._stitch(self.inner, request)
        return await self.inner.stitch(request)


async def create(service: VideoService, **body) -> str:
    video = await service.create(CreateVideoRequest(prompt="Dawn. Noon.", **body), None, None)
    return video.id


# -- expiry ---------------------------------------------------------------------------------------------


class BrokenWriter:
    async def write(self, request):
        raise RuntimeError("the writer broke")


def test_failed_and_cancelled_jobs_expire_like_completed_ones(local_config):
    async def scenario():
        service = service_with(local_config, writer=BrokenWriter())
        failed = await create(service)
        await runners(service).finished(failed)
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
        runners(local_service).worker.sweep()

    asyncio.run(sweep())
    assert store.get(ids["failed"]) is None and store.get(ids["legacy"]) is None
    assert store.get(ids["kept"]) is not None
    remaining = sorted(path.name for path in (root / "jobs").iterdir())
    # A folder without a row goes once it is older than the grace a create needs to write its row.
    assert remaining == sorted([ids["kept"], fresh_orphan.name])


# -- races ----------------------------------------------------------------------------------------------


def test_a_cancel_that_lands_during_the_stitch_stands(local_config):
    stitching, release = asyncio.Event(), asyncio.Event()

    async def slow_stitch(inner, request):
        stitching.set()
        await release.wait()
        return await inner.stitch(request)

    async def scenario():
        service = service_with(local_config, encoder=EncoderAround(local_config, stitch=slow_stitch))
        job_id = await create(service, num_scenes=2, seconds=2)
        await stitching.wait()
        # An ingress replica cancels: its write lands while the runner stitches (before it looks again).
        assert service.store.finish(job_id, "cancelled", local_config.jobs.retention_seconds)
        release.set()
        await runners(service).finished(job_id)
        return service.store.get(job_id)

    job = asyncio.run(scenario())
    assert job.status == "cancelled" and job.progress < 100
    assert [scene.status for scene in job.scenes] == ["completed", "completed"]


def test_a_cancel_after_completion_is_a_409_not_a_second_end(local_service):
    async def scenario():
        job_id = await create(local_service, num_scenes=1, seconds=1)
        await runners(local_service).finished(job_id)
        with pytest.raises(Exception) as raised:
            await local_service.cancel(job_id)
        return raised.value, local_service.store.get(job_id)

    error, job = asyncio.run(scenario())
    assert getattr(error, "status", None) == 409 and job.status == "completed"


def test_a_scene_encoded_after_its_job_was_deleted_leaves_no_files(local_config):
    encoding, release = asyncio.Event(), asyncio.Event()
    late: list[asyncio.Task] = []

    async def remote_encode(inner, request, animated):
        # Like a replica: the call goes on after the runner that made it was cancelled.
        async def encode():
            encoding.set()
            await release.wait()
            return await inner.encode_scene(request, animated)

        late.append(asyncio.ensure_future(encode()))
        return await asyncio.shield(late[-1])

    async def scenario():
        service = service_with(local_config, encoder=EncoderAround(local_config, encode=remote_encode))
        job_id = await create(service, num_scenes=1, seconds=1)
        await encoding.wait()
        await service.delete(job_id)
        release.set()
        outcome = (await asyncio.gather(*late, return_exceptions=True))[0]
        return job_id, outcome

    job_id, outcome = asyncio.run(scenario())
    assert isinstance(outcome, JobGone)
    assert not JobFiles(local_config.storage.root, job_id).folder.exists()


class DeletedAt:
    """The job store, with a DELETE of the job (its row, then its folder, as ``VideoService.delete`` does)
    landing at one exact point of the runner's work: just before its first call of ``method``, or just
    after it returns."""

    def __init__(self, store, storage, method: str, after: bool = False) -> None:
        self.store, self.storage, self.method, self.after = store, storage, method, after
        self.done = False

    def __getattr__(self, name: str):
        call = getattr(self.store, name)
        if name != self.method or self.done:
            return call

        def racing(job_id, *args, **kwargs):
            self.done = True
            if not self.after:
                self.delete(job_id)
            result = call(job_id, *args, **kwargs)
            if self.after:
                self.delete(job_id)
            return result

        return racing

    def delete(self, job_id: str) -> None:
        self.store.delete(job_id)
        JobFiles(self.storage, job_id).remove()


class DeletingWriter:
    """A writer that deletes its job while it writes the script (then the script is stored for no row)."""

    def __init__(self, config, store, job_id: str) -> None:
        self.inner, self.job_id = local_stages(config), job_id
        self.deleting = DeletedAt(store, config.storage.open(), "")

    async def write(self, request):
        script = await self.inner.write(request)
        self.deleting.delete(self.job_id)
        return script


@pytest.mark.parametrize(
    "where",
    ["after reading the row", "before the first write", "while the script is written"],
)
def test_a_delete_racing_the_runners_first_writes_leaves_no_folder_and_no_error(local_config, caplog, where):
    store = JobStore(local_config.storage.database_url)
    storage = local_config.storage.open()
    job_id = "video_" + "d" * 32
    store.create(job_row(job_id, "queued"))
    JobFiles(storage, job_id).write_reference(b"\x89PNG not read here")  # what a create writes first
    writer = DeletingWriter(local_config, store, job_id)
    raced, stages = {
        "after reading the row": (DeletedAt(store, storage, "get", after=True), stages_with(local_config)),
        "before the first write": (DeletedAt(store, storage, "advance"), stages_with(local_config)),
        "while the script is written": (store, stages_with(local_config, writer=writer)),
    }[where]
    recipe = VideoRecipe(local_config, raced, stages)
    serve_log = logging.getLogger("ray.serve")  # Ray's logger does not propagate to caplog's root handler
    serve_log.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="ray.serve"):
            asyncio.run(recipe(job_id))
    finally:
        serve_log.removeHandler(caplog.handler)
        store.close()

    assert not JobFiles(storage, job_id).folder.exists()  # nothing for the sweep to find 10 minutes later
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING] == []
    assert any("deleted" in record.getMessage() for record in caplog.records)


def test_a_download_racing_a_delete_gets_the_whole_file_or_a_404(local_service):
    async def scenario():
        job_id = await create(local_service, num_scenes=1, seconds=1)
        await runners(local_service).finished(job_id)
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


def test_a_job_whose_runner_died_max_attempts_times_fails_instead_of_running_again(local_config):
    writer = Spy(local_stages(local_config))
    service = service_with(local_config, writer=writer)
    job_id = "video_" + "f" * 32
    attempts = local_config.jobs.max_attempts
    service.store.create(job_row(job_id, "in_progress", attempts=attempts, runner_id="dead", lease_until=1.0))
    assert asyncio.run(runners(service).worker.run(job_id))
    job = service.store.get(job_id)
    assert job.status == "failed" and job.error_code == "too_many_attempts"
    assert f"jobs.max_attempts={attempts}" in job.error_message and job.expires_at is not None
    assert writer.calls["write"] == 0


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
    async def broken_stitch(inner, request):
        raise error

    async def scenario():
        service = service_with(local_config, encoder=EncoderAround(local_config, stitch=broken_stitch))
        job_id = await create(service, num_scenes=1, seconds=1)
        await runners(service).finished(job_id)
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


class AnimatorAround:
    """An animator (the protocol) that passes on the in-process one's events through ``change``."""

    def __init__(self, config, change) -> None:
        self.inner = local_stages(config)
        self.change = change

    async def animate(self, request, keyframe):
        async for event in self.inner.animate(request, keyframe):
            yield await self.change(event)


def test_fallback_reasons_carry_no_server_paths(local_config):
    async def without_weights(event):
        if isinstance(event, Animated):
            return dataclasses.replace(event, fallback_reason="weights missing at /home/ops/.cache/svd/unet")
        return event

    async def scenario():
        service = service_with(local_config, animator=AnimatorAround(local_config, without_weights))
        job_id = await create(service, num_scenes=1, seconds=1)
        await runners(service).finished(job_id)
        return service.store.get(job_id)

    job = asyncio.run(scenario())
    assert job.scenes[0].fallback_reason == "weights missing at <path>"


def test_step_progress_reaches_the_scene_from_the_animators_own_events(local_config):
    seen: list[int] = []
    service: list[VideoService] = []

    class Halfway:
        """The in-process animator, with a report of step 1 of 2 before its frames (title cards have none)."""

        def __init__(self) -> None:
            self.inner = local_stages(local_config)

        async def animate(self, request, keyframe):
            async for event in self.inner.animate(request, keyframe):
                if isinstance(event, Animated):
                    yield StepDone(1, 2)
                    # The recipe has taken the step before it asks for the next event, and writes it
                    # within one write interval (steps are coalesced).
                    await asyncio.sleep(WRITE_INTERVAL_S + 0.05)
                    seen.append(service[0].store.get(request.job_id).scenes[0].progress)
                yield event

    async def scenario():
        service.append(service_with(local_config, animator=Halfway()))
        job_id = await create(service[0], num_scenes=1, seconds=1)
        await runners(service[0]).finished(job_id)
        return service[0].store.get(job_id)

    job = asyncio.run(scenario())
    # Half the steps: halfway through the animating stage (25 to 85), as the animator said, not a board.
    assert seen == [55] and job.status == "completed"


class CountingStore(JobStore):
    """A job store that counts the calls made to it (each a round trip to the database)."""

    calls = 0

    def __getattribute__(self, name: str):
        attribute = super().__getattribute__(name)
        if name.startswith("_") or not callable(attribute):
            return attribute

        def counted(*args, **kwargs):
            type(self).calls += 1
            return attribute(*args, **kwargs)

        return counted


def test_a_denoising_step_costs_at_most_one_store_round_trip(local_config):
    calls_per_step: list[int] = []

    class ManySteps:
        """The in-process animator, with twenty steps reported before its frames (title cards have none)."""

        def __init__(self) -> None:
            self.inner = local_stages(local_config)

        async def animate(self, request, keyframe):
            async for event in self.inner.animate(request, keyframe):
                if isinstance(event, Animated):
                    for step in range(1, 21):
                        before = CountingStore.calls
                        yield StepDone(step, 20)  # the recipe has taken it when it asks for the next event
                        calls_per_step.append(CountingStore.calls - before)
                yield event

    async def scenario():
        store = CountingStore(local_config.storage.database_url)
        workers = InProcessRunners(local_config, store, stages_with(local_config, animator=ManySteps()))
        service = VideoService(local_config, store, workers)
        job_id = await create(service, num_scenes=1, seconds=1)
        await runners(service).finished(job_id)
        return service.store.get(job_id)

    job = asyncio.run(scenario())
    assert job.status == "completed" and job.progress == 100
    # At most one write per step, and the twenty steps, reported at once, share the writes of one interval.
    assert len(calls_per_step) == 20 and max(calls_per_step) <= 1
    assert sum(calls_per_step) <= 2


# -- the JobBoard -------------------------------------------------------------------------------------------


def test_the_board_keeps_cancel_flags_only_and_drops_them_after_a_while():
    clock = [0.0]
    board = JobBoard.func_or_class(clock=lambda: clock[0])

    async def scenario():
        await board.cancel("video_c")
        kept = await board.cancelled(["video_c"])
        clock[0] = CANCEL_KEPT_S + 1
        await board.cancel("video_d")  # each cancel drops the flags older than CANCEL_KEPT_S
        return kept, await board.size(), await board.cancelled(["video_c", "video_d"])

    kept, size, cancelled = asyncio.run(scenario())
    assert kept == ["video_c"] and cancelled == ["video_d"]
    assert size == {"cancelled": 1}
    assert not hasattr(board, "report") and not hasattr(board, "progress")


# -- ids ------------------------------------------------------------------------------------------------------


def test_ids_with_a_trailing_newline_are_not_ids(local_service):
    job_id = asyncio.run(create(local_service, num_scenes=1, seconds=1))
    with pytest.raises(ValueError):
        JobFiles("storage", job_id + "\n")
    with pytest.raises(NotFound):
        local_service.retrieve(job_id + "\n")
