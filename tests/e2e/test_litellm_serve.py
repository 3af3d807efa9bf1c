"""The real LiteLLM package against the service through Ray Serve's HTTP proxy, on both of its video routes:
`hosted_vllm/<model>` (vLLM-Omni's multipart, with its extra fields) and `openai/<model>` (OpenAI's)."""

from __future__ import annotations

import os
import re
import time
from types import ModuleType
from typing import Any

import av
import pytest

from tests.fixtures.media import video_bytes
from tests.fixtures.serve import Deployed
from tests.support.docs import README

pytestmark = pytest.mark.e2e
DOCUMENTED = "http://127.0.0.1:8000"


@pytest.fixture(scope="module")
def app(cpu_app: Deployed) -> Deployed:
    return cpu_app


@pytest.fixture(scope="module")
def litellm() -> ModuleType:
    """The package, imported here, not at collection: its import takes seconds every run would pay."""
    # LiteLLM fetches its price list from GitHub at import unless told not to; the tests have no network.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    return litellm


def finished(litellm: ModuleType, video_id: str, server: dict) -> Any:
    deadline = time.monotonic() + 120
    while (video := litellm.video_status(video_id=video_id, **server)).status not in ("completed", "failed"):
        assert time.monotonic() < deadline, video
        time.sleep(0.25)
    assert video.status == "completed", video
    return video


def ours(wrapped: str) -> str:
    """Our id inside one of LiteLLM's (it wraps ids with the provider and the model)."""
    from litellm.types.videos.utils import decode_video_id_with_provider

    return decode_video_id_with_provider(wrapped)["video_id"]


def frames_of(data: bytes, tmp_path) -> tuple[int, float]:
    path = tmp_path / f"{time.monotonic_ns()}.mp4"
    path.write_bytes(data)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sum(1 for _ in container.decode(stream)), float(stream.average_rate)


def test_the_readme_snippet_makes_a_video_through_the_hosted_vllm_route(app, litellm, tmp_path, monkeypatch):
    (code,) = re.findall(r"```python\n(import time\n\nimport litellm\n.*?)```", README.read_text(), re.DOTALL)
    monkeypatch.chdir(tmp_path)
    exec(compile(code.replace(DOCUMENTED, app.url), "README.md", "exec"), {})
    # vLLM-Omni's meaning of its fields: 2 s at 12 fps is 24 frames.
    assert frames_of((tmp_path / "boat.mp4").read_bytes(), tmp_path) == (24, 12.0)


def test_hosted_vllm_fields_edit_and_extension(app, litellm, tmp_path):
    server = {"api_base": f"{app.url}/v1"}
    created = litellm.video_generation(
        model="hosted_vllm/svd-xt",
        prompt="A fox. The sea.",
        num_frames=14,
        fps=7,
        width=320,
        height=180,
        negative_prompt="blurry",
        extra_params={"motion_bucket_id": 60},
        **server,
    )
    video = finished(litellm, created.id, server)
    stored = app.client.get(f"/v1/videos/{ours(created.id)}").json()
    assert (stored["size"], stored["seconds"]) == ("320x180", "2")
    assert [notice["code"] for notice in stored["notices"]] == ["ignored_field"]
    assert frames_of(litellm.video_content(video_id=video.id, **server), tmp_path) == (14, 7.0)

    edited = finished(
        litellm, litellm.video_edit(video_id=video.id, prompt="A wolf. The sea.", **server).id, server
    )
    extended = finished(
        litellm,
        litellm.video_extension(video_id=video.id, prompt="Then night falls.", seconds="1", **server).id,
        server,
    )
    assert app.client.get(f"/v1/videos/{ours(edited.id)}").json()["remixed_from_video_id"] == ours(video.id)
    extension = app.client.get(f"/v1/videos/{ours(extended.id)}").json()
    assert extension["extended_from_video_id"] == ours(video.id)
    assert float(extension["seconds"]) == pytest.approx(3, abs=0.3)


def test_the_openai_route_creates_lists_downloads_and_remixes(app, litellm, tmp_path):
    server = {"api_base": f"{app.url}/v1", "api_key": "unused"}
    created = litellm.video_generation(
        model="openai/svd-xt", prompt="A lantern.", seconds="1", size="320x180", **server
    )
    video = finished(litellm, created.id, server)
    listed = litellm.video_list(**server)
    assert ours(video.id) in {ours(entry["id"]) for entry in listed["data"]}
    assert frames_of(litellm.video_content(video_id=video.id, **server), tmp_path) == (7, 7.0)

    remixed = finished(
        litellm, litellm.video_remix(video_id=video.id, prompt="A candle.", **server).id, server
    )
    remix = app.client.get(f"/v1/videos/{ours(remixed.id)}").json()
    assert remix["remixed_from_video_id"] == ours(video.id) and remix["prompt"] == "A candle."


def test_hosted_vllm_continues_an_uploaded_clip(app, litellm, tmp_path):
    # Video to video as LiteLLM sends it: `input_reference` an MP4 file in vLLM-Omni's multipart.
    server = {"api_base": f"{app.url}/v1"}
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(video_bytes([(200, 30, 30)] * 11 + [(30, 200, 60)]))
    with clip.open("rb") as upload:
        created = litellm.video_generation(
            model="hosted_vllm/svd-xt",
            prompt="Then the tide comes in.",
            seconds="1",
            input_reference=upload,
            **server,
        )
    finished(litellm, created.id, server)
    stored = app.client.get(f"/v1/videos/{ours(created.id)}").json()
    assert stored["scenes"][0]["keyframe_generator"] == "input_video"
