"""Stages that cannot work: missing weights fall back (policy auto) with the reason; a failing encoder
fails the job with an error object, and the API stays up."""

from __future__ import annotations

import pytest

from tests.fixtures.serve import Deployed

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def app(broken_app: Deployed) -> Deployed:
    return broken_app


def test_missing_weights_fall_back_and_a_failing_stage_fails_the_job(app):
    response = app.client.post(
        "/v1/videos", json={"prompt": "One scene. Two scenes.", "num_scenes": 2, "seconds": 2}
    )
    video = app.wait(response.json()["id"])

    assert video["status"] == "failed"
    assert video["error"]["code"] == "media_error" and "ffmpeg" in video["error"]["message"]
    assert "/bin/false" not in video["error"]["message"]  # no server paths, no command lines
    assert video["completed_at"] is not None
    # SVD and the painter were unavailable: the scenes record the fallback and why, never "svd".
    assert len(video["scenes"]) == 2
    for scene in video["scenes"]:
        assert scene["generator"] == "fallback" and scene["keyframe_generator"] == "placeholder"
        assert str(scene["fallback_reason"]).strip() and "no-weights" not in scene["fallback_reason"]
        assert scene["status"] == "failed"
    # The service is still healthy and answers the next request.
    assert app.client.get("/healthz").status_code == 200
    assert app.client.get("/v1/videos").json()["data"][0]["id"] == video["id"]
