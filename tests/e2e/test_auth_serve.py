"""API keys through real Ray Serve: the key reaches the ingress replica through its environment, and
Serve's proxy passes the Authorization header on."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.fixtures.serve import API_KEYS, Deployed

pytestmark = pytest.mark.e2e

KEY = API_KEYS[0]


@pytest.fixture(scope="module")
def app(keyed_app: Deployed) -> Deployed:
    return keyed_app


def test_only_requests_with_a_key_get_through_the_proxy(app):
    client = openai.OpenAI(base_url=f"{app.url}/v1", api_key=KEY, max_retries=0)
    stranger = openai.OpenAI(base_url=f"{app.url}/v1", api_key="sk-not-ours", max_retries=0)

    assert httpx.get(f"{app.url}/healthz").status_code == 200
    with pytest.raises(openai.AuthenticationError) as caught:
        stranger.videos.create(prompt="Let me in. Please.", seconds="2")
    assert caught.value.code == "invalid_api_key"
    assert all(video.prompt != "Let me in. Please." for video in client.videos.list(limit=100).data)

    video = client.videos.create(prompt="A key turns. A door opens.", seconds="2")
    assert app.wait(video.id)["status"] == "completed"
    content = f"{app.url}/v1/videos/{video.id}/content"
    assert httpx.get(content).status_code == 401
    assert httpx.get(content, headers={"Authorization": f"Bearer {KEY}"}).content[4:8] == b"ftyp"
