"""A three-scene job through real Ray Serve with tiny real models: writer LLM, painter, SVD.

The models are random but real (the same diffusers/transformers classes as production), saved with
save_pretrained and loaded by the deployments through the project's own loading code.
"""

from __future__ import annotations

import io
import sqlite3
import time
from collections.abc import Iterator

import av
import pytest
from PIL import Image

from serve_app.config import AppConfig
from tests.fixtures.serve import Deployed, deployed
from tests.support.tiny_models import TINY_SVD_SETTINGS

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def app(
    serve_cluster, tmp_path_factory, tiny_svd_path, tiny_painter_path, tiny_llm_dir, tiny_voice_path
) -> Iterator[Deployed]:
    config = AppConfig.model_validate(
        {
            "fallback": "never",
            "video": {
                "model_path": str(tiny_svd_path),
                **TINY_SVD_SETTINGS,
            },
            "painter": {"model_path": str(tiny_painter_path), "device": "cpu", "width": 64, "height": 64},
            "writer": {
                "backend": "transformers",
                # Short fields: a random model fills every string to its limit, and the whole script must
                # fit in max_new_tokens (with `fallback: never`, a template fallback would fail the job).
                "bounds": {"max_title_chars": 24, "max_caption_chars": 32, "max_visual_prompt_chars": 48},
                "transformers": {
                    "model": str(tiny_llm_dir),
                    "device": "cpu",
                    "max_new_tokens": 400,
                    "cpu_threads": 1,
                },
            },
            "narration": {
                "backend": "vits",
                "neural": {"model_path": str(tiny_voice_path), "device": "cpu", "languages": ["en"]},
            },
            "video_processing": {"preset": "ultrafast", "transition": "cut"},
            "limits": {"max_frames_per_segment": 8},
            "storage": {"root": str(tmp_path_factory.mktemp("tiny-storage"))},
            # A killed runner's jobs are taken up once its lease runs out: keep the wait short.
            "jobs": {"lease_seconds": 3},
        }
    )
    options = {
        # Two SVD replicas at half a GPU each: both must fit on the one logical GPU.
        "VideoAnimator": {
            "num_replicas": 2,
            "ray_actor_options": {"num_cpus": 0.2, "num_gpus": 0.5},
            "user_config": {"max_batch_size": 4, "batch_wait_timeout_s": 2.0},
        },
    }
    with deployed(serve_cluster, config, "tiny", options) as app:
        yield app


def test_two_svd_replicas_share_one_logical_gpu(app):
    import ray
    from ray import serve

    status = serve.status().applications["tiny"].deployments["VideoAnimator"]
    assert status.replica_states.get("RUNNING") == 2
    assert ray.cluster_resources()["GPU"] == 1
    assert ray.available_resources().get("GPU", 0) == 0  # 2 x 0.5 taken


def test_three_scene_job_with_real_tiny_models(app, tmp_path):
    response = app.client.post(
        "/v1/videos",
        json={
            "prompt": "A fox runs through snow. It finds a lantern. The lantern glows.",
            "num_scenes": 3,
            "seconds": 3,
            "size": "128x128",
            "seed": 7,
            # Silent: narrated scenes last as long as their narration, and unequal lengths batch less.
            "narration": False,
        },
    )
    assert response.status_code == 200, response.text
    video = app.wait(response.json()["id"], timeout_s=300)

    assert video["status"] == "completed", video["error"]
    assert video["writer"] == "transformers"  # the tiny LLM wrote the script, not the template
    scenes = video["scenes"]
    assert len(scenes) == 3
    assert [scene["generator"] for scene in scenes] == ["svd"] * 3
    assert [scene["keyframe_generator"] for scene in scenes] == ["painter"] * 3
    assert all(scene["fallback_reason"] is None and scene["attempts"] == 1 for scene in scenes)
    # Scenes reached SVD together and shared pipeline calls (observed on the scenes, not assumed), and
    # so did their keyframes in the painter.
    assert max(scene["batch_size"] for scene in scenes) > 1
    assert max(_painter_stats()["batch_sizes"]) > 1

    content = app.client.get(f"/v1/videos/{video['id']}/content")
    (tmp_path / "v.mp4").write_bytes(content.content)
    with av.open(str(tmp_path / "v.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert (stream.width, stream.height) == (128, 128)
        assert sum(1 for _ in container.decode(stream)) == 3 * 8
    poster = app.client.get(f"/v1/videos/{video['id']}/content", params={"variant": "thumbnail"})
    assert Image.open(io.BytesIO(poster.content)).size == (128, 128)


def test_the_neural_voice_speaks_through_the_narrator_deployment(app, tmp_path):
    response = app.client.post(
        "/v1/videos",
        json={
            "prompt": "A fox.",
            "scenes": [{"caption": "A fox runs through snow. It finds a lantern."}],
            "size": "128x128",
            "narration": {"language": "en"},
        },
    )
    assert response.status_code == 200, response.text
    video = app.wait(response.json()["id"], timeout_s=300)

    assert video["status"] == "completed", video["error"]
    (scene,) = video["scenes"]
    assert scene["narrator"] == "vits" and scene["narration"]["fallback_reason"] is None
    assert len(scene["narration"]["sentences"]) == 2
    assert scene["duration_s"] >= scene["narration"]["seconds"]
    (tmp_path / "v.mp4").write_bytes(app.client.get(f"/v1/videos/{video['id']}/content").content)
    with av.open(str(tmp_path / "v.mp4")) as container:
        (voice,) = container.streams.audio
        assert voice.codec_context.name == "aac"
        seconds = sum(frame.samples for frame in container.decode(voice)) / voice.rate
    assert seconds == pytest.approx(float(video["seconds"]), abs=1 / 8)


def _painter_stats() -> dict:
    from ray import serve

    return serve.get_deployment_handle("KeyframePainter", app_name="tiny").stats.remote().result()


def _runner_stats() -> dict:
    from ray import serve

    return serve.get_deployment_handle("JobRunner", app_name="tiny").stats.remote().result()


def _animator_stats() -> dict:
    """One SVD replica's stats: Serve routes the call to the less busy of the two."""
    from ray import serve

    return serve.get_deployment_handle("VideoAnimator", app_name="tiny").stats.remote().result()


def _replicas(deployment: str = "VideoAnimator") -> dict[str, object]:
    """The deployment's live replica actors, by Serve's replica id (the end of the actor's name)."""
    import ray

    prefix = f"tiny#{deployment}#"
    names = [
        actor["name"] for actor in ray.util.list_named_actors(all_namespaces=True) if prefix in actor["name"]
    ]
    return {name.split(prefix)[1]: ray.get_actor(name, namespace="serve") for name in names}


def _stored(app, video_id: str) -> tuple[str, int, list[tuple[str, int]]]:
    """The job's status, attempts and (status, attempts) of each scene, read from the store itself."""
    with sqlite3.connect(app.storage / "jobs.sqlite3") as db:
        status, attempts = db.execute(
            "SELECT status, attempts FROM jobs WHERE id = ?", (video_id,)
        ).fetchone()
        scenes = db.execute("SELECT status, attempts FROM scenes WHERE job_id = ? ORDER BY idx", (video_id,))
        return status, attempts, scenes.fetchall()


SLOW_JOB = {
    "prompt": "Slow scenes.",
    "scenes": [{"caption": "one"}, {"caption": "two"}],
    "seconds": 2,
    "size": "128x128",
    "num_inference_steps": 40,
    "seed": 1,
}


def test_step_progress_is_reported_and_cancel_stops_the_gpu_work(app):
    video = app.client.post("/v1/videos", json=SLOW_JOB).json()
    # Progress follows the denoising steps: a scene shows a value strictly inside its animate stage.
    midway = app.poll(video["id"], lambda v: any(25 < s["progress"] < 85 for s in v["scenes"]))
    assert midway["status"] == "in_progress" and 0 < midway["progress"] < 100

    cancelled = app.client.post(f"/v1/videos/{video['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert {s["status"] for s in cancelled.json()["scenes"]} <= {"cancelled", "completed"}
    # The SVD replica stopped the batch at a step boundary (it reports the cancelled batch).
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if _animator_stats()["cancelled_batches"] > 0:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("no SVD replica reported a cancelled batch")

    assert app.client.post(f"/v1/videos/{video['id']}/cancel").status_code == 409
    assert app.client.get(f"/v1/videos/{video['id']}").json()["status"] == "cancelled"


def test_a_killed_svd_replica_costs_a_retry_not_the_job(app):
    import ray

    retried_before = _runner_stats()["retries"].get("animate", 0)
    # One scene: one replica animates it and the other is idle, so killing the wrong one would cost nothing.
    video = app.client.post("/v1/videos", json=SLOW_JOB | {"scenes": [{"caption": "one"}], "seed": 2}).json()
    # Early in the animate stage, so the batch is still running when the kill lands.
    app.poll(video["id"], lambda v: any(25 < s["progress"] < 60 for s in v["scenes"]))
    replicas = _replicas()
    assert len(replicas) == 2
    # The replica animating the scene dies. Serve routes a call to the less busy replica: if the one that
    # answers is idle, the other holds the batch.
    stats = _animator_stats()
    assert stats["replica"] in replicas
    (busy,) = [stats["replica"]] if stats["animating"] else set(replicas) - {stats["replica"]}
    ray.kill(replicas[busy], no_restart=True)

    finished = app.wait(video["id"], timeout_s=300)
    assert finished["status"] == "completed", finished["error"]
    assert [s["generator"] for s in finished["scenes"]] == ["svd"]
    # Completed because the runner called the animator again (a replacement replica), not by luck.
    assert _runner_stats()["retries"].get("animate", 0) > retried_before
    status, attempts, scenes = _stored(app, video["id"])
    assert attempts == 1 and all(tries == 1 for _, tries in scenes)  # a retry of the call, not of the job


CHAINED_JOB = SLOW_JOB | {"continuity": True}


def test_a_killed_ingress_replica_neither_stops_nor_restarts_a_job(app):
    import ray

    video = app.client.post("/v1/videos", json=CHAINED_JOB | {"seed": 3}).json()
    app.poll(video["id"], lambda v: any(25 < s["progress"] < 85 for s in v["scenes"]))
    (ingress,) = _replicas("VideoAPI").values()
    ray.kill(ingress, no_restart=True)  # Serve starts another; the job's runner is elsewhere

    deadline = time.monotonic() + 300
    while _stored(app, video["id"])[0] != "completed":
        assert time.monotonic() < deadline, _stored(app, video["id"])
        time.sleep(0.25)
    status, attempts, scenes = _stored(app, video["id"])
    # Run once, by the runner that started it: no resume, no scene made twice.
    assert attempts == 1 and scenes == [("completed", 1), ("completed", 1)]
    assert app.wait(video["id"], timeout_s=60)["status"] == "completed"  # the new ingress answers


def test_a_killed_runner_replica_costs_a_resume_from_the_last_finished_scene(app):
    import ray

    video = app.client.post("/v1/videos", json=CHAINED_JOB | {"seed": 4}).json()
    # Continuity chains the scenes: kill the runner once the first is done and the second is animating.
    app.poll(
        video["id"],
        lambda v: (
            v["scenes"] and v["scenes"][0]["status"] == "completed" and 25 < v["scenes"][1]["progress"] < 85
        ),
        timeout_s=240,
    )
    (runner,) = _replicas("JobRunner").values()
    ray.kill(runner, no_restart=True)

    finished = app.wait(video["id"], timeout_s=300)
    assert finished["status"] == "completed", finished["error"]
    status, attempts, scenes = _stored(app, video["id"])
    # Taken up again once the dead runner's lease ran out; the first scene was its checkpoint.
    assert attempts == 2 and scenes == [("completed", 1), ("completed", 2)]
