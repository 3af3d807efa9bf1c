"""`storyreel` against the CPU profile over real Ray Serve: each command run in process, as `main([...])`."""

from __future__ import annotations

import io
import json
import re
import signal
import subprocess
import sys
import time

import av
import pytest
from PIL import Image

from serve_app.client.cli import main
from tests.fixtures.serve import Deployed

pytestmark = pytest.mark.e2e

PROMPT = "A lighthouse keeper climbs the stairs at dusk. A whale glows under the sea."
# The session's cluster forwards the replicas' logs to this process, where capsys catches them too:
# "(ServeReplica:cli:VideoAPI pid=12) INFO ...", "(raylet) ...", and Serve's own "INFO 2026-12-01 ...".
RAY_LOG_LINE = re.compile(r"^(\x1b\[[0-9;]*m)?\([^)]*\)|^(DEBUG|INFO|WARNING|ERROR) \d{4}-\d\d-\d\d ")


@pytest.fixture(scope="module")
def app(cpu_app: Deployed) -> Deployed:
    return cpu_app


@pytest.fixture(scope="module")
def finished(app: Deployed, tmp_path_factory) -> tuple[str, object]:
    """One 4 s video made with `create --wait --out`: its id, and where the MP4 went."""
    target = tmp_path_factory.mktemp("cli-out") / "x.mp4"
    assert (
        main(
            [
                "--base-url",
                app.url,
                "--json",
                "create",
                PROMPT,
                "--seconds",
                "4",
                "--wait",
                "--out",
                str(target),
            ]
        )
        == 0
    )
    return app.client.get("/v1/videos", params={"limit": 1}).json()["data"][0]["id"], target


def storyreel(app: Deployed, capsys, *argv: str) -> tuple[int, str, str]:
    """Run `storyreel --base-url APP ARGV...` in process: its exit status, stdout and stderr."""
    capsys.readouterr()  # drop what came before
    status = main(["--base-url", app.url, *argv])
    out, err = capsys.readouterr()
    return status, _without_ray_logs(out), _without_ray_logs(err)


def _without_ray_logs(text: str) -> str:
    return "".join(line for line in text.splitlines(keepends=True) if not RAY_LOG_LINE.match(line))


def test_create_waits_and_saves_a_narrated_mp4(app, finished, capsys) -> None:
    video_id, target = finished
    with av.open(str(target)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and container.streams.audio
        frames = sum(1 for _ in container.decode(stream))
        fps = float(stream.average_rate)
    status, out, _ = storyreel(app, capsys, "get", video_id, "--json")
    video = json.loads(out)
    assert status == 0 and video["status"] == "completed"
    # At least the 4 s asked for; longer where the narration needs it, as the video object says.
    assert frames / fps == pytest.approx(float(video["seconds"]), abs=0.01), (frames, fps, video["seconds"])
    assert float(video["seconds"]) >= 4 - 0.3
    status, out, _ = storyreel(app, capsys, "get", video_id)
    assert "espeak:en-US" in out  # who spoke each scene


def test_get_shows_rounded_lengths_and_the_videos_notices(app, capsys) -> None:
    # Three sentences cannot be said in 2 s: the video runs longer, and says so.
    status, out, _ = storyreel(
        app, capsys, "--json", "create", PROMPT + " It swims away.", "--seconds", "2", "--wait"
    )
    video = json.loads(out)
    assert status == 0 and video["notices"], video
    status, out, _ = storyreel(app, capsys, "get", video["id"])
    assert status == 0
    assert f"notice: {video['notices'][0]['message']} (narration_longer_than_asked)" in out
    # Lengths to a tenth of a second: "2.6 s", never "2.648208616780045 s".
    lengths = re.findall(r"(\d+(?:\.\d+)?) s\b", out)
    assert lengths and all(len(length.partition(".")[2]) <= 1 for length in lengths), out


def test_create_prints_the_api_error_naming_the_field(app, capsys) -> None:
    status, out, err = storyreel(app, capsys, "create", "")
    assert status == 1 and out == ""
    assert err.startswith("storyreel: ") and "prompt" in err


def test_list_json_is_the_apis_list(app, finished, capsys) -> None:
    status, out, _ = storyreel(app, capsys, "list", "--json", "--limit", "5")
    page = json.loads(out)
    assert status == 0 and page["object"] == "list" and finished[0] in [video["id"] for video in page["data"]]


def test_get_and_download_a_thumbnail(app, finished, capsys, tmp_path) -> None:
    video_id, _ = finished
    status, out, _ = storyreel(app, capsys, "get", video_id)
    assert status == 0 and video_id in out and "scene 0: fallback" in out
    poster = tmp_path / "poster.jpg"
    status, _, err = storyreel(
        app, capsys, "download", video_id, "--variant", "thumbnail", "--out", str(poster)
    )
    assert status == 0 and str(poster) in err
    assert Image.open(io.BytesIO(poster.read_bytes())).format == "JPEG"


def test_rm_then_get_is_not_found(app, capsys) -> None:
    status, out, _ = storyreel(
        app, capsys, "create", "A fox runs through snow.", "--seconds", "2", "--no-narration"
    )
    video_id = out.strip()
    assert status == 0 and video_id.startswith("video_")
    status, out, _ = storyreel(app, capsys, "rm", video_id, "--json")
    assert status == 0 and json.loads(out) == {"id": video_id, "object": "video.deleted", "deleted": True}
    status, _, err = storyreel(app, capsys, "get", video_id)
    assert status == 1 and "video_not_found" in err and video_id in err


def test_the_module_runs_as_a_program() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "serve_app.client.cli", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "usage: storyreel" in result.stdout


def test_batch_makes_every_line_once_reports_bad_lines_and_a_rerun_resumes(app, tmp_path, capsys):
    valid = [
        {"prompt": f"Batch fox {n}.", "seconds": 1, "size": "128x72", "narration": False, "captions": False}
        for n in range(18)
    ]
    lines = [json.dumps(body) for body in valid[:9]] + ["{not json"] + [json.dumps(b) for b in valid[9:]]
    lines.append(json.dumps({"prompt": "Batch fox refused.", "seconds": -1}))
    (tmp_path / "prompts.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "videos"
    argv = ["--base-url", app.url, "batch", str(tmp_path / "prompts.jsonl"), "--out", str(out)]

    # Interrupted once a few videos are done (Ctrl-C): it stops at once, keeping the results it has.
    first = subprocess.Popen([sys.executable, "-m", "serve_app.client.cli", *argv], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(_completed(out)) < 3 and first.poll() is None:
        assert time.monotonic() < deadline, "no video of the batch completed"
        time.sleep(0.05)
    first.send_signal(signal.SIGINT)
    assert first.wait(timeout=15) in (130, 1)  # 1: it had finished every line before the signal came
    before = {line: (out / name).stat().st_mtime_ns for line, name in _completed(out).items()}

    status, _, err = storyreel(app, capsys, "batch", str(tmp_path / "prompts.jsonl"), "--out", str(out))

    assert status == 1  # two lines could not be made
    results = [json.loads(text) for text in (out / "results.jsonl").read_text().splitlines()]
    assert [r["line"] for r in results] == list(range(1, 21))
    assert results[9]["status"] == "invalid" and "line 10: not JSON" in err
    assert results[19]["status"] == "refused" and "seconds" in results[19]["error"]
    made = [r for r in results if r["status"] == "completed"]
    assert len(made) == 18 and all((out / r["file"]).is_file() for r in made)
    # What the first run finished was not downloaded again, and no line made a second video.
    assert {
        line: (out / name).stat().st_mtime_ns for line, name in _completed(out).items() if line in before
    } == before
    listed = app.client.get("/v1/videos", params={"limit": 100}).json()["data"]
    batch = [video for video in listed if video["prompt"].startswith("Batch fox")]
    assert sorted(video["id"] for video in batch) == sorted(r["id"] for r in made)


def _completed(out) -> dict[int, str]:
    """Line -> file of the completed lines in a batch's results.jsonl (none before it is written)."""
    path = out / "results.jsonl"
    if not path.is_file():
        return {}
    results = [json.loads(text) for text in path.read_text().splitlines()]
    return {r["line"]: r["file"] for r in results if r["status"] == "completed"}
