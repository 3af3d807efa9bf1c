"""API keys through real Ray Serve: the key reaches the ingress replica through its environment, and
Serve's proxy passes the Authorization header on."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.fixtures.serve import REPLICAS, Deployed, cpu_profile, deployed

pytestmark = pytest.mark.e2e

KEY = "e2e-key-1"


@pytest.fixture(scope="module")
def app(serve_cluster, tmp_path_factory) -> Iterator[Deployed]:
    config = cpu_profile(
        tmp_path_factory.mktemp("keyed-storage"), auth={"api_keys_env": "STORYREEL_E2E_KEYS"}
    )
    ingress_options = REPLICAS["VideoAPI"]["ray_actor_options"] | {
        "runtime_env": {"env_vars": {"STORYREEL_E2E_KEYS": f"{KEY},e2e-key-2"}}
    }
    options = {"VideoAPI": {"ray_actor_options": ingress_options}}
    with deployed(serve_cluster, config, "keyed", options) as app:
        app.client.headers["Authorization"] = f"Bearer {KEY}"  # for app.wait
        yield app


def test_only_requests_with_a_key_get_through_the_proxy(app):
    client = openai.OpenAI(base_url=f"{app.url}/v1", api_key=KEY, max_retries=0)
    stranger = openai.OpenAI(base_url=f"{app.url}/v1", api_key="sk-not-ours", max_retries=0)

    assert httpx.get(f"{app.url}/healthz").status_code == 200
    with pytest.raises(openai.AuthenticationError) as caught:
        stranger.videos.create(prompt="Let me in. Please.", seconds="2")
    assert caught.value.code == "invalid_api_key"
    assert client.videos.list().data == []  # the refused request stored nothing

    video = client.videos.create(prompt="A key turns. A door opens.", seconds="2")
    assert app.wait(video.id)["status"] == "completed"
    content = f"{app.url}/v1/videos/{video.id}/content"
    assert httpx.get(content).status_code == 401
    assert httpx.get(content, headers={"Authorization": f"Bearer {KEY}"}).content[4:8] == b"ftyp"
