"""Kill `serve run` and all its Ray processes mid-job, start it again: the job completes, and the scenes
finished before the kill are not made again."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from serve_app.client.demo import kill_session
from tests.fixtures.serve import get_video, tiny_svd_args
from tests.support.ports import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def write_config(folder: Path, port: int, svd_path: Path) -> Path:
    args = tiny_svd_args(svd_path, folder) | {
        "limits": {"max_frames_per_segment": 8},
        "storage": {"root": str(folder / "storage")},
        "jobs": {"lease_seconds": 3, "sweep_seconds": 1},
    }
    small = {"ray_actor_options": {"num_cpus": 0.1}}
    config = {
        "http_options": {"host": "127.0.0.1", "port": port},
        "applications": [
            {
                "name": "crash",
                "route_prefix": "/",
                "import_path": "serve_app.app:build_app",
                "args": args,
                "deployments": [
                    {"name": name, **small}
                    for name in (
                        "VideoAPI",
                        "JobRunner",
                        "SceneWriter",
                        "KeyframePainter",
                        "Encoder",
                        "VideoAnimator",
                    )
                ],
            }
        ],
    }
    path = folder / "serve_config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def start(config: Path, log: Path) -> subprocess.Popen:
    serve = Path(sys.executable).parent / "serve"
    return subprocess.Popen(
        [str(serve), "run", str(config)],
        stdout=log.open("a"),
        stderr=subprocess.STDOUT,
        env=os.environ | {"RAY_ADDRESS": "local"},
        start_new_session=True,  # Ray's processes join this session (each worker in a group of its own)
    )


def wait_healthy(url: str, server: subprocess.Popen, log: Path, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert server.poll() is None, log.read_text()[-3000:]
        try:
            answer = httpx.get(f"{url}/healthz", timeout=2)
            if answer.status_code == 200 and "jobs_running" in answer.text:  # ours, not another server
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise AssertionError(f"serve run did not come up: {log.read_text()[-3000:]}")


def stop(server: subprocess.Popen) -> None:
    """Stop `serve run` cleanly (SIGINT to its group); if it hangs, kill its whole session."""
    try:
        os.killpg(server.pid, signal.SIGINT)
        server.wait(timeout=60)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        kill_session(server.pid)
        server.wait(timeout=60)


def test_sigkill_mid_job_then_restart_completes_without_redoing_finished_scenes(tmp_path, tiny_svd_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = write_config(tmp_path, port, tiny_svd_path)
    log = tmp_path / "serve.log"
    server = start(config, log)
    try:
        wait_healthy(url, server, log)
        body = {
            "prompt": "crash",
            "scenes": [{"caption": c} for c in ("one", "two", "three", "four")],
            "seconds": 4,
            "size": "64x64",
            "continuity": True,
        }  # continuity: scenes run one after another
        video_id = httpx.post(f"{url}/v1/videos", json=body, timeout=30).json()["id"]
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            video = get_video(url, video_id)
            if video and video["scenes"] and video["scenes"][0]["status"] == "completed":
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the first scene never finished")
        kill_session(server.pid)  # every process of this `serve run` and its Ray, at once: the machine died
        server.wait(timeout=60)

        with sqlite3.connect(tmp_path / "storage" / "jobs.sqlite3") as db:
            (status,) = db.execute("SELECT status FROM jobs WHERE id = ?", (video_id,)).fetchone()
            done_before = [
                idx
                for (idx,) in db.execute(
                    "SELECT idx FROM scenes WHERE job_id = ? AND status = 'completed'", (video_id,)
                )
            ]
        assert status == "in_progress" and 0 in done_before and len(done_before) < 4

        server = start(config, log)
        wait_healthy(url, server, log)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            video = get_video(url, video_id)
            if video and video["status"] in ("completed", "failed", "cancelled"):
                break
            time.sleep(0.5)
        assert video["status"] == "completed", video
        attempts = {scene["index"]: scene["attempts"] for scene in video["scenes"]}
        assert all(attempts[idx] == 1 for idx in done_before)  # kept their first attempt
        assert all(scene["generator"] == "svd" for scene in video["scenes"])
        with sqlite3.connect(tmp_path / "storage" / "jobs.sqlite3") as db:
            (job_attempts,) = db.execute("SELECT attempts FROM jobs WHERE id = ?", (video_id,)).fetchone()
        assert job_attempts == 2
        assert httpx.get(f"{url}/v1/videos/{video_id}/content", timeout=30).status_code == 200
    finally:
        stop(server)
