"""Job runner guarantees, checked in-process: one runner per job, take-over after a dead runner, the
queue bound, expiry. The recipe runs over in-process stages (real engines and encoding); only Ray is left out."""

from __future__ import annotations

import asyncio
import io
import struct
import threading
import time
import zlib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from engines.media import VideoProcessor
from serve_app.api import ingress
from serve_app.jobs.recipe import VideoRecipe
from serve_app.jobs.runner import JobWorker
from serve_app.protocol import CreateVideoRequest
from serve_app.store.jobs import JobStore, now
from serve_app.videos.service import VideoService
from tests.fixtures.jobs import Spy, job_row, runners, service_with, stages_with

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def local_config(request, local_config):
    """The runner's guarantees on both job stores: the SQLite file, and a PostgreSQL database."""
    if request.param == "postgresql":
        local_config.storage.database = request.getfixturevalue("postgres_url")
    return local_config


async def create(service: VideoService, **body) -> str:
    video = await service.create(CreateVideoRequest(prompt="Dawn. Noon. Dusk.", **body), None, None)
    return video.id


def worker_of(config, store: JobStore) -> tuple[JobWorker, Spy]:
    """A runner of its own over in-process stages, and a spy on its animator."""
    animator = Spy(stages_with(config).animator)
    worker = JobWorker(config, store, VideoRecipe(config, store, stages_with(config, animator=animator)))
    return worker, animator


class Idle:
    """RunnerSignals that start nothing: the test drives the runners itself."""

    async def job_stored(self, job_id: str) -> None:
        pass

    async def job_stopped(self, job_id: str) -> None:
        pass


def test_two_runners_racing_for_one_job_one_wins(local_config, tmp_path):
    # Two runners, as in two JobRunner replicas: separate stores on one database, each runner on an event
    # loop of its own in a thread of its own, released together, so their claims meet in the database.
    workers = [worker_of(local_config, JobStore(local_config.storage.database_url)) for _ in range(2)]
    store = workers[0][0].store
    job_id = asyncio.run(create(VideoService(local_config, store, Idle()), num_scenes=3, seconds=3))
    barrier = threading.Barrier(len(workers))
    won: dict[int, bool | BaseException] = {}

    def race(index: int) -> None:
        barrier.wait()
        try:
            won[index] = asyncio.run(workers[index][0].run(job_id))
        except BaseException as exc:  # noqa: BLE001 - shown in the assertion below
            won[index] = exc

    threads = [threading.Thread(target=race, args=(index,)) for index in range(len(workers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(won.values(), key=repr) == [False, True], won
    assert sum(animator.calls["animate"] for _, animator in workers) == 3  # each scene made once
    assert store.get(job_id).status == "completed"


@pytest.mark.slow
def test_a_dead_runners_job_is_taken_up_after_its_lease_keeping_finished_scenes(local_config):
    async def scenario():
        service = service_with(local_config)
        store = service.store
        job_id = await create(service, num_scenes=3, seconds=3)
        await runners(service).finished(
            job_id
        )  # let it finish once, then pretend scene 2 was lost in a crash
        store.update(job_id, status="in_progress", runner_id="runner-dead", lease_until=time.time() + 1)
        store.update_scene(job_id, 2, status="animating", progress=40)

        second, animator = worker_of(local_config, store)
        assert not await second.run(job_id)  # the dead runner's lease still holds
        await asyncio.sleep(1.1)
        assert await second.run(job_id)
        return store.get(job_id), animator

    job, animator = asyncio.run(scenario())
    assert job.status == "completed" and job.attempts == 2
    assert [scene.attempts for scene in job.scenes] == [1, 1, 2]  # only the lost scene ran again
    assert animator.calls["animate"] == 1


def test_ending_a_job_ends_its_unfinished_scenes_and_keeps_finished_ones(local_service):
    async def scenario():
        job_id = await create(local_service, num_scenes=3, seconds=3)
        await runners(local_service).finished(job_id)
        local_service.store.update(job_id, status="in_progress")  # as if its stitch had not happened
        local_service.store.update_scene(job_id, 1, status="animating")
        local_service.store.update_scene(job_id, 2, status="queued")
        ended = local_service.store.finish(job_id, "failed", 60)
        return ended, local_service.store.get(job_id)

    ended, job = asyncio.run(scenario())
    assert ended and job.status == "failed"
    assert [scene.status for scene in job.scenes] == ["completed", "failed", "failed"]


def test_a_poll_takes_up_unfinished_jobs_and_deletes_expired_ones(local_service):
    async def scenario():
        service = local_service
        store = service.store
        store.create(job_row("video_" + "1" * 32, status="in_progress"))  # left by a dead process
        store.create(job_row("video_" + "2" * 32, status="completed", expires_at=now() - 1))
        folder = Path(service.config.storage.root) / "jobs" / ("video_" + "2" * 32)
        folder.mkdir(parents=True)
        worker = runners(service).worker
        started = worker.poll()
        await asyncio.gather(*worker.tasks.values())
        return started, store, folder

    started, store, folder = asyncio.run(scenario())
    assert started == ["video_" + "1" * 32]
    assert store.get("video_" + "1" * 32).status == "completed"
    assert store.get("video_" + "2" * 32) is None and not folder.exists()


def test_a_full_queue_answers_429_with_retry_after(local_service):
    local_service.config.limits.max_queued_jobs = 1
    waiting = job_row("video_" + "3" * 32, status="queued")
    # Held by a live runner elsewhere, so this service's runner does not start it and empty the queue.
    waiting.runner_id, waiting.lease_until = "runner-elsewhere", time.time() + 60
    local_service.store.create(waiting)
    ingress.install(local_service)
    with TestClient(ingress.app) as client:
        response = client.post("/v1/videos", json={"prompt": "one more"})
    assert response.status_code == 429
    assert response.headers["retry-after"] == "30"
    assert response.json()["error"]["type"] == "rate_limit_error"


@pytest.mark.slow
def test_concurrent_creates_at_the_last_place_of_the_queue_take_it_once_and_leave_no_files(local_config):
    # Each create decodes and writes its reference image between the early count and the insert: where the
    # insert did not count again, all forty took the last place.
    import httpx

    cap, creates = 8, 40
    local_config.limits.max_queued_jobs = cap
    service = VideoService(local_config, JobStore(local_config.storage.database_url), Idle())
    for number in range(cap - 1):
        service.store.create(job_row(f"video_{number:032x}", "queued"))
    reference = io.BytesIO()
    Image.new("RGB", (64, 48), (30, 90, 200)).save(reference, format="PNG")
    ingress.install(service)

    async def scenario() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=ingress.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://storyreel") as client:
            return await asyncio.gather(
                *(
                    client.post(
                        "/v1/videos",
                        data={"prompt": f"Race {number}."},
                        files={"input_reference": ("ref.png", reference.getvalue(), "image/png")},
                    )
                    for number in range(creates)
                )
            )

    try:
        responses = asyncio.run(scenario())
        counts = service.store.counts()
    finally:
        service.store.close()
    made = [response for response in responses if response.status_code == 200]
    refused = [response for response in responses if response.status_code != 200]
    assert len(made) == 1 and counts == {"queued": cap}
    for response in refused:
        assert response.status_code == 429, response.text
        assert response.json()["error"]["code"] == "queue_full" and response.headers["retry-after"] == "30"
    # A refused create removed the folder it had written its reference image into.
    folders = sorted(path.name for path in (Path(local_config.storage.root) / "jobs").iterdir())
    assert folders == [made[0].json()["id"]]


def test_interpolated_scene_clips_through_the_runner(local_config):
    local_config.video_processing.interpolation_factor = 2

    async def scenario():
        service = service_with(local_config)
        job_id = await create(service, num_scenes=2, seconds=2)
        await runners(service).finished(job_id)
        return service.store.get(job_id)

    job = asyncio.run(scenario())
    assert job.status == "completed", job.error_message
    for scene in job.scenes:
        info = VideoProcessor.probe(scene.clip_path)
        # A 1 s scene plus its 0.25 s share of the fade is 5 frames at 4 fps: (5 - 1) * 2 + 1 at 8 fps,
        # and the last held once more so the clip lasts those 5 frames' 1.25 s.
        assert (info.fps, info.frames) == (8.0, 10)


@pytest.mark.parametrize("mode", ["CMYK", "P", "LA", "I;16"])
def test_uploads_in_any_image_mode_are_accepted(local_service, mode):
    upload = io.BytesIO()
    image = Image.new("RGB", (40, 30), (10, 200, 90)).convert(mode)
    image.save(upload, format="JPEG" if mode == "CMYK" else "PNG")
    ingress.install(local_service)
    with TestClient(ingress.app) as client:
        response = client.post(
            "/v1/videos",
            data={"prompt": "from an upload"},
            files={"input_reference": ("ref", upload.getvalue())},
        )
        assert response.status_code == 200, response.text
    stored = Image.open(
        Path(local_service.config.storage.root) / "jobs" / response.json()["id"] / "input_reference.png"
    )
    assert stored.mode == "RGB" and stored.size == (40, 30)


def test_an_oversized_image_is_refused_before_it_is_decoded(local_service):
    # A PNG header that claims 20000 x 20000 pixels, with no pixel data: size alone decides.
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")
    ingress.install(local_service)
    with TestClient(ingress.app) as client:
        response = client.post("/v1/videos", data={"prompt": "x"}, files={"input_reference": ("a.png", bomb)})
    assert response.status_code == 400
    assert "megapixels" in response.json()["error"]["message"]
    assert local_service.store.page(None, 10, "desc")[0] == []


def test_a_retry_with_its_idempotency_key_gets_its_job_even_when_the_queue_is_full(local_service):
    ingress.install(local_service)
    headers = {"Idempotency-Key": "retry-me"}
    with TestClient(ingress.app) as client:
        first = client.post("/v1/videos", json={"prompt": "once"}, headers=headers)
        local_service.config.limits.max_queued_jobs = 0  # now every new job is refused
        retry = client.post("/v1/videos", json={"prompt": "once"}, headers=headers)
        fresh = client.post("/v1/videos", json={"prompt": "another"})
    assert first.status_code == 200 and retry.status_code == 200
    assert retry.json()["id"] == first.json()["id"]
    assert fresh.status_code == 429
