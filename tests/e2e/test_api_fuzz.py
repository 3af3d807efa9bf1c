"""Schema-driven fuzzing of the running API (real Serve, real HTTP): no input yields a 5xx, and every
response matches what /openapi.json declares for it (status code, content type, body schema). Creates are
fuzzed as JSON and, on their own, as multipart forms (every field, and a file part)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.transport import Response
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.fixtures.serve import Deployed

pytestmark = pytest.mark.e2e

RUNNING = ("queued", "in_progress")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def fuzz_app(cpu_app: Deployed) -> Iterator[Deployed]:
    """The shared CPU profile app. Each job the fuzzer starts is cancelled as soon as its create has been
    checked (`cancel_started`); any left over (a create the fuzzer did not see answered) are cancelled
    after, so that the modules after this one do not queue behind them."""
    yield cpu_app
    for video in unfinished(cpu_app):
        cpu_app.client.post(f"/v1/videos/{video['id']}/cancel")


def cancel_started(app: Deployed, response: Response) -> None:
    """Cancel the job a checked answer started, if it did: the fuzzer checks what the API answers, and a
    job left running would only spend the cores the next cases need. A job that already ended is a 409."""
    try:
        video = response.json() if response.status_code == 200 else None
    except ValueError:  # a download's bytes
        return
    if isinstance(video, dict) and video.get("object") == "video" and video.get("status") in RUNNING:
        cancelled = app.client.post(f"/v1/videos/{video['id']}/cancel")
        assert cancelled.status_code in (200, 409), cancelled.text


def unfinished(app: Deployed) -> list[dict]:
    videos, after = [], None
    while True:
        page = app.client.get(
            "/v1/videos", params={"limit": 100} | ({"after": after} if after else {})
        ).json()
        videos += [video for video in page["data"] if video["status"] in RUNNING]
        if not page["has_more"]:
            return videos
        after = page["last_id"]


@pytest.fixture(scope="module")
def api_schema(fuzz_app: Deployed):
    return schemathesis.openapi.from_url(f"{fuzz_app.url}/openapi.json", timeout=30)


# Every route but the sync create: its valid bodies make whole videos while the request waits (minutes at the
# bounds of size, length and interpolation), past any timeout a fuzz case can keep. Its body is the create's,
# parsed and checked by the same code, which is fuzzed on /v1/videos; what the sync route answers itself
# (the video, a timeout, a failed, cancelled or replayed video, the cap) is tested in
# tests/integration/test_other_clients.py, where fuzzing it found two of those cases.
schema = schemathesis.pytest.from_fixture("api_schema").exclude(path="/v1/videos/sync")


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_gives_a_server_error_or_an_undeclared_response(case, fuzz_app):
    response = case.call_and_validate(base_url=fuzz_app.url, checks=CHECKS, timeout=60)
    cancel_started(fuzz_app, response)


def test_multipart_creates_give_no_server_error_or_undeclared_response(api_schema, fuzz_app):
    create = api_schema["/v1/videos"]["POST"]

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(case=create.as_strategy(media_type="multipart/form-data"))
    def fuzz(case):
        response = case.call_and_validate(base_url=fuzz_app.url, checks=CHECKS, timeout=60)
        cancel_started(fuzz_app, response)

    fuzz()
