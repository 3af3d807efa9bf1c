"""Webhooks through the real service: the ingress checks the target, the JobRunner replica delivers from the
outbox in the job store, and a receiver in this process verifies what arrives."""

from __future__ import annotations

import json
import time

import pytest

from tests.fixtures.serve import WEBHOOK_SECRET, Deployed
from tests.fixtures.webhooks import Receiver, verify

pytestmark = pytest.mark.e2e

SECRET = WEBHOOK_SECRET


@pytest.fixture(scope="module")
def app(keyed_app: Deployed) -> Deployed:
    """Webhooks to this machine, retried after 1 s, signed with ``SECRET`` (it reaches the replicas in their
    environment, as a deployment gives it)."""
    return keyed_app


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
