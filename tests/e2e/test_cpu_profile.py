"""The CPU profile over real Ray Serve and real HTTP: OpenAI's SDK, multipart, errors, the outputs."""

from __future__ import annotations

import base64
import http.client
import io
import json
import uuid
from concurrent.futures import ThreadPoolExecutor

import av
import httpx
import pytest
import webvtt
from openai import OpenAI
from PIL import Image

from tests.fixtures.media import video_bytes
from tests.fixtures.serve import Deployed

pytestmark = pytest.mark.e2e

PROMPT = "A lighthouse keeper climbs the stairs at dusk. A whale glows under the sea. 鲸鱼在唱歌。"


@pytest.fixture(scope="module")
def app(cpu_app: Deployed) -> Deployed:
    return cpu_app


def raw_get(app: Deployed, path: str) -> tuple[int, dict]:
    """GET ``path`` under the app's route exactly as written (no `..` resolved); its status and JSON body."""
    url = httpx.URL(app.url)
    connection = http.client.HTTPConnection(url.host, url.port, timeout=60)
    try:
        connection.request("GET", url.path.rstrip("/") + path)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@pytest.fixture(scope="module")
def openai_client(app: Deployed) -> OpenAI:
    return OpenAI(base_url=f"{app.url}/v1", api_key="not-needed", max_retries=0)


def test_openai_sdk_creates_retrieves_and_downloads(app, openai_client, tmp_path):
    created = openai_client.videos.create(prompt=PROMPT, seconds="4", size="1280x720")
    assert created.status in ("queued", "in_progress") and created.id.startswith("video_")

    finished = app.wait(created.id)
    assert finished["status"] == "completed", finished["error"]
    video = openai_client.videos.retrieve(created.id)
    assert video.progress == 100 and video.size == "1280x720"
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
        fps = float(stream.average_rate)
    with av.open(str(target)) as container:
        (voice,) = container.streams.audio
        assert (voice.codec_context.name, voice.rate, len(voice.layout.channels)) == ("aac", 48000, 2)
        voice_seconds = sum(frame.samples for frame in container.decode(voice)) / voice.rate
    # Narration wins over `seconds`: at least 4 s, and the video object says what the file holds.
    assert frames / fps >= 4.0 - 0.3
    assert float(video.seconds) == pytest.approx(frames / fps, abs=0.01)
    assert voice_seconds == pytest.approx(float(video.seconds), abs=1 / fps)
    # The Narrator deployment spoke every scene, the Chinese ones in Mandarin.
    for scene in finished["scenes"]:
        assert scene["narrator"] == "espeak", scene
        assert scene["duration_s"] >= scene["narration"]["seconds"]
        if "鲸鱼" in scene["caption"]:
            assert scene["narration"]["language"] == "cmn"
    assert "audio" in finished["variants"]
    track = app.client.get(f"/v1/videos/{created.id}/content", params={"variant": "audio"})
    assert track.status_code == 200 and track.headers["content-type"] == "audio/mp4"

    thumbnail = openai_client.videos.download_content(created.id, variant="thumbnail").read()
    assert Image.open(io.BytesIO(thumbnail)).format == "JPEG"
    spritesheet = openai_client.videos.download_content(created.id, variant="spritesheet").read()
    assert Image.open(io.BytesIO(spritesheet)).width > 0

    captions = app.client.get(f"/v1/videos/{created.id}/content", params={"variant": "captions"})
    assert captions.headers["content-type"].startswith("text/vtt")
    (tmp_path / "c.vtt").write_text(captions.text, encoding="utf-8")
    cues = webvtt.read(str(tmp_path / "c.vtt"))
    # A cue per spoken sentence: together they say every caption.
    said = [sentence["text"] for scene in finished["scenes"] for sentence in scene["narration"]["sentences"]]
    assert [cue.text for cue in cues] == said
    assert "".join(said).replace(" ", "") == "".join(s["caption"] for s in finished["scenes"]).replace(
        " ", ""
    )


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
    assert finished["writer"] == "explicit"
    assert [scene["keyframe_generator"] for scene in finished["scenes"]] == ["reference", "placeholder"]


def test_an_uploaded_clip_is_continued_by_a_create_and_by_an_extension(app):
    # Video to video: the first scene starts from the clip's last frame (tests/integration/test_video_to_video.py
    # checks the frame itself), and says so.
    clip = video_bytes([(200, 30, 30)] * 11 + [(30, 200, 60)])
    created = app.client.post(
        "/v1/videos",
        data={"prompt": "Continue my clip. Then the sea.", "seconds": "2"},
        files={"input_reference": ("clip.mp4", clip, "video/mp4")},
    )
    extended = app.client.post(
        "/v1/videos/extensions",
        data={"prompt": "What happens next.", "seconds": "2"},
        files={"video": ("clip.mp4", clip, "video/mp4")},
    )
    for response in (created, extended):
        assert response.status_code == 200, response.text
        finished = app.wait(response.json()["id"])
        assert finished["status"] == "completed", finished["error"]
        assert finished["scenes"][0]["keyframe_generator"] == "input_video"
    truncated = app.client.post(
        "/v1/videos", data={"prompt": "x"}, files={"input_reference": ("clip.mp4", clip[:500], "video/mp4")}
    )
    assert (truncated.status_code, truncated.json()["error"]["param"]) == (400, "input_reference")


def test_scene_jobs_overlap_and_batch_in_the_svd_deployment(app):
    response = app.client.post("/v1/videos", json={"prompt": PROMPT, "num_scenes": 4, "seconds": 6})
    finished = app.wait(response.json()["id"])
    assert finished["status"] == "completed"
    # The four scenes reached VideoAnimator together: at least two shared one call.
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
    # Sent as written (httpx would resolve the `..` first): the route takes `..` as the id, and the
    # service's own id check refuses it before any path is made of it.
    status, body = raw_get(app, "/v1/videos/../content")
    assert status == 404 and body["error"]["code"] == "video_not_found", body
    status, body = raw_get(app, "/v1/videos/../../etc/passwd/content")
    assert status == 404 and body["error"]["type"] == "not_found_error", body

    created = app.client.post("/v1/videos", json={"prompt": "a long one", "seconds": 12}).json()
    early = app.client.get(f"/v1/videos/{created['id']}/content")
    assert early.status_code == 409 and early.json()["error"]["code"] == "not_ready"
    app.wait(created["id"])


def test_models_and_health(app):
    assert app.client.get("/v1/models").json()["data"][0]["id"] == "svd-xt"
    assert app.client.get("/healthz").json()["status"] == "ok"


def test_storage_holds_only_files_the_service_named(app):
    # Content is served from the job's own folder: a variant outside the enum is refused before any path.
    assert app.storage is not None
    unknown = f"video_{'a' * 32}"
    before = sorted(entry.name for entry in app.storage.iterdir())
    response = app.client.get(f"/v1/videos/{unknown}/content", params={"variant": "../../jobs.sqlite3"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "variant"
    assert b"SQLite format 3" not in response.content
    # The refused request made nothing and took nothing away: no folder for the id, the store in place.
    assert sorted(entry.name for entry in app.storage.iterdir()) == before
    assert not (app.storage / "jobs" / unknown).exists() and (app.storage / "jobs.sqlite3").is_file()


def test_events_stream_progress_until_the_video_finishes(app):
    created = app.client.post("/v1/videos", json={"prompt": PROMPT, "seconds": 6}).json()
    events = []
    with app.client.stream("GET", f"/v1/videos/{created['id']}/events", timeout=120) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: ") and kind == "video":
                events.append(json.loads(line.removeprefix("data: ")))
    # The stream ended by itself at the final status, and progress never went backwards.
    assert events[-1]["status"] == "completed" and events[-1]["progress"] == 100
    progress = [event["progress"] for event in events]
    assert progress == sorted(progress) and len(events) >= 2
    assert app.client.get(f"/v1/videos/video_{'f' * 32}/events").status_code == 404


def test_idempotency_key_returns_the_same_job_and_refuses_another_body(app):
    body = {"prompt": "idempotent " + uuid.uuid4().hex}
    headers = {"Idempotency-Key": uuid.uuid4().hex}
    with ThreadPoolExecutor(8) as pool:
        responses = list(
            pool.map(lambda _: app.client.post("/v1/videos", json=body, headers=headers), range(8))
        )
    assert {response.status_code for response in responses} == {200}
    assert len({response.json()["id"] for response in responses}) == 1  # concurrent duplicates: one job

    other = app.client.post("/v1/videos", json=body | {"seconds": 2}, headers=headers)
    assert other.status_code == 422 and other.json()["error"]["param"] == "Idempotency-Key"
    app.wait(responses[0].json()["id"])


def test_list_pages_with_a_cursor(app):
    ids = [
        app.client.post("/v1/videos", json={"prompt": f"page {i}", "seconds": 2}).json()["id"]
        for i in range(3)
    ]
    newest_first = app.client.get("/v1/videos", params={"limit": 2}).json()
    assert [video["id"] for video in newest_first["data"]] == [ids[2], ids[1]]
    assert newest_first["has_more"] and newest_first["last_id"] == ids[1]
    following = app.client.get("/v1/videos", params={"limit": 2, "after": ids[1]}).json()
    assert following["data"][0]["id"] == ids[0]
    oldest_first = app.client.get("/v1/videos", params={"limit": 1, "order": "asc", "after": ids[1]}).json()
    assert oldest_first["data"][0]["id"] == ids[2]
    bad = app.client.get("/v1/videos", params={"after": "video_" + "9" * 32})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "after"
    for video_id in ids:
        app.wait(video_id)


def test_delete_removes_the_row_and_every_artifact(app):
    created = app.client.post("/v1/videos", json={"prompt": "to delete", "seconds": 2}).json()
    app.wait(created["id"])
    folder = app.storage / "jobs" / created["id"]
    assert any(folder.iterdir())

    deleted = app.client.delete(f"/v1/videos/{created['id']}")
    assert deleted.json() == {"id": created["id"], "object": "video.deleted", "deleted": True}
    assert not folder.exists()
    assert app.client.get(f"/v1/videos/{created['id']}").status_code == 404
    assert app.client.delete(f"/v1/videos/{created['id']}").status_code == 404


def test_cancelling_a_finished_video_is_a_409(app):
    created = app.client.post("/v1/videos", json={"prompt": "quick", "seconds": 2}).json()
    app.wait(created["id"])
    response = app.client.post(f"/v1/videos/{created['id']}/cancel")
    assert response.status_code == 409 and response.json()["error"]["code"] == "already_finished"


def test_json_input_reference_as_a_data_url(app):
    png = io.BytesIO()
    Image.new("RGB", (80, 60), (200, 40, 40)).save(png, format="PNG")
    data_url = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
    response = app.client.post(
        "/v1/videos",
        json={
            "prompt": "From my photo. Then onwards.",
            "seconds": 4,
            "input_reference": {"image_url": data_url},
        },
    )
    assert response.status_code == 200, response.text
    finished = app.wait(response.json()["id"])
    assert [scene["keyframe_generator"] for scene in finished["scenes"]][0] == "reference"
    assert (
        app.client.post(
            "/v1/videos", json={"prompt": "x", "input_reference": {"image_url": "data:image/png;base64,@@@"}}
        ).json()["error"]["param"]
        == "input_reference.image_url"
    )


def test_the_sdk_polls_remixes_edits_and_extends(app, openai_client, tmp_path):
    source = openai_client.videos.create_and_poll(
        prompt="A fox wakes under the snow. It crosses the river.", seconds="4", poll_interval_ms=250
    )
    assert source.status == "completed", source.error
    remix = openai_client.videos.remix(source.id, prompt="A fox sleeps by the fire. It dreams of spring.")
    # openai 3.x refuses `video={"id": ...}` before sending (it wants a file there); `(None, id)` sends the id
    # as a plain form field, which the service takes as the video's id.
    edit = openai_client.videos.edit(prompt="A wolf wakes under the snow.", video=(None, source.id))
    extension = openai_client.videos.extend(
        prompt="Night falls. Stars come out.", seconds="4", video=(None, source.id)
    )
    assert remix.remixed_from_video_id == source.id and edit.remixed_from_video_id == source.id
    done = {
        made.id: openai_client.videos.poll(made.id, poll_interval_ms=250) for made in (remix, edit, extension)
    }
    assert {video.status for video in done.values()} == {"completed"}

    # The extension holds the source, then 4 s more, and says how long its file lasts.
    extended = app.client.get(f"/v1/videos/{extension.id}").json()
    assert extended["extended_from_video_id"] == source.id
    target = tmp_path / "extended.mp4"
    openai_client.videos.download_content(extension.id).write_to_file(target)
    with av.open(str(target)) as container:
        stream = container.streams.video[0]
        seconds = sum(1 for _ in container.decode(stream)) / float(stream.average_rate)
    assert seconds == pytest.approx(float(source.seconds) + 4, abs=0.3)
    assert float(done[extension.id].seconds) == pytest.approx(seconds, abs=0.01)
    inherited = [scene for scene in extended["scenes"] if scene["source_video_id"] == source.id]
    assert len(inherited) == len(app.client.get(f"/v1/videos/{source.id}").json()["scenes"])

    refused = app.client.post("/v1/videos/characters", json={"name": "Fox"})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "unsupported"
