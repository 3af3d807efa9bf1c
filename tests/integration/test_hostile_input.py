"""A hostile client against the API in-process (FastAPI's app, the real service, no Ray): every bad input is
a 4xx in the envelope naming the field, and nothing is stored for a request that is refused."""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
import wave
from pathlib import Path

import pytest
from PIL import Image

from serve_app.api.bodies import MAX_FORM_FIELD_BYTES, MAX_JSON_DEPTH
from serve_app.videos import uploads
from tests.fixtures.jobs import job_row
from tests.fixtures.media import flac_header, wav_bytes

pytestmark = pytest.mark.integration


def stored(service) -> tuple[list, list[Path]]:
    """Every job row and every job folder the service has."""
    jobs = Path(service.config.storage.root) / "jobs"
    return service.store.page(None, 100, "desc")[0], sorted(jobs.glob("*")) if jobs.exists() else []


def assert_refused(response, status: int, code: str, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    if param is not None:
        assert error["param"] == param, error
    return error


def form(**fields: str | list[str]) -> list[tuple[str, tuple[None, str]]]:
    """Multipart text fields, as the OpenAI SDK sends them (httpx would send a plain `data=` urlencoded)."""
    return [
        (name, (None, value))
        for name, values in fields.items()
        for value in (values if isinstance(values, list) else [values])
    ]


def png(width: int = 32, height: int = 24) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


def png_with_garbage_exif() -> bytes:
    """A PNG Pillow opens, whose eXIf chunk fails only when the orientation is read (was a 500)."""
    import struct
    import zlib

    data = png()
    payload = b"not a tiff header at all"
    chunk = struct.pack(">I", len(payload)) + b"eXIf" + payload
    chunk += struct.pack(">I", zlib.crc32(b"eXIf" + payload))
    end = data.rindex(b"IEND") - 4
    return data[:end] + chunk + data[end:]


# -- uploads ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "upload",
    [
        png_with_garbage_exif(),
        png()[:60],  # truncated
        b"GIF89a" + png()[6:],  # wrong magic
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 100,  # garbage after the signature
    ],
    ids=["garbage-exif", "truncated", "wrong-magic", "garbage"],
)
def test_a_hostile_upload_is_a_400_and_leaves_nothing_in_storage(client, local_service, upload):
    response = client.post(
        "/v1/videos", data={"prompt": "an upload"}, files={"input_reference": ("x.png", upload)}
    )
    assert_refused(response, 400, "invalid_image", "input_reference")
    assert stored(local_service) == ([], [])


def wav_promising_more_than_it_holds() -> bytes:
    """A bare WAV header whose sizes claim about 4 GB of samples (a day of them at 16 kHz) and holds none."""
    header = bytearray(wav_bytes(0))
    header[4:8] = (0xFFFFFFF8).to_bytes(4, "little")  # the RIFF size
    header[40:44] = (0xFFFFFFF0).to_bytes(4, "little")  # the data chunk's size
    return bytes(header)


def silent_wav(seconds: float, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(rate)
        file.writeframes(bytes(2 * round(seconds * rate)))
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("upload", "found"),
    [
        (wav_bytes(0), "holds 0.00 s of wav audio"),  # the issue's 44-byte WAV: a loop for ever at the stitch
        (flac_header(), "holds 0.00 s of flac audio"),  # was accepted, then failed the job at its stitch
        (flac_header(total_samples=44100 * 3600), "holds 0.00 s of flac audio"),  # an hour, in the header
        (wav_promising_more_than_it_holds(), "holds 0.00 s of wav audio"),
        (wav_bytes(0.2), "holds 0.20 s of wav audio"),  # a fraction of a second loops into a buzz
        (wav_bytes(3)[: 44 + 3200], "holds 0.10 s of wav audio"),  # truncated: 0.1 s of the 3 s it says
        (b"ID3\x03" + bytes(6) + b"junk" * 100, "is not a readable mp3 audio file"),
        (silent_wav(3), "is silent: its first 3 s hold no sound"),  # no loudness to normalise: NaN in the mix
    ],
    ids=[
        "bare-wav",
        "bare-flac",
        "flac-claiming-an-hour",
        "wav-claiming-4gb",
        "0.2s-wav",
        "truncated-wav",
        "junk-mp3",
        "3s-of-silence",
    ],
)
def test_music_that_holds_no_sound_is_a_400_naming_music(client, local_service, upload, found):
    response = client.post("/v1/videos", files=[*form(prompt="music"), ("music", ("bed.audio", upload))])
    error = assert_refused(response, 400, "invalid_value", "music")
    assert found in error["message"] and "music" in error["message"]
    assert stored(local_service) == ([], [])


def test_a_second_of_music_is_accepted(client, local_service):
    response = client.post("/v1/videos", files=[*form(prompt="music"), ("music", ("bed.wav", wav_bytes(1)))])
    assert response.status_code == 200, response.text
    music = Path(local_service.config.storage.root) / "jobs" / response.json()["id"] / "music.audio"
    assert music.read_bytes() == wav_bytes(1)


def test_formats_outside_the_list_are_refused_as_upload_and_data_url(client, local_service):
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, format="GIF")
    response = client.post(
        "/v1/videos", data={"prompt": "gif"}, files={"input_reference": ("x.gif", gif.getvalue())}
    )
    assert_refused(response, 400, "invalid_image", "input_reference")
    import base64

    url = "data:image/gif;base64," + base64.b64encode(gif.getvalue()).decode()
    response = client.post("/v1/videos", json={"prompt": "gif", "input_reference": {"image_url": url}})
    assert_refused(response, 400, "invalid_image", "input_reference.image_url")
    assert stored(local_service) == ([], [])


def test_a_good_upload_is_decoded_off_the_event_loop_and_stored_as_png(client, local_service, monkeypatch):
    threads = []
    decode = uploads.decode_image

    def recording(data, param, **options):
        threads.append(threading.current_thread())
        return decode(data, param, **options)

    monkeypatch.setattr(uploads, "decode_image", recording)
    response = client.post(
        "/v1/videos", data={"prompt": "an upload"}, files={"input_reference": ("x.png", png(40, 30))}
    )
    assert response.status_code == 200, response.text
    assert threads and threads[0] is not threading.main_thread()
    # The TestClient's loop runs in a thread of its own: the decode ran in neither.
    assert threads[0].name.startswith("asyncio")
    reference = (
        Path(local_service.config.storage.root) / "jobs" / response.json()["id"] / "input_reference.png"
    )
    with Image.open(reference) as image:
        assert (image.format, image.mode, image.size) == ("PNG", "RGB", (40, 30))


# -- JSON -------------------------------------------------------------------------------------------


HOSTILE_JSON = {
    "deep": '{"prompt": "x", "scenes": ' + "[" * 100_000 + "]" * 100_000 + "}",
    "nested past the limit": '{"prompt": "x", "scenes": '
    + "[" * (MAX_JSON_DEPTH + 1)
    + "]" * (MAX_JSON_DEPTH + 1)
    + "}",
    "huge integer": '{"prompt": "x", "seed": ' + "9" * 5000 + "}",
    "NaN": '{"prompt": "x", "seconds": NaN}',
    "Infinity": '{"prompt": "x", "seconds": Infinity}',
    "1e999": '{"prompt": "x", "scenes": [{"caption": "a", "duration_s": 1e999}]}',
    "syntax": '{"prompt": "x",',
}


@pytest.mark.parametrize("text", HOSTILE_JSON.values(), ids=HOSTILE_JSON.keys())
def test_json_the_parser_refuses_is_a_400_naming_the_body(client, local_service, text):
    response = client.post("/v1/videos", content=text, headers={"content-type": "application/json"})
    assert_refused(response, 400, "invalid_json", "body")
    assert stored(local_service) == ([], [])


def test_invalid_utf8_is_a_400(client):
    response = client.post(
        "/v1/videos", content=b'{"prompt": "\xff\xfe"}', headers={"content-type": "application/json"}
    )
    assert_refused(response, 400, "invalid_json", "body")


FORM_JSON = {
    "deep": "[" * 100_000 + "]" * 100_000,
    "nested past the limit": "[" * 40 + "]" * 40,
    "huge integer": "9" * 5000,
    "1e999": '[{"caption": "a", "duration_s": 1e999}]',
    "syntax": "[{",
}


@pytest.mark.parametrize("text", FORM_JSON.values(), ids=FORM_JSON.keys())
def test_json_form_fields_go_through_the_same_parser(client, local_service, text):
    response = client.post("/v1/videos", files=form(prompt="x", scenes=text))
    assert_refused(response, 400, "invalid_json", "scenes")
    assert stored(local_service) == ([], [])


@pytest.mark.parametrize("seconds", ["inf", "nan", "-inf", "1e999"])
def test_non_finite_numbers_in_form_fields_are_refused(client, seconds):
    response = client.post("/v1/videos", files=form(prompt="x", seconds=seconds))
    assert_refused(response, 400, "invalid_value", "seconds")


def test_a_form_field_given_twice_or_a_second_file_is_refused(client):
    twice = client.post("/v1/videos", files=form(prompt=["a", "b"]))
    assert_refused(twice, 400, "invalid_value", "prompt")
    other_file = client.post("/v1/videos", files=[*form(prompt="x"), ("style", ("s.txt", b"watercolor"))])
    assert_refused(other_file, 400, "invalid_value", "style")


@pytest.mark.parametrize(
    "route, fields, param",
    [
        ("/v1/videos", {"prompt": "p" * (MAX_FORM_FIELD_BYTES + 1)}, "prompt"),
        (
            "/v1/videos",
            {"prompt": "x", "style": "é" * (MAX_FORM_FIELD_BYTES // 2 + 1)},
            "style",
        ),  # bytes, not characters
        ("/v1/videos", {"prompt": "x", "scenes": "[" + " " * MAX_FORM_FIELD_BYTES + "]"}, "scenes"),
        ("/v1/videos/edits", {"prompt": "x", "video[id]": "v" * (MAX_FORM_FIELD_BYTES + 1)}, "video[id]"),
    ],
    ids=["prompt", "multibyte", "json-field", "nested"],
)
def test_a_form_field_over_its_size_limit_is_named(client, local_service, route, fields, param):
    error = assert_refused(client.post(route, files=form(**fields)), 400, "invalid_value", param)
    assert f"at most {MAX_FORM_FIELD_BYTES} bytes" in error["message"] and len(error["message"]) < 200
    assert stored(local_service) == ([], [])


def test_a_form_field_at_its_size_limit_passes_the_form(client):
    # Refused for its length by the schema, not by the form's bound on a field.
    response = client.post("/v1/videos", files=form(prompt="x", style="s" * MAX_FORM_FIELD_BYTES))
    error = assert_refused(response, 400, "invalid_value", "style")
    assert "limits.max_style_chars" in error["message"]


# The README's numbers written out: the tests above follow the constants, these hold the constants to the README.
README_FORM_FIELDS, README_FORM_FIELD_BYTES = 48, 2**20


def test_a_form_of_more_than_48_fields_is_refused_naming_the_limit(client, local_service):
    extra = {f"extra_{i}": "v" for i in range(README_FORM_FIELDS)}
    response = client.post("/v1/videos", files=form(prompt="x", **extra))
    assert response.status_code == 400, response.text
    assert f"{README_FORM_FIELDS}" in response.json()["error"]["message"]
    assert stored(local_service) == ([], [])
    # 48 fields pass the form: the schema refuses the first field it does not know, by name.
    extra.pop(f"extra_{README_FORM_FIELDS - 1}")
    response = client.post("/v1/videos", files=form(prompt="x", **extra))
    assert_refused(response, 400, "invalid_value", "extra_0")


def test_a_form_field_of_one_mib_and_a_byte_is_refused_naming_it(client, local_service):
    response = client.post("/v1/videos", files=form(prompt="x", style="s" * (README_FORM_FIELD_BYTES + 1)))
    error = assert_refused(response, 400, "invalid_value", "style")
    assert f"at most {README_FORM_FIELD_BYTES} bytes" in error["message"]
    assert stored(local_service) == ([], [])


# -- content types and origins ------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", None])
def test_posts_that_are_not_json_or_a_form_are_415(client, local_service, content_type):
    headers = {"content-type": content_type} if content_type else {}
    response = client.post("/v1/videos", content=json.dumps({"prompt": "csrf"}), headers=headers)
    assert_refused(response, 415, "unsupported_media_type", "content-type")
    assert stored(local_service) == ([], [])


def test_a_cross_site_cancel_is_refused_and_a_same_site_one_is_not(client):
    video = client.post("/v1/videos", json={"prompt": "Dawn. Noon."}).json()
    plain = client.post(f"/v1/videos/{video['id']}/cancel", headers={"content-type": "text/plain"})
    assert_refused(plain, 415, "unsupported_media_type")
    evil = {"origin": "https://evil.example", "content-type": "application/json"}
    cross = client.post(f"/v1/videos/{video['id']}/cancel", headers=evil)
    assert_refused(cross, 403, "cross_origin_request", "origin")
    deleted = client.delete(f"/v1/videos/{video['id']}", headers={"origin": "https://evil.example"})
    assert_refused(deleted, 403, "cross_origin_request")
    assert "access-control-allow-origin" not in cross.headers  # no CORS unless configured
    # Without Origin and without a body (curl -X POST), a cancel needs no content type.
    assert client.post(f"/v1/videos/{video['id']}/cancel").status_code in (200, 409)
    same = client.post(
        f"/v1/videos/{video['id']}/cancel",
        headers={"origin": "http://testserver", "content-type": "application/json"},
    )
    assert same.status_code in (200, 409), same.text  # 409 if the tiny job finished first


def test_configured_origins_get_cors_through_starlettes_middleware(client, local_service):
    local_service.config.cors.allowed_origins = ["https://studio.example"]
    preflight = client.options(
        "/v1/videos",
        headers={
            "origin": "https://studio.example",
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type, authorization",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://studio.example"
    created = client.post(
        "/v1/videos", json={"prompt": "from the studio"}, headers={"origin": "https://studio.example"}
    )
    assert (
        created.status_code == 200
        and created.headers["access-control-allow-origin"] == "https://studio.example"
    )
    other = client.post("/v1/videos", json={"prompt": "x"}, headers={"origin": "https://evil.example"})
    assert_refused(other, 403, "cross_origin_request")
    assert "access-control-allow-origin" not in other.headers


# -- bounds ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param", "limit"),
    [
        ({"prompt": "x", "scenes": [{"caption": "c" * 100_000}]}, "scenes.0.caption", "max_caption_chars"),
        (
            {"prompt": "x", "scenes": [{"caption": "c", "visual_prompt": "v" * 5000}]},
            "scenes.0.visual_prompt",
            "max_visual_prompt_chars",
        ),
        ({"prompt": "x", "style": "s" * 1000}, "style", "max_style_chars"),
        ({"prompt": "p" * 5000}, "prompt", "max_prompt_chars"),
        ({"prompt": "x", "scenes": [{"caption": "c"}] * 9}, "scenes", "max_scenes"),
        ({"prompt": "x", "size": "1280x720\n"}, "size", None),
    ],
    ids=["caption", "visual_prompt", "style", "prompt", "scenes", "size-newline"],
)
def test_bounds_name_the_field_and_the_limit(client, local_service, body, param, limit):
    error = assert_refused(client.post("/v1/videos", json=body), 400, "invalid_value", param)
    if limit:
        assert f"limits.{limit}" in error["message"]
    assert len(error["message"]) < 400  # the value is shown shortened, never whole
    assert stored(local_service) == ([], [])


@pytest.mark.parametrize(
    "narration, param, reason",
    [
        ({"voice": "xx-nope"}, "narration.voice", "is not an eSpeak NG voice"),
        ({"rate": 9}, "narration.rate", "less than or equal to 2"),
        ({"rate": "fast"}, "narration.rate", "valid number"),
        ({"language": "zz"}, "narration.language", "no voice for this language"),
        ({"language": "EN-us-x"}, "narration.language", "should match pattern"),
        ({"voice": "en", "speed": 2}, "narration.speed", "Extra inputs are not permitted"),
        # A key named as pydantic names the union's members is still just an extra key.
        ({"NarrationOptions": {"voice": "en"}}, "narration.NarrationOptions", "Extra inputs"),
        (5, "narration", "a boolean, an object or null"),
        ([True], "narration", "a boolean, an object or null"),
    ],
)
@pytest.mark.parametrize("as_form", [False, True], ids=["json", "multipart"])
def test_a_union_field_names_the_member_the_client_meant(
    client, local_service, narration, param, reason, as_form
):
    # `narration` is true, false or an object: the error is the object's (or, for neither, the field's), not
    # "narration.bool: Input should be a valid boolean".
    if as_form:
        response = client.post("/v1/videos", files=form(prompt="x", narration=json.dumps(narration)))
    else:
        response = client.post("/v1/videos", json={"prompt": "x", "narration": narration})
    error = assert_refused(response, 400, "invalid_value", param)
    assert reason in error["message"] and error["message"].startswith(f"{param}=")
    assert "boolean" not in error["message"] or param == "narration"
    assert "Value error" not in error["message"]
    assert stored(local_service) == ([], [])


def test_two_hundred_thousand_scenes_are_refused_by_the_count_alone(client, monkeypatch):
    from serve_app import protocol

    built = []
    monkeypatch.setattr(protocol.SceneSpec, "model_post_init", lambda self, _: built.append(1))
    body = {"prompt": "x", "scenes": [{"caption": "c"}] * 200_000}
    started = time.monotonic()
    error = assert_refused(client.post("/v1/videos", json=body), 400, "invalid_value", "scenes")
    assert "at most 8 scenes" in error["message"] and built == []
    assert time.monotonic() - started < 5  # the JSON is ~3 MB; no scene object is ever made


# -- body size and time -------------------------------------------------------------------------------


def test_a_chunked_body_over_the_limit_is_a_413(client, local_service):
    limit = local_service.config.limits.max_body_bytes
    sent = []

    def chunks():
        for _ in range(limit // 65536 + 4):
            sent.append(1)
            yield b" " * 65536

    response = client.post("/v1/videos", content=chunks(), headers={"content-type": "application/json"})
    assert_refused(response, 413, "request_too_large")
    assert stored(local_service) == ([], [])


def test_a_file_over_the_limit_is_a_413(client, local_service):
    limit = local_service.config.limits.max_body_bytes
    response = client.post(
        "/v1/videos", data={"prompt": "x"}, files={"input_reference": ("x.png", b"\0" * (limit + 1))}
    )
    assert_refused(response, 413, "request_too_large")
    assert stored(local_service) == ([], [])


# -- event stream slots ---------------------------------------------------------------------------------


def test_a_stream_gives_its_slot_back_when_closed_or_dropped_unstarted(local_service):
    import gc

    async def scenario():
        job_id = await create_job(local_service)
        local_service.config.limits.max_event_streams = 2
        first = local_service.open_events(job_id)
        assert (await anext(first)).startswith("retry: ")
        local_service.open_events(job_id)  # never iterated, then dropped (a client gone before it began)
        gc.collect()
        assert len(local_service.hub._streams) == 1
        second = local_service.open_events(job_id)
        with pytest.raises(Exception) as refused:
            local_service.open_events(job_id)
        await first.aclose()  # what Serve's cancel of a departed client's request comes to
        held = len(local_service.hub._streams)
        del second
        gc.collect()
        return refused.value, held, len(local_service.hub._streams)

    refused, held, after = asyncio.run(scenario())
    assert getattr(refused, "code", None) == "too_many_streams"
    assert (held, after) == (1, 0)


def test_a_quiet_stream_sends_a_keep_alive_after_its_quiet_interval_and_only_then(local_service, monkeypatch):
    from serve_app.videos import events

    assert events.EVENT_KEEPALIVE_S == 15.0  # the README's figure, under proxies' usual 30-60 s idle limits
    monkeypatch.setattr(events, "EVENT_KEEPALIVE_S", 0.6)  # the same loop, sooner
    monkeypatch.setattr(events, "EVENT_POLL_S", 0.05)

    # Queued, and held by a live runner elsewhere: nothing here changes it.
    job_id = "video_" + "d" * 32
    local_service.store.create(
        job_row(job_id, "queued", runner_id="elsewhere", lease_until=time.time() + 3600)
    )

    async def scenario() -> tuple[list[str], float]:
        stream = local_service.open_events(job_id)
        chunks = [await anext(stream), await anext(stream)]
        started = time.monotonic()
        chunks.append(await asyncio.wait_for(anext(stream), 30))  # only guards against a hang
        waited = time.monotonic() - started
        await stream.aclose()
        return chunks, waited

    (retry, video, keep_alive), waited = asyncio.run(scenario())
    assert retry.startswith("retry: ") and video.startswith("event: video\n")
    assert keep_alive == ": keep-alive\n\n"  # a comment line: EventSource and our clients skip it
    assert waited >= 0.6  # sent once the stream was quiet that long, not at every poll


async def create_job(service) -> str:
    from serve_app.protocol import CreateVideoRequest

    return (await service.create(CreateVideoRequest(prompt="Dawn. Dusk."), None, None)).id


@pytest.mark.parametrize(
    "body, param",
    [
        ({"prompt": "\r"}, "prompt"),
        ({"prompt": " \t\u200b\x00 "}, "prompt"),
        ({"prompt": "A fox.", "scenes": [{"caption": "\n"}]}, "scenes.0.caption"),
        (
            {"prompt": "A fox.", "scenes": [{"caption": "A fox.", "visual_prompt": "\u2028"}]},
            "scenes.0.visual_prompt",
        ),
    ],
)
def test_a_text_of_only_spaces_or_control_characters_is_refused_not_failed_later(
    client, local_service, body, param
):
    # What the API fuzzer found: a prompt of "\r" was accepted, and its job failed in the writer.
    for path in ("/v1/videos", "/v1/videos/sync"):
        error = assert_refused(client.post(path, json=body), 400, "invalid_value", param)
        assert "only spaces or control characters" in error["message"]
    assert stored(local_service) == ([], [])
