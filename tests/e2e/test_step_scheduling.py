"""`video.scheduling: step` through real Ray Serve HTTP with the tiny SVD model.

A job of one very long scene holds the SVD replica's step loop busy; a second job's scenes join that running
loop, finish and come back while it goes on; cancelling the long job takes its scene out of the loop at the
next step. The long scene is long enough (1000 steps) that it is still running whenever the test looks, and
the test says so before it relies on it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import av
import pytest

from serve_app.config import AppConfig
from tests.fixtures.serve import Deployed, deployed
from tests.support.tiny_models import TINY_SVD_SETTINGS

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

APP = "step"


@pytest.fixture(scope="module")
def app(serve_cluster, tmp_path_factory, tiny_svd_path, tiny_painter_path) -> Iterator[Deployed]:
    config = AppConfig.model_validate(
        {
            "fallback": "never",
            "video": {"model_path": str(tiny_svd_path), **TINY_SVD_SETTINGS, "scheduling": "step"},
            "painter": {"model_path": str(tiny_painter_path), "device": "cpu", "width": 64, "height": 64},
            "writer": {"backend": "template"},
            "video_processing": {"preset": "ultrafast", "transition": "cut"},
            "limits": {"max_frames_per_segment": 8, "max_inference_steps": 1000},
            "storage": {"root": str(tmp_path_factory.mktemp("step-storage"))},
        }
    )
    # One SVD replica, so every scene goes through the same loop.
    options = {"VideoAnimator": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.2, "num_gpus": 0.5}}}
    with deployed(serve_cluster, config, APP, options) as app:
        yield app


def _loop_stats() -> dict:
    from ray import serve

    stats = serve.get_deployment_handle("VideoAnimator", app_name=APP).stats.remote().result()
    assert stats["step_loop"] is not None, "the replica does not run the step loop"
    return stats["step_loop"]


LONG_JOB = {
    "prompt": "A very long scene.",
    "scenes": [{"caption": "long"}],
    "seconds": 1,
    "size": "128x128",  # the short scenes' size: they step in the same model calls as this one
    "num_inference_steps": 1000,
    "seed": 1,
    "narration": False,
}
SHORT_JOB = {
    "prompt": "Two short scenes.",
    "scenes": [{"caption": "one"}, {"caption": "two"}],
    "seconds": 2,
    "size": "128x128",
    "seed": 2,
    "narration": False,
}


def _in_loop(video: dict) -> bool:
    """The video's first scene is in the step loop: its progress moves inside the animate stage, step by step
    (a video lists no scenes until its storyboard is written)."""
    return bool(video["scenes"]) and 25 < video["scenes"][0]["progress"] < 85


def test_scenes_join_a_running_loop_leave_before_it_ends_and_cancel_leaves_at_the_next_step(app, tmp_path):
    long = app.client.post("/v1/videos", json=LONG_JOB).json()
    try:
        _join_and_cancel(app, long, tmp_path)
    finally:  # a failure above must not leave 1000 steps in the loop for the next test
        app.client.post(f"/v1/videos/{long['id']}/cancel")


def _join_and_cancel(app: Deployed, long: dict, tmp_path) -> None:
    app.poll(long["id"], _in_loop)

    short = app.client.post("/v1/videos", json=SHORT_JOB)
    assert short.status_code == 200, short.text
    done = app.wait(short.json()["id"], timeout_s=120)
    still = app.client.get(f"/v1/videos/{long['id']}").json()

    assert still["status"] == "in_progress"  # the premise: the long scene was running all along
    assert done["status"] == "completed", done["error"]
    assert [scene["generator"] for scene in done["scenes"]] == ["svd", "svd"]
    # Each short scene shared its steps' model calls with the long one (and its sibling where they overlapped).
    assert all(scene["batch_size"] >= 2 for scene in done["scenes"]), done["scenes"]
    assert _loop_stats()["joined_running"] >= 2
    content = app.client.get(f"/v1/videos/{done['id']}/content")
    (tmp_path / "v.mp4").write_bytes(content.content)
    with av.open(str(tmp_path / "v.mp4")) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height) == (128, 128)
        assert sum(1 for _ in container.decode(stream)) == 2 * 8

    cancelled = app.client.post(f"/v1/videos/{long['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    deadline = time.monotonic() + 30
    while _loop_stats()["cancelled"] < 1:
        assert time.monotonic() < deadline, "the cancelled scene is still in the loop"
        time.sleep(0.05)


def test_every_step_of_every_scene_runs_once_in_the_loop(app):
    deadline = time.monotonic() + 30
    while (loop := _loop_stats())["active"] or loop["waiting"]:  # another test's scenes still stepping
        assert time.monotonic() < deadline, f"the loop is not idle: {loop}"
        time.sleep(0.1)
    before = loop["calls"]
    video = app.client.post("/v1/videos", json=SHORT_JOB | {"seed": 3}).json()
    done = app.wait(video["id"], timeout_s=120)
    after = _loop_stats()["calls"]

    assert done["status"] == "completed", done["error"]
    scene_steps = {size: after.get(size, 0) - before.get(size, 0) for size in after}
    # Two scenes of two steps: four scene-steps, however the two were grouped into model calls.
    assert (
        sum(int(size) * calls for size, calls in scene_steps.items())
        == 2 * TINY_SVD_SETTINGS["num_inference_steps"]
    )
