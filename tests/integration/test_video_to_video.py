"""Video to video over the API in process (the real service and engines, title cards, real encoding): an
uploaded MP4, MOV or WebM is continued from its last frame, by a create and by an extension, and the
first scene says so; a bad clip is a 400 naming its field and stores nothing."""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from core.files import REFERENCE_SOURCE_KEY, JobFiles
from core.status import KeyframeSource
from serve_app.api import ingress
from tests.fixtures.jobs import assert_refused, completed, multipart, service_with, stages_with
from tests.fixtures.media import video_bytes

pytestmark = pytest.mark.integration

RED, GREEN = (220, 30, 30), (30, 200, 60)
CLIP = video_bytes([RED] * 11 + [GREEN], "mp4")  # its last frame is green


class KeyframeLog:
    """A painter stage that hands every call on and keeps each keyframe it was asked for."""

    def __init__(self, painter) -> None:
        self.painter = painter
        self.keyframes: list = []

    def paint(self, keyframe):
        self.keyframes.append(keyframe)
        return self.painter.paint(keyframe)


@pytest.fixture
def logged(local_config):
    """A client of a service whose painter keeps the keyframes asked of it, and that log."""
    log = KeyframeLog(stages_with(local_config).painter)
    service = service_with(local_config, painter=log)
    ingress.install(service)
    with TestClient(ingress.app) as client:
        yield client, service, log


def mean_color(image: Image.Image) -> tuple[float, ...]:
    pixels = list(image.convert("RGB").getdata())
    return tuple(sum(channel) / len(pixels) for channel in zip(*pixels, strict=True))


def assert_starts_from_the_clips_last_frame(video: dict, log: KeyframeLog) -> None:
    assert [scene["keyframe_generator"] for scene in video["scenes"]][:1] == ["input_video"]
    # Scenes start side by side: the log's order is not theirs. One keyframe is the clip's, the rest painted.
    sources = sorted(spec.source for spec in log.keyframes)
    assert sources == sorted(
        [KeyframeSource.INPUT_VIDEO] + [KeyframeSource.PAINTER] * (len(video["scenes"]) - 1)
    )
    [first] = [spec for spec in log.keyframes if spec.source == KeyframeSource.INPUT_VIDEO]
    assert max(abs(a - b) for a, b in zip(mean_color(first.image), GREEN, strict=True)) < 12


@pytest.mark.slow
@pytest.mark.parametrize(
    ("container", "codec", "media_type"),
    [
        ("mp4", "libx264", "video/mp4"),
        ("mov", "libx264", "video/quicktime"),
        ("webm", "libvpx-vp9", "video/webm"),
    ],
)
def test_an_uploaded_clip_is_continued_from_its_last_frame(logged, container, codec, media_type):
    client, service, log = logged
    clip = video_bytes([RED] * 11 + [GREEN], container, codec)
    response = client.post(
        "/v1/videos",
        files=[
            *multipart(prompt="A fox. The sea.", seconds=2),
            ("input_reference", (f"c.{container}", clip, media_type)),
        ],
    )
    assert response.status_code == 200, response.text
    video = completed(client, response.json()["id"])
    assert_starts_from_the_clips_last_frame(video, log)
    assert len(video["scenes"]) == 2
    files = JobFiles(service.config.storage.root, video["id"])
    with Image.open(files.local(files.reference)) as stored:
        assert stored.info[REFERENCE_SOURCE_KEY] == "input_video"


@pytest.mark.slow
def test_a_remix_of_a_continued_clip_starts_from_the_same_frame(logged):
    client, _, log = logged
    upload = [("input_reference", ("c.mp4", CLIP, "video/mp4"))]
    source = completed(
        client,
        client.post("/v1/videos", files=[*multipart(prompt="A fox.", seconds=1), *upload]).json()["id"],
    )
    log.keyframes.clear()
    remix = client.post(f"/v1/videos/{source['id']}/remix", json={"prompt": "A wolf."})
    assert_starts_from_the_clips_last_frame(completed(client, remix.json()["id"]), log)


@pytest.mark.slow
def test_an_extension_may_take_the_clip_itself(logged):
    client, _, log = logged
    response = client.post(
        "/v1/videos/extensions",
        files=[*multipart(prompt="Then the sea.", seconds=2), ("video", ("c.mp4", CLIP, "video/mp4"))],
    )
    assert response.status_code == 200, response.text
    video = completed(client, response.json()["id"])
    assert_starts_from_the_clips_last_frame(video, log)
    # The clip is not part of the result: it lasts what was asked, and extends no stored video.
    assert float(video["seconds"]) == pytest.approx(2, abs=0.2)
    assert video["extended_from_video_id"] is None


def test_a_bad_clip_is_a_400_naming_its_field_and_stores_nothing(logged):
    client, service, _ = logged
    truncated = CLIP[: len(CLIP) // 2]
    create = client.post(
        "/v1/videos",
        files=[*multipart(prompt="A fox."), ("input_reference", ("c.mp4", truncated, "video/mp4"))],
    )
    assert "MP4, MOV or WebM" in assert_refused(create, "input_reference")
    extension = client.post(
        "/v1/videos/extensions",
        files=[*multipart(prompt="A fox.", seconds=1), ("video", ("c.mp4", truncated, "video/mp4"))],
    )
    assert "MP4, MOV or WebM" in assert_refused(extension, "video")
    # An image is a create's reference, not a clip to extend.
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    png = buffer.getvalue()
    image = client.post(
        "/v1/videos/extensions",
        files=[*multipart(prompt="A fox.", seconds=1), ("video", ("c.png", png, "image/png"))],
    )
    assert "MP4, MOV or WebM file" in assert_refused(image, "video")
    # A clip and a stored video's id: two sources for one extension.
    both = client.post(
        "/v1/videos/extensions",
        files=[
            *multipart(prompt="A fox.", seconds=1, **{"video[id]": "video_" + "0" * 32}),
            ("video", ("c.mp4", CLIP, "video/mp4")),
        ],
    )
    assert_refused(both, "video")
    assert service.store.page(None, 10, "desc")[0] == []
