"""What the clients of vLLM-Omni's /v1/videos send (its multipart and urlencoded forms, its field names), in
process over the real engines (title cards) and real encoding: each field's meaning is checked on the video
made, not only that a create answers 200."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import av
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from core.files import JobFiles
from engines.stages.protocols import Animated
from engines.video.config import LTXConfig, WanConfig
from serve_app.api import ingress
from serve_app.protocol import SAMPLING_FIELDS
from tests.fixtures.jobs import assert_refused, completed, multipart, service_with, stages_with
from tests.support.tiny_models import TINY_WAN_SETTINGS

pytestmark = pytest.mark.integration


def finished(client: TestClient, response) -> dict:
    assert response.status_code == 200, response.text
    return completed(client, response.json()["id"])


def frames_of(service, video: dict) -> tuple[int, float, tuple[int, int]]:
    """The final video's frame count, frame rate and size, decoded."""
    path = JobFiles(service.config.storage.root, video["id"]).variant("video")
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        count = sum(1 for _ in container.decode(stream))
        return count, float(stream.average_rate), (stream.width, stream.height)


def png_data_url(color: tuple[int, int, int]) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), color).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.slow
def test_seconds_and_fps_as_multipart_text_make_seconds_times_fps_frames(client, local_service):
    # vLLM-Omni: num_frames = seconds x fps (seconds=2, fps=12: 24 frames at 12 fps).
    response = client.post(
        "/v1/videos",
        files=multipart(prompt="A fox.", model="svd-xt", seconds=2, fps=12, num_scenes=1, narration=False),
    )
    video = finished(client, response)
    assert video["seconds"] == "2"
    assert frames_of(local_service, video)[:2] == (24, 12.0)


@pytest.mark.slow
def test_num_frames_width_and_height_give_the_length_and_the_size(client, local_service):
    response = client.post(
        "/v1/videos",
        files=multipart(prompt="A fox.", num_frames=12, fps=8, width=128, height=96, num_scenes=1),
    )
    video = finished(client, response)
    assert (video["size"], float(video["seconds"])) == ("128x96", 1.5)
    assert frames_of(local_service, video) == (12, 8.0, (128, 96))


@pytest.mark.slow
def test_frame_interpolation_doubles_the_frames_and_the_rate_in_the_same_time(client, local_service):
    fields = {"prompt": "A fox.", "seconds": 1, "fps": 8, "num_scenes": 1, "narration": False}
    plain = finished(client, client.post("/v1/videos", files=multipart(**fields)))
    doubled = finished(
        client,
        client.post(
            "/v1/videos",
            files=multipart(**fields, enable_frame_interpolation=True, frame_interpolation_exp=1),
        ),
    )
    # Asked off, the exponent means nothing: the deployment's factor (1).
    off = finished(
        client,
        client.post(
            "/v1/videos",
            files=multipart(**fields, enable_frame_interpolation=False, frame_interpolation_exp=2),
        ),
    )
    assert frames_of(local_service, plain)[:2] == (8, 8.0)
    assert frames_of(local_service, doubled)[:2] == (16, 16.0)
    assert frames_of(local_service, off)[:2] == (8, 8.0)


@pytest.mark.slow
def test_an_urlencoded_form_is_a_create_as_curl_d_sends_it(client, local_service):
    body = {
        "prompt": "A fox. The sea.",
        "seconds": "2",
        "fps": "8",
        "narration": "false",
        "captions": "false",
    }
    video = finished(client, client.post("/v1/videos", data=body))
    assert video["prompt"] == "A fox. The sea." and video["seconds"] == "2"
    assert "captions" not in video["variants"] and "audio" not in video["variants"]
    assert frames_of(local_service, video)[:2] == (16, 8.0)


@pytest.mark.slow
def test_image_reference_as_a_json_form_field_is_the_first_scenes_keyframe(client, local_service):
    reference = {"image_url": png_data_url((10, 200, 30))}
    response = client.post(
        "/v1/videos", files=multipart(prompt="A fox. The sea.", seconds=2, image_reference=reference)
    )
    video = finished(client, response)
    assert [scene["keyframe_generator"] for scene in video["scenes"]][:1] == ["reference"]


@pytest.mark.slow
def test_sampling_fields_the_model_has_no_use_for_are_accepted_and_listed_in_notices(client):
    # The CPU profile serves SVD, which takes none of them (LTX-Video and Wan take two; see the plan's tests).
    sampling = {
        "negative_prompt": "blurry",
        "guidance_scale": 5.0,
        "guidance_scale_2": 3.0,
        "true_cfg_scale": 4.0,
        "boundary_ratio": 0.875,
        "flow_shift": 5.0,
    }
    assert set(sampling) == set(SAMPLING_FIELDS)
    video = finished(
        client, client.post("/v1/videos", files=multipart(prompt="A fox.", seconds=1, **sampling))
    )
    ignored = [notice["message"] for notice in video["notices"] if notice["code"] == "ignored_field"]
    assert ignored == [f"svd takes no {name}; it was ignored" for name in SAMPLING_FIELDS]


def test_extra_params_carry_a_models_own_arguments_and_refuse_others_by_name(client, local_service):
    accepted = client.post(
        "/v1/videos", files=multipart(prompt="A fox.", extra_params={"motion_bucket_id": 40})
    )
    assert accepted.status_code == 200, accepted.text
    assert local_service.store.get(accepted.json()["id"]).request["motion_bucket_id"] == 40

    unknown = client.post("/v1/videos", json={"prompt": "A fox.", "extra_params": {"eta": 0.3}})
    assert "eta=0.3" in assert_refused(unknown, "extra_params.eta")
    twice = client.post(
        "/v1/videos",
        json={"prompt": "A fox.", "motion_bucket_id": 9, "extra_params": {"motion_bucket_id": 40}},
    )
    assert_refused(twice, "extra_params.motion_bucket_id")
    not_an_object = client.post("/v1/videos", files=multipart(prompt="A fox.", extra_params="[1, 2]"))
    assert_refused(not_an_object, "extra_params")
    out_of_range = client.post(
        "/v1/videos", json={"prompt": "A fox.", "extra_params": {"motion_bucket_id": 900}}
    )
    assert_refused(out_of_range, "motion_bucket_id")
    deep = client.post("/v1/videos", files=multipart(prompt="A fox.", extra_params="[" * 40 + "]" * 40))
    assert response_code(deep) == ("invalid_json", "extra_params")


def response_code(response) -> tuple[str, str]:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    return error["code"], error["param"]


@pytest.mark.parametrize(
    "fields, param, says",
    [
        ({"width": 128}, "height", "width and height come together"),
        ({"size": "128x128", "width": 128, "height": 96}, "size", "disagrees with width and height (128x96)"),
        ({"seconds": 2, "fps": 8, "num_frames": 24}, "num_frames", "disagrees with seconds=2 at 8 fps"),
        ({"num_frames": 10**5, "fps": 8}, "num_frames", "at most"),
        ({"frame_interpolation_exp": 3}, "frame_interpolation_exp", "less than or equal to 2"),
        ({"boundary_ratio": 1.5}, "boundary_ratio", "less than or equal to 1"),
        ({"guidance_scale": "lots"}, "guidance_scale", "lots"),
        ({"enable_frame_interpolation": "maybe"}, "enable_frame_interpolation", "maybe"),
        (
            {"image_reference": {"image_url": "data:,"}, "input_reference": {"image_url": "data:,"}},
            "image_reference",
            "input_reference",
        ),
    ],
)
def test_two_names_for_one_thing_that_disagree_and_bad_values_are_400s_naming_them(
    client, local_service, fields, param, says
):
    for send in ("json", "form"):
        body = {"prompt": "A fox.", **fields}
        response = (
            client.post("/v1/videos", json=body)
            if send == "json"
            else client.post("/v1/videos", files=multipart(**body))
        )
        assert says in assert_refused(response, param), send
    assert local_service.store.page(None, 10, "desc")[0] == []
    assert not (Path(local_service.config.storage.root) / "jobs").exists() or not any(
        (Path(local_service.config.storage.root) / "jobs").iterdir()
    )


class Recorder:
    """An animator stage that hands every call on and keeps each scene request it was given."""

    def __init__(self, animator) -> None:
        self.animator = animator
        self.scenes: list = []

    def animate(self, request, keyframe):
        self.scenes.append(request.scene)
        return self.animator.animate(request, keyframe)


@pytest.fixture
def ltx_service(local_config):
    config = local_config.model_copy(
        update={"video": LTXConfig(device="cpu", width=64, height=64, num_frames=9, fps=8)}
    )
    recorder = Recorder(stages_with(config).animator)
    return service_with(config, animator=recorder), recorder


@pytest.mark.slow
def test_the_sampling_fields_a_text_family_takes_reach_its_scenes_and_the_rest_are_listed(ltx_service):
    service, recorder = ltx_service
    ingress.install(service)
    with TestClient(ingress.app) as client:
        sampling = {"negative_prompt": "blurry", "guidance_scale": 4.5, "flow_shift": 5.0, "seconds": 1}
        video = finished(client, client.post("/v1/videos", files=multipart(prompt="A fox.", **sampling)))
        out_of_range = client.post("/v1/videos", json={"prompt": "A fox.", "guidance_scale": 30})
        svd_only = client.post(
            "/v1/videos", files=multipart(prompt="A fox.", extra_params={"motion_bucket_id": 9})
        )

    assert recorder.scenes and all(
        (scene.negative_prompt, scene.guidance_scale) == ("blurry", 4.5) for scene in recorder.scenes
    )
    assert [notice["message"] for notice in video["notices"]] == ["ltx takes no flow_shift; it was ignored"]
    assert "LTX-Video takes 1 to 20" in assert_refused(out_of_range, "guidance_scale")
    assert "is SVD's" in assert_refused(svd_only, "motion_bucket_id")


@pytest.mark.parametrize(
    "body, param, says",
    [
        ({f"extra_{i}": "v" for i in range(49)}, None, "48"),
        ({"prompt": "x", "style": "s" * (2**20 + 1)}, "style", "at most 1048576 bytes"),
        ([("prompt", "x"), ("prompt", "y")], "prompt", "given once"),
        ({"prompt": "x", "extra_params": "{" * 40}, "extra_params", "not valid JSON"),
    ],
)
def test_a_hostile_urlencoded_form_is_refused_as_a_multipart_one_is(client, local_service, body, param, says):
    response = client.post(
        "/v1/videos",
        content=urlencode(body),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert says in error["message"] and error["param"] == param, error
    assert local_service.store.page(None, 10, "desc")[0] == []


def test_a_cross_site_urlencoded_form_is_refused_and_stores_nothing(client, local_service):
    # A page on another site can post a form without asking first; its browser sends `Origin`.
    response = client.post("/v1/videos", data={"prompt": "csrf"}, headers={"origin": "https://evil.example"})
    assert response.status_code == 403 and response.json()["error"]["code"] == "cross_origin_request"
    assert local_service.store.page(None, 10, "desc")[0] == []


# -- POST /v1/videos/sync ------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_sync_route_answers_the_whole_mp4_once_the_video_completes(client, local_service, tmp_path):
    response = client.post(
        "/v1/videos/sync", files=multipart(prompt="A fox.", seconds=2, fps=12, num_scenes=1, narration=False)
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "video/mp4"
    assert int(response.headers["content-length"]) == len(response.content) > 0
    (tmp_path / "v.mp4").write_bytes(response.content)
    with av.open(str(tmp_path / "v.mp4")) as container:
        assert sum(1 for _ in container.decode(container.streams.video[0])) == 24
    (job,) = local_service.store.page(None, 10, "desc")[0]
    assert job.status == "completed"  # the same job a create makes, kept like any other


class Held:
    """An animator stage that waits for ``release`` before animating: a video that cannot finish until the
    test says so."""

    def __init__(self, animator) -> None:
        self.animator = animator
        self.release = threading.Event()

    async def animate(self, request, keyframe):
        await asyncio.to_thread(self.release.wait, 60)
        async for event in self.animator.animate(request, keyframe):
            yield event


@pytest.mark.slow
def test_past_the_sync_timeout_a_504_carries_the_id_and_the_job_goes_on(local_config):
    limits = local_config.limits.model_copy(update={"sync_timeout_s": 0.5})
    config = local_config.model_copy(update={"limits": limits})
    held = Held(stages_with(config).animator)
    ingress.install(service_with(config, animator=held))
    with TestClient(ingress.app) as client:
        late = client.post("/v1/videos/sync", json={"prompt": "A fox.", "seconds": 1})
        held.release.set()
        assert late.status_code == 504, late.text
        error = late.json()["error"]
        assert error["code"] == "sync_timeout" and "limits.sync_timeout_s" in error["message"]
        assert late.headers["location"] == f"/v1/videos/{error['video_id']}"
        completed(client, error["video_id"])


@pytest.mark.slow
def test_a_failed_sync_video_is_its_own_error_with_its_id(local_config):
    processing = local_config.video_processing.model_copy(update={"ffmpeg_path": "/bin/false"})
    config = local_config.model_copy(update={"video_processing": processing})
    service = service_with(config)
    ingress.install(service)
    with TestClient(ingress.app) as client:
        failed = client.post("/v1/videos/sync", json={"prompt": "A fox.", "seconds": 1})
    assert failed.status_code == 500, failed.text
    error = failed.json()["error"]
    job = service.store.get(error["video_id"])
    assert job.status == "failed" and (error["code"], error["message"]) == (job.error_code, job.error_message)


def test_a_refused_sync_create_is_a_400_without_a_video(client, local_service):
    response = client.post("/v1/videos/sync", data={"prompt": "A fox.", "width": "128"})
    assert "width and height come together" in assert_refused(response, "height")
    assert "video_id" not in response.json()["error"]
    assert local_service.store.page(None, 10, "desc")[0] == []


@pytest.mark.slow
def test_waiting_sync_requests_share_the_event_streams_cap_and_past_it_make_no_video(local_config):
    limits = local_config.limits.model_copy(update={"max_event_streams": 1})
    config = local_config.model_copy(update={"limits": limits})
    held = Held(stages_with(config).animator)
    service = service_with(config, animator=held)
    ingress.install(service)
    with TestClient(ingress.app) as client:
        answers = []
        first = threading.Thread(
            target=lambda: answers.append(
                client.post("/v1/videos/sync", json={"prompt": "A fox.", "seconds": 1})
            )
        )
        first.start()
        deadline = time.monotonic() + 30
        while not service.store.page(None, 10, "desc")[0]:  # its job is stored: it holds its place
            assert time.monotonic() < deadline
            time.sleep(0.02)
        second = client.post("/v1/videos/sync", json={"prompt": "A second fox.", "seconds": 1})
        stream = client.get(f"/v1/videos/{service.store.page(None, 10, 'desc')[0][0].id}/events")
        held.release.set()
        first.join(60)

    assert second.status_code == 429 and second.json()["error"]["code"] == "too_many_streams"
    assert stream.status_code == 429
    assert [job.prompt for job in service.store.page(None, 10, "desc")[0]] == ["A fox."]
    assert answers[0].status_code == 200 and answers[0].headers["content-type"] == "video/mp4"


# -- timings on the object --------------------------------------------------------------------------


@pytest.mark.slow
def test_a_completed_video_says_how_long_it_took_in_all_and_in_each_stage(client, local_service):
    created = client.post("/v1/videos", json={"prompt": "A fox. The sea.", "seconds": 2, "narration": False})
    assert created.status_code == 200
    queued = created.json()
    assert (queued["inference_time_s"], queued["stage_durations"], queued["media_type"]) == (None, None, None)
    video = completed(client, queued["id"])

    stages = video["stage_durations"]
    assert set(stages) == {"write", "paint", "animate", "encode", "stitch"}  # silent: no narrate stage
    assert all(seconds >= 0 for seconds in stages.values()) and stages["stitch"] > 0
    # The script comes before the scenes and the stitch after them: together within the run's time.
    assert 0 < stages["write"] + stages["stitch"] <= video["inference_time_s"]
    assert (video["media_type"], video["file_name"]) == ("video/mp4", f"{video['id']}.mp4")
    assert video["peak_memory_mb"] is None  # no model on a CUDA device here
    download = client.get(f"/v1/videos/{video['id']}/content")
    assert download.headers["content-type"] == video["media_type"]
    assert video["file_name"] in download.headers["content-disposition"]


@pytest.mark.slow
def test_wans_sampling_fields_reach_it_and_a_one_expert_checkpoint_says_which_it_ignored(
    local_config, tiny_wan_path
):
    # The tiny Wan 2.2 TI2V-style checkpoint (one expert) runs here: `auto`, with no painter, paints title cards.
    video = WanConfig(model_path=str(tiny_wan_path), **TINY_WAN_SETTINGS)
    service = service_with(local_config.model_copy(update={"fallback": "auto", "video": video}))
    ingress.install(service)
    asked = {"guidance_scale_2": 3.0, "boundary_ratio": 0.5, "flow_shift": 3.0, "true_cfg_scale": 4.0}
    with TestClient(ingress.app) as client:
        made = finished(
            client, client.post("/v1/videos", files=multipart(prompt="A fox.", num_scenes=1, **asked))
        )
    assert [scene["generator"] for scene in made["scenes"]] == ["wan"]
    # flow_shift reached the scheduler (tests/unit/test_wan_options.py shows it changes the frames); the two
    # experts' fields this checkpoint had no use for, and true_cfg_scale, which no Wan takes, are told.
    assert sorted(notice["message"] for notice in made["notices"]) == [
        "the served Wan checkpoint has no use for boundary_ratio; it was ignored",
        "the served Wan checkpoint has no use for guidance_scale_2; it was ignored",
        "wan takes no true_cfg_scale; it was ignored",
    ]


class PeakReporter:
    """An animator stage that hands every call on, its frames' peak GPU memory set per scene index."""

    def __init__(self, animator, peaks: dict[int, int]) -> None:
        self.animator = animator
        self.peaks = peaks

    async def animate(self, request, keyframe):
        index = int(request.key.rsplit(":", 1)[1])
        async for event in self.animator.animate(request, keyframe):
            if isinstance(event, Animated):
                event = dataclasses.replace(event, peak_memory_bytes=self.peaks[index])
            yield event


def test_the_peak_memory_of_a_video_is_the_most_any_of_its_scenes_calls_held(local_config):
    peaks = {0: 300 * 2**20, 1: 1234 * 2**20 + 2**19, 2: 5 * 2**20}
    service = service_with(local_config, animator=PeakReporter(stages_with(local_config).animator, peaks))
    ingress.install(service)
    with TestClient(ingress.app) as client:
        created = client.post("/v1/videos", json={"prompt": "A fox. The sea. The moon.", "num_scenes": 3})
        video = completed(client, created.json()["id"])
    assert len(video["scenes"]) == 3
    assert video["peak_memory_mb"] == 1234.5


@pytest.mark.slow
def test_a_video_given_in_frames_can_be_extended_and_remixed(client):
    source = finished(client, client.post("/v1/videos", json={"prompt": "A fox.", "num_frames": 8, "fps": 8}))
    assert source["seconds"] == "1"
    # 2 s more, where the source's 8 frames at 8 fps are 1 s: the extension's length is not its source's.
    body = {"video": {"id": source["id"]}, "prompt": "Then the sea.", "seconds": 2}
    extension = finished(client, client.post("/v1/videos/extensions", json=body))
    remix = finished(client, client.post(f"/v1/videos/{source['id']}/remix", json={"prompt": "A wolf."}))
    assert float(extension["seconds"]) == pytest.approx(3, abs=0.2)
    assert float(remix["seconds"]) == pytest.approx(1, abs=0.2)


def test_a_sync_create_replaying_a_cancelled_video_is_a_409_with_its_id(client):
    # What the API fuzzer found: the same Idempotency-Key and body as a video since cancelled.
    headers = {"Idempotency-Key": "sync-replay"}
    created = client.post("/v1/videos", json={"prompt": "A fox.", "seconds": 1}, headers=headers).json()
    assert client.post(f"/v1/videos/{created['id']}/cancel").status_code == 200
    replayed = client.post("/v1/videos/sync", json={"prompt": "A fox.", "seconds": 1}, headers=headers)
    assert replayed.status_code == 409, replayed.text
    assert replayed.json()["error"] | {"message": ""} == {
        "message": "",
        "type": "conflict_error",
        "param": None,
        "code": "cancelled",
        "video_id": created["id"],
    }


def test_image_reference_beside_an_uploaded_input_reference_is_refused(client, local_service):
    upload = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(upload, format="PNG")
    response = client.post(
        "/v1/videos",
        files=[
            *multipart(prompt="A fox.", image_reference={"image_url": png_data_url((9, 9, 9))}),
            ("input_reference", ("first.png", upload.getvalue(), "image/png")),
        ],
    )
    assert "input_reference" in assert_refused(response, "image_reference")
    assert local_service.store.page(None, 10, "desc")[0] == []
