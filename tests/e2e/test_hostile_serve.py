"""A hostile client against real Ray Serve over real HTTP: floods of event streams, slow and oversized
bodies, JSON the parser refuses, bodies that are not JSON. The proxy is in the path, as for users."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from serve_app.config import StorageConfig
from serve_app.store.jobs import JobStore
from tests.fixtures.jobs import job_row
from tests.fixtures.serve import BODY_LIMIT, STREAM_CAP, STREAM_SECONDS, Deployed

pytestmark = pytest.mark.e2e

WAITING = "video_" + "e" * 32


@pytest.fixture(scope="module")
def app(broken_app: Deployed) -> Deployed:
    # A job that stays queued: a live runner elsewhere holds it, so its streams stay open.
    assert broken_app.storage is not None
    store = JobStore(StorageConfig(root=str(broken_app.storage)).database_path)
    store.create(job_row(WAITING, "queued", runner_id="runner-elsewhere", lease_until=time.time() + 3600))
    return broken_app


async def open_stream(client: httpx.AsyncClient, video_id: str) -> tuple[httpx.Response, str, Any]:
    """Open an event stream and read until its first video event; the response stays open.

    Returns the response, what was read, and the chunk iterator, which must stay referenced: leaving an
    `async for` over it closes the stream.
    """
    request = client.build_request("GET", f"/v1/videos/{video_id}/events")
    response = await client.send(request, stream=True)
    if response.status_code != 200:
        await response.aread()
        return response, "", None
    chunks, text = response.aiter_text(), ""
    while "event: video" not in text:
        text += await anext(chunks)
    return response, text, chunks


def stream_status(app: Deployed) -> int:
    """The status an event stream opens with (the stream is closed at once)."""
    with (
        httpx.Client(base_url=app.url, timeout=30) as client,
        client.stream("GET", f"/v1/videos/{WAITING}/events") as response,
    ):
        return response.status_code


def test_streams_past_the_cap_get_429_and_polls_creates_and_health_still_answer(app):
    async def scenario():
        async with httpx.AsyncClient(base_url=app.url, timeout=30) as client:
            started = time.monotonic()
            streams = [await open_stream(client, WAITING) for _ in range(STREAM_CAP)]
            refused, _, _ = await open_stream(client, WAITING)
            # Every stream began after `started`: while less than a lifetime has passed, all were still open
            # when the last one was refused. On a host slower than that, the round proves nothing.
            all_open = time.monotonic() - started < STREAM_SECONDS
            timings = []
            for path in [f"/v1/videos/{WAITING}"] * 10 + ["/healthz"] * 3:
                began = time.monotonic()
                answer = await client.get(path)
                timings.append((answer.status_code, time.monotonic() - began))
            created = await client.post("/v1/videos", json={"prompt": "Dawn.", "num_scenes": 1, "seconds": 1})
            for response, _, _ in streams:
                await response.aclose()
            return streams, refused, all_open, timings, created

    for _ in range(3):
        streams, refused, all_open, timings, created = asyncio.run(scenario())
        wait_for_free_slots(app)
        if all_open:
            break
    assert all_open, "the host never opened the streams within one stream lifetime"
    assert all(response.status_code == 200 for response, _, _ in streams)
    assert all(text.startswith("retry: ") for _, text, _ in streams)  # EventSource's reconnect delay
    assert refused.status_code == 429 and refused.headers["retry-after"] == "5"
    assert refused.json()["error"]["code"] == "too_many_streams"
    assert [status for status, _ in timings] == [200] * len(timings)
    # Answered, not queued behind the streams: a poll takes milliseconds, a wait for a slot a stream lifetime.
    assert max(seconds for _, seconds in timings) < STREAM_SECONDS - 1, timings
    assert created.status_code == 200, created.text


def wait_for_free_slots(app: Deployed) -> None:
    """Closed streams give their slots back (Serve cancels them; their lifetime ends them at the latest)."""
    deadline = time.monotonic() + STREAM_SECONDS + 10
    while stream_status(app) == 429:
        assert time.monotonic() < deadline, "closed streams still hold their slots"
        time.sleep(0.2)


def test_a_stream_ends_after_its_lifetime_and_says_when_to_reconnect(app):
    started = time.monotonic()
    with (
        httpx.Client(base_url=app.url, timeout=30) as client,
        client.stream("GET", f"/v1/videos/{WAITING}/events") as response,
    ):
        text = "".join(response.iter_text())
    elapsed = time.monotonic() - started
    assert text.startswith("retry: 2000\n\n") and "event: video" in text
    assert STREAM_SECONDS - 0.5 <= elapsed < STREAM_SECONDS + 10


def test_a_slow_upload_is_refused_with_408(app):
    url = urlsplit(app.url)
    with socket.create_connection((url.hostname, url.port), timeout=30) as conn:
        conn.sendall(
            f"POST {url.path}/v1/videos HTTP/1.1\r\nHost: {url.netloc}\r\n"
            'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"prompt": '.encode()
        )
        started = time.monotonic()
        raw = b""
        while b'"}}' not in raw and (chunk := conn.recv(65536)):  # headers and body may come apart
            raw += chunk
    reply = raw.decode("latin-1")
    assert reply.startswith("HTTP/1.1 408"), reply[:300]
    assert "request_timeout" in reply and time.monotonic() - started < 20


def test_a_chunked_body_over_the_limit_is_a_413_through_the_proxy(app):
    def chunks():
        for _ in range(BODY_LIMIT // 16384 + 8):
            yield b" " * 16384

    response = app.client.post("/v1/videos", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (
            '{"prompt": ' + "[" * 50_000 + "]" * 50_000 + "}",
            {"content-type": "application/json"},
            400,
            "invalid_json",
        ),
        (
            '{"prompt": "x", "seed": ' + "9" * 5000 + "}",
            {"content-type": "application/json"},
            400,
            "invalid_json",
        ),
        ('{"prompt": "x", "seconds": 1e999}', {"content-type": "application/json"}, 400, "invalid_json"),
        ('{"prompt": "from a web page"}', {"content-type": "text/plain"}, 415, "unsupported_media_type"),
        (
            '{"prompt": "x"}',
            {"content-type": "application/json", "origin": "https://evil.example"},
            403,
            "cross_origin_request",
        ),
    ],
    ids=["deep", "huge-integer", "1e999", "text-plain", "cross-origin"],
)
def test_refused_bodies_through_the_proxy(app, body, headers, status, code):
    response = app.client.post("/v1/videos", content=body, headers=headers)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
