"""Remix, edit and extend; the queue position; webhooks. In process, over the real engines (title cards),
real encoding and a real local HTTP receiver; the HTTP routes through FastAPI's test client."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time

import pytest
from fastapi.testclient import TestClient

from core.errors import BadRequest, Conflict, NotFound, Overloaded
from core.files import JobFiles
from engines.media import VideoProcessor
from serve_app.api import ingress
from serve_app.config import AppConfig
from serve_app.jobs.recipe import VideoRecipe
from serve_app.jobs.runner import JobWorker
from serve_app.protocol import CreateVideoRequest, ExtendRequest, RemixRequest, SceneSpec, VideoReference
from serve_app.store.jobs import JobStore
from serve_app.videos.service import VideoService
from tests.fixtures.jobs import Spy, runners, service_with, stages_with
from tests.fixtures.webhooks import Receiver, verify

pytestmark = pytest.mark.integration

SCENES = [
    SceneSpec(caption="A fox wakes under the snow.", duration_s=1.5),
    SceneSpec(caption="It crosses the frozen river.", duration_s=1.5),
    SceneSpec(caption="The sun comes up behind it.", duration_s=1.5),
]


async def made(service: VideoService, video_id: str) -> dict:
    await runners(service).finished(video_id)
    return service.retrieve(video_id).model_dump()


def spied(config: AppConfig) -> tuple[VideoService, Spy]:
    animator = Spy(stages_with(config).animator)
    return service_with(config, animator=animator), animator


def length(config: AppConfig, video_id: str) -> float:
    return VideoProcessor.probe(JobFiles(config.storage.root, video_id).variant("video")).duration


@pytest.mark.parametrize(
    "continuity, taken_over, animated",
    [
        (False, [True, False, True], 1),  # only the scene that changed is made again
        (True, [True, False, False], 2),  # scene 2 starts from scene 1's last frame, which changed
    ],
)
@pytest.mark.slow
def test_a_remix_with_scenes_makes_again_only_what_changed(local_config, continuity, taken_over, animated):
    async def scenario():
        service, animator = spied(local_config)
        body = CreateVideoRequest(prompt="A fox.", scenes=SCENES, seed=7, continuity=continuity)
        source = await service.create(body, None, None)
        await made(service, source.id)
        before = animator.calls["animate"]
        changed = [SCENES[0], SceneSpec(caption="It stops to drink.", duration_s=1.5), SCENES[2]]
        remix = await service.remix(source.id, RemixRequest(prompt="A thirsty fox.", scenes=changed))
        return source.id, await made(service, remix.id), animator.calls["animate"] - before

    source_id, video, calls = asyncio.run(scenario())
    assert video["status"] == "completed", video["error"]
    assert video["remixed_from_video_id"] == source_id and video["prompt"] == "A thirsty fox."
    assert [scene["source_video_id"] for scene in video["scenes"]] == [
        source_id if taken else None for taken in taken_over
    ]
    assert video["scenes"][1]["caption"] == "It stops to drink."
    assert calls == animated
    assert length(local_config, video["id"]) == pytest.approx(4.5, abs=0.3)


def test_a_remix_keeps_the_settings_and_a_deleted_source_takes_nothing_away(local_config):
    async def scenario():
        service, animator = spied(local_config)
        body = CreateVideoRequest(prompt="A fox.", scenes=SCENES, size="96x64", seed=11, fps=5)
        source = await service.create(body, None, None)
        await made(service, source.id)
        before = animator.calls["animate"]
        changed = [SCENES[0], SceneSpec(caption="It stops to drink.", duration_s=1.5), SCENES[2]]
        remix = await service.remix(source.id, RemixRequest(prompt="A thirsty fox.", scenes=changed))
        # Gone before the remix runs: the scenes it takes over must come from its own copies.
        await service.delete(source.id)
        assert service.store.get(source.id) is None
        return service, source.id, await made(service, remix.id), animator.calls["animate"] - before

    service, source_id, video, calls = asyncio.run(scenario())
    assert video["status"] == "completed", video["error"]
    job = service.store.get(video["id"])
    assert job.request["seed"] == 11 and job.request["fps"] == 5 and video["size"] == "96x64"
    assert job.request["prompt"] == "A thirsty fox."
    # The unchanged scenes were taken over from the deleted source, not made again; only scene 1 was.
    assert [scene["source_video_id"] for scene in video["scenes"]] == [source_id, None, source_id]
    assert [scene["status"] for scene in video["scenes"]] == ["completed"] * 3
    assert calls == 1
    assert length(local_config, video["id"]) == pytest.approx(4.5, abs=0.3)


def test_an_extension_holds_the_video_then_new_scenes_from_its_last_frame(local_config):
    async def scenario():
        service = service_with(local_config)
        source = await service.create(CreateVideoRequest(prompt="Dawn. Dusk.", seconds=3), None, None)
        first = await made(service, source.id)
        extension = ExtendRequest(prompt="Night falls. Stars.", seconds=2, video=VideoReference(id=source.id))
        created = await service.extend(extension)
        await service.delete(source.id)
        return first, created.model_dump(), await made(service, created.id)

    source, created, video = asyncio.run(scenario())
    assert video["status"] == "completed", video["error"]
    assert created["seconds"] == "5" and video["extended_from_video_id"] == source["id"]
    count = len(source["scenes"])
    assert [scene["caption"] for scene in video["scenes"][:count]] == [s["caption"] for s in source["scenes"]]
    assert all(scene["source_video_id"] == source["id"] for scene in video["scenes"][:count])
    assert video["scenes"][count]["keyframe_generator"] == "continuity"
    assert len(video["scenes"]) > count
    seconds = length(local_config, video["id"])
    assert seconds == pytest.approx(5, abs=0.3) and float(video["seconds"]) == pytest.approx(
        seconds, abs=0.01
    )


def test_a_video_lists_the_variants_it_has(local_config):
    async def scenario():
        service = service_with(local_config)
        plain = await service.create(
            CreateVideoRequest(prompt="Dawn.", seconds=1, captions=False), None, None
        )
        queued_at_first = plain.variants
        return queued_at_first, await made(service, plain.id)

    queued_at_first, video = asyncio.run(scenario())
    assert queued_at_first == []
    assert video["variants"] == ["video", "thumbnail", "spritesheet"]  # no captions: none were asked for


def test_remix_and_extend_refusals_name_the_field(local_config):
    async def scenario():
        service = service_with(local_config)
        done = await service.create(CreateVideoRequest(prompt="Dawn.", seconds=2), None, None)
        await made(service, done.id)
        refusals = {}
        attempts = {
            "unknown": service.remix("video_" + "0" * 32, RemixRequest(prompt="x")),
            "too long": service.extend(
                ExtendRequest(prompt="More.", seconds=27, video=VideoReference(id=done.id))
            ),
        }
        for name, attempt in attempts.items():
            try:
                await attempt
            except (BadRequest, NotFound, Conflict) as exc:
                refusals[name] = exc
        service.runners = Idle()
        waiting = await service.create(CreateVideoRequest(prompt="Later."), None, None)
        try:
            await service.remix(waiting.id, RemixRequest(prompt="x"))
        except Conflict as exc:
            refusals["not ready"] = exc
        return refusals

    refusals = asyncio.run(scenario())
    assert refusals["unknown"].status == 404
    assert refusals["too long"].param == "seconds" and "28" in str(refusals["too long"])
    assert refusals["not ready"].status == 409


def test_a_remix_or_an_extension_is_refused_at_a_full_queue_before_it_copies_anything(local_config):
    async def scenario():
        service = service_with(local_config)
        done = await service.create(CreateVideoRequest(prompt="Dawn. Dusk.", seconds=2), None, None)
        await made(service, done.id)
        service.runners = Idle()
        await service.create(CreateVideoRequest(prompt="Waiting."), None, None)
        service.config.limits.max_queued_jobs = 1
        refusals = []
        for attempt in (
            service.remix(done.id, RemixRequest(prompt="Rain.")),
            service.extend(ExtendRequest(prompt="More.", seconds=2, video=VideoReference(id=done.id))),
        ):
            try:
                await attempt
            except Overloaded as exc:
                refusals.append(exc)
        return service, refusals

    service, refusals = asyncio.run(scenario())
    assert [(exc.code, exc.headers) for exc in refusals] == [("queue_full", {"Retry-After": "30"})] * 2
    assert len(service.store.page(None, 10, "desc")[0]) == 2
    assert len(list((JobFiles(local_config.storage.root, "video_" + "0" * 32).folder.parent).iterdir())) == 1


def test_edit_refusals_name_video_id_as_the_body_wrote_it(local_config):
    service = service_with(local_config)
    ingress.install(service)
    unknown = "video_" + "0" * 32
    with TestClient(ingress.app) as client:
        video_id = client.post("/v1/videos", json={"prompt": "Dawn.", "seconds": 1}).json()["id"]
        not_ready = client.post("/v1/videos/edits", json={"prompt": "Night.", "video": {"id": video_id}})
        deadline = time.monotonic() + 30
        while client.get(f"/v1/videos/{video_id}").json()["status"] != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        extension = client.post(
            "/v1/videos/extensions", json={"prompt": "More.", "seconds": 1, "video": {"id": video_id}}
        ).json()["id"]
        service.store.update(extension, status="completed")
        answers = {
            "json": client.post("/v1/videos/edits", json={"prompt": "x", "video": {"id": unknown}}),
            "form": client.post(
                "/v1/videos/edits", files={"prompt": (None, "x"), "video[id]": (None, unknown)}
            ),
            "bare id": client.post(
                "/v1/videos/edits", files={"prompt": (None, "x"), "video": (None, "nope")}
            ),
            "an extension": client.post("/v1/videos/edits", json={"prompt": "x", "video": {"id": extension}}),
            "not ready": not_ready,
            "extend": client.post(
                "/v1/videos/extensions", json={"prompt": "x", "seconds": 1, "video": {"id": unknown}}
            ),
            "remix": client.post(f"/v1/videos/{unknown}/remix", json={"prompt": "x"}),
        }
    found = {name: (answer.status_code, answer.json()["error"]["param"]) for name, answer in answers.items()}
    assert found == {
        "json": (404, "video.id"),
        "form": (404, "video.id"),
        "bare id": (404, "video.id"),
        "an extension": (400, "video.id"),
        "not ready": (409, "video.id"),
        "extend": (404, "video.id"),
        "remix": (404, "video_id"),  # the id is in the path there
    }


class Idle:
    """RunnerSignals that start nothing: the test starts jobs itself."""

    async def job_stored(self, job_id: str) -> None:
        pass

    async def job_stopped(self, job_id: str) -> None:
        pass


def test_the_queue_position_counts_down_as_jobs_start(local_config):
    local_config.jobs.max_concurrent_jobs = 1

    async def scenario():
        store = JobStore(local_config.storage.database_url)
        service = VideoService(local_config, store, Idle())
        # Created at once, as by many clients: each gets its own place, in creation order.
        created = await asyncio.gather(
            *(service.create(CreateVideoRequest(prompt=f"Job {i}.", seconds=1), None, None) for i in range(6))
        )
        ids = [video.id for video in sorted(created, key=lambda video: store.get(video.id).created_at)]
        seen = [[service.retrieve(video_id).queue_position for video_id in ids]]
        worker = JobWorker(local_config, store, VideoRecipe(local_config, store, stages_with(local_config)))
        for video_id in ids[:2]:
            assert await worker.run(video_id)
            seen.append([service.retrieve(video_id).queue_position for video_id in ids])
        listed = {video.id: video for video in service.list(None, 20, "asc").data}
        return created, seen, listed, ids

    created, seen, listed, ids = asyncio.run(scenario())
    assert sorted(video.queue_position for video in created) == list(range(6))
    assert seen[1] == [None, 0, 1, 2, 3, 4]
    assert seen[2] == [None, None, 0, 1, 2, 3]
    assert listed[ids[2]].queue_position == 0 and listed[ids[0]].queue_position is None
    # Once jobs have run, a queued one says roughly when it starts; a finished one does not.
    assert listed[ids[3]].estimated_start_at is not None and listed[ids[0]].estimated_start_at is None


@pytest.fixture
def secret(monkeypatch) -> str:
    value = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    monkeypatch.setenv("STORYREEL_WEBHOOK_SECRET", value)
    return value


@pytest.mark.slow
def test_a_webhook_is_retried_with_the_same_id_until_it_is_answered(local_config, secret):
    receiver = Receiver(failures=1)
    local_config.webhooks.allowed_hosts = ["127.0.0.1"]
    local_config.webhooks.retry_seconds = [1]  # the same path as the shipped 5 s, sooner

    async def scenario():
        service = service_with(local_config)
        worker = runners(service).worker
        worker.start()  # the loop that sends webhooks (and takes up jobs) every jobs.poll_seconds
        body = CreateVideoRequest(prompt="Dawn.", seconds=1, webhook_url=receiver.url)
        video = await service.create(body, None, None)
        waiting = service.retrieve(video.id).webhook
        await runners(service).finished(video.id)
        ended = time.monotonic()
        deadline = time.monotonic() + 30
        while len(receiver.received) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.5)  # a third delivery, were there one, would come within this
        return video.id, waiting, service.retrieve(video.id).webhook, ended

    try:
        video_id, waiting, state, ended = asyncio.run(scenario())
    finally:
        receiver.close()
    assert waiting is not None and waiting.status == "waiting"
    assert len(receiver.received) == 2  # the failed one, and its retry; nothing after the 2xx
    (first_at, first, first_body), (retry_at, retry, retry_body) = receiver.received
    assert first["webhook-id"] == retry["webhook-id"] and first_body == retry_body
    assert 1 <= retry_at - first_at <= 10  # after the configured wait, not at once
    assert verify(secret, first, first_body) and verify(secret, retry, retry_body)
    assert not verify("whsec_" + base64.b64encode(b"another key").decode(), retry, retry_body)
    event = json.loads(retry_body)
    assert event["type"] == "video.completed" and event["data"]["id"] == video_id
    assert state.status == "delivered" and state.attempts == 2 and state.last_error == "HTTP 500"
    assert first_at - ended < 5


def test_a_cancelled_video_sends_video_cancelled(local_config, secret):
    receiver = Receiver(failures=0)
    local_config.webhooks.allowed_hosts = ["127.0.0.1"]

    async def scenario():
        store = JobStore(local_config.storage.database_url)
        service = VideoService(local_config, store, Idle())
        video = await service.create(CreateVideoRequest(prompt="Dawn.", webhook_url=receiver.url), None, None)
        await service.cancel(video.id)
        worker = JobWorker(local_config, store, VideoRecipe(local_config, store, stages_with(local_config)))
        worker.webhooks.send_due()
        deadline = time.monotonic() + 10
        while not receiver.received and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.gather(*worker.webhooks.deliveries)
        return service.retrieve(video.id).webhook

    try:
        state = asyncio.run(scenario())
    finally:
        receiver.close()
    assert json.loads(receiver.received[0][2])["type"] == "video.cancelled"
    assert state.status == "delivered" and state.attempts == 1


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hooks",
        "http://10.0.0.7/hooks",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hooks",
        "http://localhost/hooks",
        "file:///etc/passwd",
        "http://[::1",
    ],
)
def test_webhooks_to_private_targets_are_refused_at_create(local_config, secret, url):
    async def scenario():
        service = VideoService(local_config, JobStore(local_config.storage.database_url), Idle())
        await service.create(CreateVideoRequest(prompt="Dawn.", webhook_url=url), None, None)

    with pytest.raises(BadRequest) as refused:
        asyncio.run(scenario())
    assert refused.value.param == "webhook_url"


def test_without_a_secret_a_webhook_url_is_refused(local_config, monkeypatch):
    monkeypatch.delenv("STORYREEL_WEBHOOK_SECRET", raising=False)
    local_config.webhooks.allowed_hosts = ["127.0.0.1"]

    async def scenario():
        service = VideoService(local_config, JobStore(local_config.storage.database_url), Idle())
        await service.create(CreateVideoRequest(prompt="Dawn.", webhook_url="http://127.0.0.1/x"), None, None)

    with pytest.raises(BadRequest) as refused:
        asyncio.run(scenario())
    assert "STORYREEL_WEBHOOK_SECRET" in str(refused.value)


def test_the_routes_take_the_sdk_forms_and_refuse_characters(local_config):
    service = service_with(local_config)
    ingress.install(service)
    with TestClient(ingress.app) as client:
        made = client.post("/v1/videos", json={"prompt": "Dawn. Dusk.", "seconds": 2})
        video_id = made.json()["id"]
        deadline = time.monotonic() + 30
        while client.get(f"/v1/videos/{video_id}").json()["status"] != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        # The SDK sends edits and extensions as multipart, `video` as the field `video[id]`.
        edit = client.post(
            "/v1/videos/edits", files={"prompt": (None, "Night."), "video[id]": (None, video_id)}
        )
        bare = client.post("/v1/videos/edits", files={"prompt": (None, "Night."), "video": (None, video_id)})
        extend = client.post(
            "/v1/videos/extensions",
            files={"prompt": (None, "More."), "seconds": (None, "4"), "video[id]": (None, video_id)},
        )
        remix = client.post(f"/v1/videos/{video_id}/remix", json={"prompt": "Rain."})
        upload = client.post(
            "/v1/videos/edits", files={"prompt": (None, "x"), "video": ("a.mp4", b"\x00" * 10, "video/mp4")}
        )
        characters = client.post("/v1/videos/characters", json={"name": "Fox"})
        bad_seconds = client.post(
            "/v1/videos/extensions", json={"prompt": "x", "seconds": "soon", "video": {"id": video_id}}
        )
    assert edit.status_code == 200, edit.text
    assert edit.json()["remixed_from_video_id"] == video_id
    assert bare.status_code == 200 and bare.json()["remixed_from_video_id"] == video_id
    assert extend.status_code == 200, extend.text
    assert extend.json()["extended_from_video_id"] == video_id and extend.json()["seconds"] == "6"
    assert remix.status_code == 200 and remix.json()["remixed_from_video_id"] == video_id
    assert upload.status_code == 400 and upload.json()["error"]["param"] == "video"
    assert characters.status_code == 400 and "not supported" in characters.json()["error"]["message"]
    assert bad_seconds.status_code == 400 and bad_seconds.json()["error"]["param"] == "seconds"
