"""Webhooks through the real service: the ingress checks the target, the JobRunner replica delivers from the
outbox in the job store, and a receiver in this process verifies what arrives."""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Iterator

import pytest

from tests.fixtures.serve import Deployed, cpu_profile, deployed
from tests.fixtures.webhooks import Receiver, verify

pytestmark = pytest.mark.e2e

SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


@pytest.fixture(scope="module")
def app(serve_cluster, tmp_path_factory) -> Iterator[Deployed]:
    config = cpu_profile(
        tmp_path_factory.mktemp("hooks-storage"),
        webhooks={"allowed_hosts": ["127.0.0.1"], "retry_seconds": [1, 1]},
    )
    # The secret reaches the replicas that need it the way a deployment gives it: in their environment.
    secret_env = {"runtime_env": {"env_vars": {"STORYREEL_WEBHOOK_SECRET": SECRET}}}
    options = {
        name: {"ray_actor_options": {"num_cpus": 0.1, **secret_env}} for name in ("VideoAPI", "JobRunner")
    }
    with deployed(serve_cluster, config, "hooks", options) as app:
        yield app


def test_a_failed_delivery_is_retried_with_the_same_id_and_a_valid_signature(app):
    receiver = Receiver(failures=1)
    try:
        created = app.client.post(
            "/v1/videos", json={"prompt": "Dawn breaks.", "seconds": 2, "webhook_url": receiver.url}
        )
        assert created.status_code == 200, created.text
        video_id = created.json()["id"]
        assert app.wait(video_id)["status"] == "completed"
        deadline = time.monotonic() + 60
        while app.client.get(f"/v1/videos/{video_id}").json()["webhook"]["status"] != "delivered":
            assert time.monotonic() < deadline, app.client.get(f"/v1/videos/{video_id}").json()["webhook"]
            time.sleep(0.2)
        time.sleep(2)  # past the next retry, were one due
    finally:
        receiver.close()

    assert len(receiver.received) == 2
    (_, first, first_body), (_, retry, retry_body) = receiver.received
    assert first["webhook-id"] == retry["webhook-id"] and first_body == retry_body
    assert verify(SECRET, first, first_body) and verify(SECRET, retry, retry_body)
    assert json.loads(retry_body) | {"created_at": 0} == {
        "object": "event",
        "id": retry["webhook-id"],
        "type": "video.completed",
        "created_at": 0,
        "data": {"id": video_id},
    }
    hook = app.client.get(f"/v1/videos/{video_id}").json()["webhook"]
    assert hook == {"status": "delivered", "attempts": 2, "last_error": "HTTP 500"}


@pytest.mark.parametrize(
    "url", ["http://169.254.169.254/latest/meta-data", "http://10.0.0.1/", "http://localhost:9/"]
)
def test_private_targets_are_refused_at_create(app, url):
    refused = app.client.post("/v1/videos", json={"prompt": "Dawn breaks.", "webhook_url": url})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "webhook_url"
