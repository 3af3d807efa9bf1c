"""API keys: with keys in the environment every route but /healthz needs one; without, the API is open."""

from __future__ import annotations

import openai
import pytest
from fastapi.testclient import TestClient

from serve_app.api import ingress

pytestmark = pytest.mark.integration

KEYS_ENV = "STORYREEL_API_KEYS"


@pytest.fixture
def client(local_service, monkeypatch):
    monkeypatch.setenv(KEYS_ENV, "old-key, new-key")  # two keys, as during a rotation
    ingress.install(local_service)
    with TestClient(ingress.app) as client:
        yield client


def test_requests_without_a_valid_key_get_401_and_store_nothing(client, local_service):
    missing = client.post("/v1/videos", json={"prompt": "no key"})
    wrong = client.post(
        "/v1/videos", json={"prompt": "wrong key"}, headers={"Authorization": "Bearer not-a-key"}
    )
    basic = client.get("/v1/videos", headers={"Authorization": "Basic b2xkLWtleTo="})

    assert [r.status_code for r in (missing, wrong, basic)] == [401, 401, 401]
    assert missing.json()["error"] == {
        "message": "missing API key: send the header `Authorization: Bearer <key>`",
        "type": "authentication_error",
        "param": "authorization",
        "code": "missing_api_key",
    }
    assert wrong.json()["error"]["code"] == "invalid_api_key"
    assert "not-a-key" not in wrong.text  # a secret, even a wrong one, is not echoed
    assert missing.headers["www-authenticate"] == "Bearer"
    assert local_service.store.page(None, 10, "desc")[0] == []


def test_every_configured_key_is_accepted_and_health_needs_none(client):
    assert client.get("/healthz").status_code == 200
    for key in ("old-key", "new-key"):
        response = client.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 200, response.text
    assert client.get("/v1/models").status_code == 401


def test_the_openai_sdk_sends_its_key_and_raises_authentication_error_without_it(client):
    # The SDK over the test client: real requests and responses through the app, no socket.
    good, bad = (
        openai.OpenAI(base_url="http://testserver/v1", api_key=key, http_client=client, max_retries=0)
        for key in ("new-key", "sk-wrong")
    )

    video = good.videos.create(prompt="A kite. The wind. A tree.", seconds="4")
    assert good.videos.retrieve(video.id).id == video.id
    with pytest.raises(openai.AuthenticationError) as caught:
        bad.videos.retrieve(video.id)
    assert caught.value.code == "invalid_api_key"


def test_without_keys_the_api_is_open(local_service, monkeypatch):
    monkeypatch.delenv(KEYS_ENV, raising=False)
    ingress.install(local_service)
    with TestClient(ingress.app) as client:
        assert client.get("/v1/models").status_code == 200
    monkeypatch.setenv(KEYS_ENV, " , ")  # only separators: no key, still open
    with TestClient(ingress.app) as client:
        assert client.get("/v1/models").status_code == 200


def test_the_api_description_is_open_and_documents_401_except_on_health(client):
    described = client.get("/openapi.json")  # no key, keys configured

    assert described.status_code == 200
    paths = described.json()["paths"]
    assert all(
        "401" in operation["responses"]
        for path, ops in paths.items()
        if path.startswith("/v1/")
        for operation in ops.values()
    )
    assert "401" not in paths["/healthz"]["get"]["responses"]
