"""The README's code snippets, run as written against the CPU profile (only the host and port differ)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from engines.narrator.narrator import write_wav
from tests.fixtures.media import video_bytes
from tests.fixtures.serve import Deployed

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

README = Path(__file__).parents[2] / "README.md"
DOCUMENTED = "http://127.0.0.1:8000"


def snippets(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.DOTALL)


def api_snippets() -> list[str]:
    """The snippets that call the API (not the ones that install or start things)."""
    return [s for s in snippets("python") + snippets("bash") if "/v1" in s or "localhost:8000" in s]


@pytest.fixture(scope="module")
def app(cpu_app: Deployed) -> Deployed:
    return cpu_app


def test_the_readme_has_the_snippets_this_file_runs():
    assert len(snippets("python")) >= 1 and any("curl" in s for s in snippets("bash"))
    # The LiteLLM snippet runs in tests/e2e/test_litellm_serve.py, beside the rest of LiteLLM's calls.
    assert len(api_snippets()) == 8, "a new API snippet in the README needs a test here"


def run_snippet(app: Deployed, command: str, cwd: Path, timeout: float = 120) -> str:
    """Run a README shell snippet in ``cwd`` against ``app`` (only the host and port differ); its stdout."""
    command = command.replace("localhost:8000", app.url.removeprefix("http://"))
    done = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {command}"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, (command, done.stderr)
    return done.stdout


def python_snippet(marker: str) -> str:
    (code,) = [snippet for snippet in snippets("python") if marker in snippet]
    return code


def test_the_python_snippet_makes_and_downloads_a_video(app, tmp_path, monkeypatch, capsys):
    code = python_snippet("download_content")
    monkeypatch.chdir(tmp_path)
    exec(compile(code.replace(DOCUMENTED, app.url), "README.md", "exec"), {})

    assert capsys.readouterr().out.startswith("completed 100 ")
    with av.open(str(tmp_path / "video.mp4")) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.width, stream.height) == ("h264", 1280, 720)


def test_the_remix_and_extend_snippet_prints_what_it_says(app, capsys):
    code = python_snippet("videos.extend")
    exec(compile(code.replace(DOCUMENTED, app.url), "README.md", "exec"), {})

    status, seconds, extends = capsys.readouterr().out.split()
    assert (status, extends) == ("completed", "True")
    assert float(seconds) == pytest.approx(12, abs=0.3)  # the 8 s source, then 4 s more


def test_the_curl_snippet_runs_line_by_line(app, tmp_path):
    (block,) = [s for s in snippets("bash") if "curl" in s and "Idempotency-Key" in s]
    commands = re.split(r"\n(?=curl )", block.strip())

    def run(command: str, video_id: str = "") -> str:
        return run_snippet(app, command.replace("VIDEO_ID", video_id), tmp_path, timeout=300)

    created = json.loads(run(commands[0]))
    video, events, cancel, poster, page, deleted = (run(command, created["id"]) for command in commands[1:])

    assert json.loads(video)["id"] == created["id"]
    streamed = [json.loads(line[6:]) for line in events.splitlines() if line.startswith("data: ")]
    assert streamed[-1]["status"] == "completed"  # the stream ran to the end of the job...
    assert json.loads(cancel)["error"]["code"] == "already_finished"  # ...so the cancel came too late
    assert (tmp_path / "poster.jpg").read_bytes()[:2] == b"\xff\xd8" and poster == ""
    assert json.loads(page)["object"] == "list"
    assert json.loads(deleted) == {"id": created["id"], "object": "video.deleted", "deleted": True}
    gone = json.loads(run(f"curl -s localhost:8000/v1/videos/{created['id']}"))
    assert gone["error"]["code"] == "video_not_found"


def test_the_narration_snippet_makes_a_narrated_video_with_music_and_subtitles(app, tmp_path):
    (command,) = [s for s in snippets("bash") if "music=" in s]
    rate = 22050
    write_wav(tmp_path / "bed.wav", 0.2 * np.sin(2 * np.pi * 330 * np.arange(rate) / rate), rate)
    video = app.wait(json.loads(run_snippet(app, command, tmp_path))["id"])

    assert video["status"] == "completed", video["error"]
    assert {scene["narration"]["language"] for scene in video["scenes"]} == {"cmn"}
    assert all(scene["narration"]["rate"] == pytest.approx(1.1) for scene in video["scenes"])
    assert "audio" in video["variants"]
    (tmp_path / "v.mp4").write_bytes(app.client.get(f"/v1/videos/{video['id']}/content").content)
    with av.open(str(tmp_path / "v.mp4")) as container:
        assert container.streams.audio and container.streams.video


def test_the_other_servers_forms_make_the_frames_size_and_notices_their_fields_say(app, tmp_path):
    (block,) = [s for s in snippets("bash") if "-F fps=12" in s]
    multipart, urlencoded = re.split(r"\n(?=curl )", block.strip())
    made = []
    for command in (multipart, urlencoded):
        video = app.wait(json.loads(run_snippet(app, command, tmp_path, timeout=60))["id"])
        assert video["status"] == "completed", video["error"]
        path = tmp_path / f"{video['id']}.mp4"
        path.write_bytes(app.client.get(f"/v1/videos/{video['id']}/content").content)
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            frames = sum(1 for _ in container.decode(stream))
            made.append((video, frames, float(stream.average_rate), (stream.width, stream.height)))

    (boat, frames, rate, size), (small, small_frames, small_rate, small_size) = made
    assert (frames, rate, size) == (24, 12.0, (640, 360))  # seconds x fps, at width x height
    assert [n["message"] for n in boat["notices"]] == ["svd takes no negative_prompt; it was ignored"]
    # Interpolated: twice the profile's rate and frames, over the same 2 seconds.
    assert small_size == (320, 180) and small_rate == 2 * 7 and small_frames == 2 * 2 * 7


def test_the_sync_snippet_writes_the_finished_mp4(app, tmp_path):
    (command,) = [s for s in snippets("bash") if "/v1/videos/sync" in s]
    run_snippet(app, command, tmp_path, timeout=180)
    with av.open(str(tmp_path / "boat.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert float(container.duration / av.time_base) == pytest.approx(2, abs=0.2)


def test_the_video_to_video_snippet_continues_the_clip_twice(app, tmp_path):
    (block,) = [s for s in snippets("bash") if "input_reference=@boat.mp4" in s]
    (tmp_path / "boat.mp4").write_bytes(video_bytes([(40, 90, 200)] * 12))
    for command in re.split(r"\n(?=curl )", block.strip()):
        video = app.wait(json.loads(run_snippet(app, command, tmp_path, timeout=60))["id"])
        assert video["status"] == "completed", video["error"]
        assert video["scenes"][0]["keyframe_generator"] == "input_video"
        assert float(video["seconds"]) == pytest.approx(2, abs=0.2)
