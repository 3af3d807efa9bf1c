"""A job through real Ray Serve HTTP with each text-conditioned family's tiny model (LTX-Video, Wan).

The scenes' visual prompts reach the animator with their keyframes (LTX, painted) or alone (Wan, with
`keyframes: none`); scenes that arrive together share one pipeline call; a frame count the family cannot
make is rounded up by the engine and trimmed back, so the video still lasts what was asked.
"""

from __future__ import annotations

from collections.abc import Iterator

import av
import pytest
from ray import serve

from serve_app.config import AppConfig
from tests.fixtures.serve import Deployed, deployed
from tests.support.tiny_models import TINY_LTX_SETTINGS, TINY_WAN_SETTINGS

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module", params=["ltx", "wan"])
def app(request, serve_cluster, tmp_path_factory, tiny_painter_path) -> Iterator[Deployed]:
    family = request.param
    settings = TINY_LTX_SETTINGS if family == "ltx" else TINY_WAN_SETTINGS
    config = AppConfig.model_validate(
        {
            "served_model_name": family,
            "fallback": "never",
            "video": {
                "family": family,
                "model_path": str(request.getfixturevalue(f"tiny_{family}_path")),
                **settings,
                # LTX starts from painted keyframes, Wan from the text alone: both paths through the service.
                "keyframes": "painted" if family == "ltx" else "none",
            },
            "painter": {"model_path": str(tiny_painter_path), "device": "cpu", "width": 64, "height": 64},
            "writer": {"backend": "template"},
            "video_processing": {"preset": "ultrafast", "transition": "cut"},
            "limits": {"max_frames_per_segment": settings["num_frames"]},
            "storage": {"root": str(tmp_path_factory.mktemp(f"{family}-storage"))},
        }
    )
    options = {
        "VideoAnimator": {
            "num_replicas": 1,
            "ray_actor_options": {"num_cpus": 0.2, "num_gpus": 0.5},
            "user_config": {"max_batch_size": 4, "batch_wait_timeout_s": 1.0},
        },
    }
    with deployed(serve_cluster, config, f"tiny-{family}", options) as deployed_app:
        yield deployed_app


JOB = {
    "prompt": "A fox and the sea.",
    "scenes": [
        {"caption": "A red fox.", "visual_prompt": "a red fox in the snow"},
        {"caption": "The sea.", "visual_prompt": "the sea and the sky"},
    ],
    "seconds": 2,
    "size": "128x128",
    "seed": 3,
    # Silent: narrated scenes last as long as their narration; this test counts the frames of 1 s scenes.
    "narration": False,
}


def _keyframes(family: str) -> str:
    return "painter" if family == "ltx" else "text"


def test_a_two_scene_job_is_animated_by_the_family_from_its_visual_prompts(app, tmp_path):
    family = app.name.removeprefix("tiny-")
    response = app.client.post("/v1/videos", json=JOB | {"model": family})
    assert response.status_code == 200, response.text
    video = app.wait(response.json()["id"], timeout_s=120)

    assert video["status"] == "completed", video["error"]
    scenes = video["scenes"]
    assert [scene["generator"] for scene in scenes] == [family, family]
    assert [scene["keyframe_generator"] for scene in scenes] == [_keyframes(family)] * 2
    assert all(scene["fallback_reason"] is None for scene in scenes)
    assert max(scene["batch_size"] for scene in scenes) == 2  # both scenes in one pipeline call
    # Wan, from the text alone, paints nothing: its painter never loaded a model (and is healthy without).
    painter = serve.get_deployment_handle("KeyframePainter", app_name=app.name).stats.remote().result()
    assert painter["model_loaded"] == (family == "ltx")

    content = app.client.get(f"/v1/videos/{video['id']}/content")
    (tmp_path / "v.mp4").write_bytes(content.content)
    with av.open(str(tmp_path / "v.mp4")) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height) == (128, 128)
        # 1 s a scene at 8 fps: 8 frames each, though the family runs 9 (8k+1 / 4k+1) and trims one.
        assert sum(1 for _ in container.decode(stream)) == 2 * 8


def test_with_continuity_later_scenes_start_from_the_last_frame(app):
    family = app.name.removeprefix("tiny-")
    response = app.client.post("/v1/videos", json=JOB | {"continuity": True, "seed": 4})
    video = app.wait(response.json()["id"], timeout_s=120)

    assert video["status"] == "completed", video["error"]
    assert [scene["keyframe_generator"] for scene in video["scenes"]] == [_keyframes(family), "continuity"]
    assert [scene["generator"] for scene in video["scenes"]] == [family, family]
