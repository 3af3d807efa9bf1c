"""What the clients of vLLM-Omni's /v1/videos send (its multipart and urlencoded forms, its field names), in
process over the real engines (title cards) and real encoding: each field's meaning is checked on the video
made, not only that a create answers 200."""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path
from urllib.parse import urlencode

import av
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from core.files import JobFiles
from engines.video.config import LTXConfig
from serve_app.api import ingress
from serve_app.protocol import SAMPLING_FIELDS
from tests.fixtures.jobs import service_with, stages_with

pytestmark = pytest.mark.integration


@pytest.fixture
def client(local_service):
    ingress.install(local_service)
    with TestClient(ingress.app) as client:
        yield client


def multipart(**fields: object) -> list[tuple[str, tuple[None, str]]]:
    """Text parts as vLLM-Omni's clients send them: booleans as true/false, objects as JSON text."""

    def text(value: object) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        return json.dumps(value) if isinstance(value, dict | list) else str(value)

    return [(name, (None, text(value))) for name, value in fields.items()]


def finished(client: TestClient, response) -> dict:
    assert response.status_code == 200, response.text
    video_id = response.json()["id"]
    deadline = time.monotonic() + 60
    while (video := client.get(f"/v1/videos/{video_id}").json())["status"] not in ("completed", "failed"):
        assert time.monotonic() < deadline, video
        time.sleep(0.1)
    assert video["status"] == "completed", video["error"]
    return video


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


def assert_refused(response, param: str) -> str:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param, error
    return error["message"]


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
