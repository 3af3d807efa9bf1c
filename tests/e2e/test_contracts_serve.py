"""The contracts of bad and odd input through the real service (the CPU profile over Ray Serve and HTTP): audio
that says nothing, errors that name what the client sent, a Range header judged one way, and the pages'
security headers. The engines and the ASGI app test each in depth; this proves the deployed graph keeps them."""

from __future__ import annotations

import pytest

from tests.fixtures.media import flac_header, wav_bytes
from tests.fixtures.serve import Deployed

pytestmark = pytest.mark.e2e

UNKNOWN = "video_" + "0" * 32


@pytest.fixture(scope="module")
def app(cpu_app: Deployed) -> Deployed:
    return cpu_app


def error_of(response) -> dict:
    assert response.status_code == 400, response.text
    return response.json()["error"]


@pytest.mark.parametrize(
    "upload", [wav_bytes(0), flac_header(), wav_bytes(0.2)], ids=["bare-wav", "bare-flac", "0.2s"]
)
def test_music_that_holds_no_sound_is_refused_naming_music(app, upload):
    response = app.client.post(
        "/v1/videos", data={"prompt": "A map."}, files={"music": ("bed.audio", upload)}
    )
    assert error_of(response)["param"] == "music"


@pytest.mark.parametrize(
    ("narration", "param"),
    [
        ({"voice": "xx-nope"}, "narration.voice"),
        ({"voice": "fo"}, "narration.voice"),  # shipped without its data: a voice that says nothing
        ({"rate": 9}, "narration.rate"),
        ({"language": "klingon"}, "narration.language"),
        ({"loud": True}, "narration.loud"),
    ],
)
def test_a_bad_narration_object_names_the_field_the_client_sent(app, narration, param):
    error = error_of(app.client.post("/v1/videos", json={"prompt": "A map.", "narration": narration}))
    assert error["param"] == param and "boolean" not in error["message"]


def test_an_edit_of_an_unknown_video_names_video_id_as_the_body_wrote_it(app):
    response = app.client.post("/v1/videos/edits", json={"prompt": "x", "video": {"id": UNKNOWN}})
    assert response.status_code == 404 and response.json()["error"]["param"] == "video.id"


def test_a_field_over_a_mebibyte_is_named(app):
    response = app.client.post("/v1/videos", files={"prompt": (None, "x" * (1024 * 1024 + 1))})
    assert error_of(response)["param"] == "prompt"


@pytest.fixture(scope="module")
def finished(app: Deployed) -> dict:
    """A video whose first scene's voice says nothing (Arabic tatweels) and whose second speaks."""
    scenes = [{"caption": "ـــــ ـــ"}, {"caption": "The keeper lights the lamp."}]
    video = app.client.post("/v1/videos", json={"prompt": "x", "scenes": scenes, "seconds": "4"}).json()
    return app.wait(video["id"])


def test_a_scene_whose_voice_says_nothing_completes_the_video_and_says_so(finished):
    assert finished["status"] == "completed", finished
    silent, spoken = finished["scenes"]
    assert silent["narrator"] is None and silent["narration"]["silent"] and spoken["narrator"] == "espeak"
    assert [notice["code"] for notice in finished["notices"]] == ["silent_narration"]
    assert "audio" in finished["variants"]


@pytest.mark.parametrize("header", ["bytes=5-1", "bytes=abc", "items=0-1", "bytes=0-1,4-5"])
def test_a_malformed_range_is_ignored_and_the_whole_file_sent(app, finished, header):
    url = f"/v1/videos/{finished['id']}/content"
    whole = app.client.get(url).content
    response = app.client.get(url, headers={"Range": header})
    assert response.status_code == 200 and response.content == whole


def test_a_range_past_the_end_is_416_in_the_error_envelope(app, finished):
    response = app.client.get(f"/v1/videos/{finished['id']}/content", headers={"Range": "bytes=999999999-"})
    assert response.status_code == 416 and response.json()["error"]["code"] == "range_not_satisfiable"


def test_pages_and_answers_carry_their_security_headers(app):
    studio = app.client.get("/")
    assert "script-src 'self'" in studio.headers["content-security-policy"]
    assert "'unsafe-inline'" not in studio.headers["content-security-policy"]
    for response in (studio, app.client.get("/v1/models"), app.client.get(f"/v1/videos/{UNKNOWN}")):
        assert response.headers["x-content-type-options"] == "nosniff"
