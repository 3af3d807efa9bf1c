"""The CPU profile over real Ray Serve and real HTTP: OpenAI's SDK, multipart, errors, the outputs."""

from __future__ import annotations

import io
from pathlib import Path

import av
import httpx
import pytest
import webvtt
from openai import OpenAI
from PIL import Image

from tests.fixtures.serve import Deployed, cpu_profile

pytestmark = pytest.mark.e2e

PROMPT = "A lighthouse keeper climbs the stairs at dusk. A whale glows under the sea. 鲸鱼在唱歌。"


@pytest.fixture(scope="module")
def app(serve_cluster, tmp_path_factory) -> Deployed:
    from ray import serve

    from serve_app.app import bind_graph
    from tests.fixtures.serve import SMALL_REPLICAS

    storage = tmp_path_factory.mktemp("cpu-storage")
    serve.run(bind_graph(cpu_profile(storage), SMALL_REPLICAS), name="cpu", route_prefix="/cpu")
    url = f"{serve_cluster}/cpu"
    yield Deployed(name="cpu", url=url, client=httpx.Client(base_url=url, timeout=60))
    serve.delete("cpu")


@pytest.fixture(scope="module")
def openai_client(app: Deployed) -> OpenAI:
    return OpenAI(base_url=f"{app.url}/v1", api_key="not-needed", max_retries=0)


def test_openai_sdk_creates_retrieves_and_downloads(app, openai_client, tmp_path):
    created = openai_client.videos.create(prompt=PROMPT, seconds="4", size="1280x720")
    assert created.status in ("queued", "in_progress") and created.id.startswith("video_")

    finished = app.wait(created.id)
    assert finished["status"] == "completed", finished["error"]
    video = openai_client.videos.retrieve(created.id)
    assert video.progress == 100 and video.size == "1280x720" and video.seconds == "4"
    # Every scene says it is a fallback, and why: never passed off as SVD.
    assert [scene["generator"] for scene in finished["scenes"]] == ["fallback"] * len(finished["scenes"])
    assert all("always" in scene["fallback_reason"] for scene in finished["scenes"])
    assert any("鲸鱼" in scene["caption"] for scene in finished["scenes"])

    target = tmp_path / "video.mp4"
    openai_client.videos.download_content(created.id).write_to_file(target)
    with av.open(str(target)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert (stream.width, stream.height) == (1280, 720)
        frames = sum(1 for _ in container.decode(stream))
    assert frames / float(stream.average_rate) == pytest.approx(4.0, abs=0.3)

    thumbnail = openai_client.videos.download_content(created.id, variant="thumbnail").read()
    assert Image.open(io.BytesIO(thumbnail)).format == "JPEG"
    spritesheet = openai_client.videos.download_content(created.id, variant="spritesheet").read()
    assert Image.open(io.BytesIO(spritesheet)).width > 0

    captions = app.client.get(f"/v1/videos/{created.id}/content", params={"variant": "captions"})
    assert captions.headers["content-type"].startswith("text/vtt")
    (tmp_path / "c.vtt").write_text(captions.text, encoding="utf-8")
    cues = webvtt.read(str(tmp_path / "c.vtt"))
    assert [cue.text for cue in cues] == [scene["caption"] for scene in finished["scenes"]]


def test_explicit_scenes_and_an_uploaded_reference(app, tmp_path):
    reference = io.BytesIO()
    Image.new("RGB", (300, 200), (10, 120, 200)).save(reference, format="PNG")
    response = app.client.post(
        "/v1/videos",
        data={
            "prompt": "two explicit scenes",
            "seconds": "3",
            "size": "640x360",
            "scenes": '[{"caption": "第一幕：黎明"}, {"caption": "Act two: noon", "motion": "dynamic"}]',
        },
        files={"input_reference": ("ref.png", reference.getvalue(), "image/png")},
    )
    assert response.status_code == 200, response.text
    finished = app.wait(response.json()["id"])

    assert finished["status"] == "completed", finished["error"]
    assert [scene["caption"] for scene in finished["scenes"]] == ["第一幕：黎明", "Act two: noon"]
    assert [scene["keyframe_generator"] for scene in finished["scenes"]] == ["reference", "placeholder"]


def test_scene_jobs_overlap_and_batch_in_the_svd_deployment(app):
    response = app.client.post("/v1/videos", json={"prompt": PROMPT, "num_scenes": 4, "seconds": 6})
    finished = app.wait(response.json()["id"])
    assert finished["status"] == "completed"
    # The four scenes reached SVDGenerator together: at least two shared one call.
    assert max(scene["batch_size"] for scene in finished["scenes"]) > 1


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": "x", "size": "12x"}, "size"),
        ({"prompt": "x", "seconds": 999}, "seconds"),
        ({"prompt": "x", "seconds": "soon"}, "seconds"),
        ({"prompt": "x", "model": "sora-2"}, "model"),
        ({"prompt": "x", "num_scenes": 50}, "num_scenes"),
        ({"prompt": "x", "num_inference_steps": 10_000}, "num_inference_steps"),
        ({"prompt": "x", "colour": "red"}, "colour"),
        ({"prompt": ""}, "prompt"),
        ({}, "prompt"),
        (
            {"prompt": "x", "input_reference": {"image_url": "https://example.com/a.png"}},
            "input_reference.image_url",
        ),
    ],
)
def test_bad_input_is_a_400_naming_the_field(app, body, param):
    before = app.client.get("/v1/videos", params={"limit": 100}).json()["data"]
    response = app.client.post("/v1/videos", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert param.split(".")[0] in error["message"]
    # Nothing was stored.
    assert app.client.get("/v1/videos", params={"limit": 100}).json()["data"] == before


def test_a_fake_image_upload_is_refused(app):
    response = app.client.post(
        "/v1/videos", data={"prompt": "x"}, files={"input_reference": ("a.png", b"not an image", "image/png")}
    )
    assert response.status_code == 400 and response.json()["error"]["param"] == "input_reference"


def test_body_over_the_limit_is_a_413(app):
    response = app.client.post("/v1/videos", json={"prompt": "x" * (17 * 2**20)})
    assert response.status_code == 413 and "error" in response.json()


def test_unknown_video_is_a_404_and_unfinished_content_a_409(app):
    missing = app.client.get("/v1/videos/video_" + "0" * 32)
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    assert app.client.get("/v1/videos/../../etc/passwd/content").status_code == 404

    created = app.client.post("/v1/videos", json={"prompt": "a long one", "seconds": 12}).json()
    early = app.client.get(f"/v1/videos/{created['id']}/content")
    assert early.status_code == 409 and early.json()["error"]["code"] == "not_ready"
    app.wait(created["id"])


def test_models_and_health(app):
    assert app.client.get("/v1/models").json()["data"][0]["id"] == "svd-xt"
    assert app.client.get("/healthz").json()["status"] == "ok"


def test_storage_holds_only_files_the_service_named(app, tmp_path):
    # Content is served from the job's own folder: a variant outside the enum is refused before any path.
    response = app.client.get(
        f"/v1/videos/video_{'a' * 32}/content", params={"variant": "../../jobs.sqlite3"}
    )
    assert response.status_code == 400 and response.json()["error"]["param"] == "variant"
    assert Path(tmp_path).exists()
