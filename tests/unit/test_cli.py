"""`storyreel`'s arguments, its server-sent-event parser, its scenes files, and how it follows a video.

No server: where HTTP is needed an ``httpx.MockTransport`` answers as the API would.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import httpx
import pytest

from serve_app.client import api as api_client
from serve_app.client import cli
from serve_app.client.api import Api, ApiError, ServerEvent, parse_events
from serve_app.client.cli import main, parse_args, read_scenes

pytestmark = pytest.mark.unit


def _video(status: str, progress: int, scenes: int = 2) -> dict:
    scene = {"status": status, "progress": progress, "caption": "c", "generator": "fallback"}
    return {
        "id": "video_" + "0" * 32,
        "status": status,
        "progress": progress,
        "error": None,
        "title": None,
        "seconds": "4",
        "size": "640x360",
        "scenes": [{**scene, "index": i} for i in range(scenes)],
    }


def _sse(*videos: dict) -> str:
    return "retry: 2000\n\n" + "".join(f"event: video\ndata: {json.dumps(v)}\n\n" for v in videos)


# Arguments


def test_create_takes_every_option(tmp_path: Path) -> None:
    image = tmp_path / "first.png"
    image.write_bytes(b"not checked here")
    args = parse_args(
        ["create", "A fox.", "--seconds", "6", "--size", "640x360", "--style", "ink"]
        + ["--reference", str(image), "--wait", "--out", "fox.mp4"]
    )
    assert (args.prompt, args.seconds, args.size, args.style) == ("A fox.", "6", "640x360", "ink")
    assert args.reference == image and args.wait and args.out == Path("fox.mp4")
    assert args.command is cli._create and args.scenes_file is None


def test_base_url_comes_from_the_option_then_the_environment_then_the_default(monkeypatch) -> None:
    monkeypatch.delenv(cli.BASE_URL_ENV, raising=False)
    assert parse_args(["list"]).base_url == "http://127.0.0.1:8000"
    monkeypatch.setenv(cli.BASE_URL_ENV, "http://gpu-box:8000")
    assert parse_args(["list"]).base_url == "http://gpu-box:8000"
    assert parse_args(["--base-url", "http://a:1", "list"]).base_url == "http://a:1"
    assert parse_args(["list", "--base-url", "http://b:2"]).base_url == "http://b:2"


@pytest.mark.parametrize("argv", [["--json", "list"], ["list", "--json"]])
def test_global_options_go_before_or_after_the_command(argv: list[str]) -> None:
    args = parse_args(argv)
    assert args.json and args.command is cli._list


def test_the_other_commands_parse() -> None:
    assert parse_args(["list", "--limit", "5"]).limit == 5
    for name in ("get", "cancel", "rm"):
        assert parse_args([name, "video_1"]).id == "video_1"
    download = parse_args(["download", "video_1", "--variant", "captions", "--out", "c.vtt"])
    assert (download.variant, download.out) == ("captions", Path("c.vtt"))
    assert parse_args(["download", "video_1"]).variant == "video"
    assert parse_args(["remix", "video_1", "New idea."]).prompt == "New idea."
    extend = parse_args(["extend", "video_1", "Night falls.", "--seconds", "4"])
    assert (extend.id, extend.prompt, extend.seconds) == ("video_1", "Night falls.", "4")
    assert (
        parse_args(["serve"]).profile == "cpu" and parse_args(["serve", "--profile", "gpu"]).profile == "gpu"
    )
    demo = parse_args(["demo"])
    assert (demo.out, demo.profile, demo.seconds, demo.size) == (Path("out/demo"), "cpu", "10", "1280x720")


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["create"],
        ["extend", "video_1", "more"],  # --seconds is required
        ["create", "A fox.", "--out", "fox.mp4"],  # --out needs --wait
        ["download", "video_1", "--variant", "gif"],
        ["list", "--limit", "many"],
        ["serve", "--profile", "tpu"],
        ["create", "A fox.", "--reference", "/no/such/image.png"],
        ["create", "A fox.", "--scenes-file", "/no/such/scenes.txt"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys) -> None:
    assert main(argv) == 2
    assert "usage: storyreel" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--help"], ["serve", "--help"], ["demo", "--help"], ["create", "--help"]])
def test_help_exits_0(argv: list[str], capsys) -> None:
    assert main(argv) == 0
    assert "usage: storyreel" in capsys.readouterr().out


# The event-stream parser


def test_events_are_dispatched_at_blank_lines_skipping_comments_and_other_fields() -> None:
    lines = [
        "retry: 2000",
        "",
        ": keep-alive",
        "",
        "event: video",
        'data: {"a": 1}',
        "",
        "data: first",
        "data:second",
        "id: 7",
        "",
        "event: error",
        "data: gone",
        "",
        "event: video",
        "data: cut off by the end",
    ]
    assert list(parse_events(lines)) == [
        ServerEvent("video", '{"a": 1}'),
        ServerEvent("message", "first\nsecond"),
        ServerEvent("error", "gone"),
    ]


# Scenes files


def test_a_json_scenes_file_keeps_objects_and_turns_strings_into_captions(tmp_path: Path) -> None:
    path = tmp_path / "scenes.json"
    path.write_text(json.dumps([{"caption": "A fox.", "motion": "still"}, "鲸鱼在唱歌。"]), encoding="utf-8")
    assert read_scenes(str(path)) == [{"caption": "A fox.", "motion": "still"}, {"caption": "鲸鱼在唱歌。"}]


def test_a_text_scenes_file_is_one_caption_a_line(tmp_path: Path) -> None:
    path = tmp_path / "scenes.txt"
    path.write_text("  A fox wakes.\n\nIt finds a lantern.  \n", encoding="utf-8")
    assert read_scenes(str(path)) == [{"caption": "A fox wakes."}, {"caption": "It finds a lantern."}]
    assert parse_args(["create", "p", "--scenes-file", str(path)]).scenes_file == read_scenes(str(path))


def test_a_scenes_file_that_is_broken_json_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "scenes.json"
    path.write_text('[{"caption": "A fox."', encoding="utf-8")
    with pytest.raises(argparse.ArgumentTypeError, match="not valid JSON"):
        read_scenes(str(path))


# Talking to the API (a mock transport stands in for the service)


def _api(handler, **options) -> Api:
    return Api("http://storyreel.test/", transport=httpx.MockTransport(handler), **options)


def test_the_apis_message_and_code_become_the_error_and_the_key_is_sent() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        error = {
            "message": "prompt='': at least 1 character",
            "type": "x",
            "param": "prompt",
            "code": "invalid_value",
        }
        return httpx.Response(400, json={"error": error})

    with pytest.raises(ApiError) as raised:
        api_client.create_video(_api(handler, api_key="key-1"), {"prompt": "", "seconds": None})
    assert str(raised.value) == "prompt='': at least 1 character (invalid_value)"
    assert seen[0].headers["authorization"] == "Bearer key-1"
    assert json.loads(seen[0].content) == {"prompt": ""}  # None fields are left out


def test_an_answer_that_is_not_the_apis_envelope_says_the_status() -> None:
    api = _api(lambda request: httpx.Response(502, text="Bad Gateway"))
    with pytest.raises(ApiError, match="HTTP 502 from http://storyreel.test/v1/videos"):
        api.call("GET", "/v1/videos")


def test_a_reference_image_makes_a_multipart_create(tmp_path: Path) -> None:
    image = tmp_path / "first.png"
    image.write_bytes(b"\x89PNG fake")
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=_video("queued", 0))

    body = {"prompt": "A fox.", "seconds": "4", "scenes": [{"caption": "A fox."}], "style": None}
    api_client.create_video(_api(handler), body, reference=image)
    content = seen[0].read()
    assert seen[0].headers["content-type"].startswith("multipart/form-data")
    assert b'name="input_reference"; filename="first.png"' in content and b"\x89PNG fake" in content
    assert b'[{"caption": "A fox."}]' in content and b'name="style"' not in content


@pytest.mark.parametrize(
    "options, fields",
    [
        (["--no-narration"], {"narration": False}),
        (["--voice", "en-GB", "--burn-subtitles"], {"narration": {"voice": "en-GB"}, "burn_subtitles": True}),
        (["--music", "calm"], {"music": "calm"}),
    ],
)
def test_narration_options_become_create_fields(options, fields) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=_video("queued", 0))

    args = cli.build_parser().parse_args(["create", "A fox.", *options])
    args.base_url = "http://storyreel.test/"
    cli._create(_api(handler), args)

    sent = json.loads(seen[0].read())
    assert {key: sent[key] for key in fields} == fields


def test_a_music_file_is_uploaded_beside_the_fields(tmp_path: Path) -> None:
    bed = tmp_path / "bed.wav"
    bed.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt ")
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=_video("queued", 0))

    args = cli.build_parser().parse_args(["create", "A fox.", "--music", str(bed)])
    cli._create(_api(handler), args)

    content = seen[0].read()
    assert b'name="music"; filename="bed.wav"' in content and b'name="prompt"' in content


def test_following_a_video_reconnects_when_the_stream_ends_early(monkeypatch, capsys) -> None:
    monkeypatch.setattr(api_client, "RECONNECT_S", 0)
    streams = [
        _sse(_video("in_progress", 30)),
        _sse(),
        _sse(_video("in_progress", 60), _video("completed", 100)),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path.endswith("/events")
        return httpx.Response(200, text=streams.pop(0), headers={"content-type": "text/event-stream"})

    video = api_client.follow_video(_api(handler), _video("queued", 0, scenes=0))
    assert video["status"] == "completed" and streams == []
    bars = capsys.readouterr().err
    assert "scene 0" in bars and "scene 1" in bars and "completed" in bars


def test_an_error_event_stops_following() -> None:
    stream = 'event: error\ndata: {"error": {"code": "video_not_found", "message": "it was deleted"}}\n\n'
    api = _api(lambda request: httpx.Response(200, text=stream))
    with pytest.raises(ApiError, match=r"it was deleted \(video_not_found\)"):
        api_client.follow_video(api, _video("in_progress", 10), progress=False)


def test_a_video_that_failed_is_an_error_with_its_message() -> None:
    failed = _video("failed", 40) | {"error": {"code": "media_error", "message": "ffmpeg gave up"}}
    with pytest.raises(ApiError, match=r"failed: ffmpeg gave up \(media_error\)"):
        api_client.ensure_completed(failed)
    with pytest.raises(ApiError, match="cancelled$"):
        api_client.ensure_completed(_video("cancelled", 40))
    api_client.ensure_completed(_video("completed", 100))


def test_an_unreachable_service_is_named(capsys) -> None:
    assert main(["--base-url", "http://127.0.0.1:9", "get", "video_1"]) == 1
    assert "could not reach http://127.0.0.1:9" in capsys.readouterr().err
