"""Status-poll latency while the ingress holds its cap of event streams and large uploads are in flight.

`status_under_streams` measures `GET /v1/videos/{id}` from one client (a poll every 20 ms, as
`service.latency_under_load` does) while, against the same ingress replica:

- ``streams`` event streams (`GET /v1/videos/{id}/events`, by default `limits.max_event_streams`, the cap)
  stay open for the whole measurement, one per video. Each follows a *held* video: a job row put straight
  into the service's store as ``in_progress`` under a lease of a runner that is not there, so nobody runs
  it, it never ends, and its streams never close (a stand-in for the minutes a job takes on a GPU, at no
  CPU cost here, so what is measured is the streams and the uploads, not generation). One more stream,
  opened once the cap is held (before and after the polls), must get 429 ``too_many_streams``; both
  answers are kept.
- ``uploaders`` clients each keep one multipart create with a large PNG (3000x2000, noisy, about 10 MB:
  the ingress decodes and re-encodes it) in flight, one after the other. Each create starts a cheap job
  (one scene, one second), which the uploader deletes as soon as the create has answered: the load is the
  uploads, not generation (`status_p99_ms` covers that), and no 10 MB reference piles up per upload.

Every loop is bounded in count and in time, all traffic goes to the given base URL (127.0.0.1 here), and
every held video, stream and upload job is gone when the function returns.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from bench.timing import percentile

FIGURE = "status_p99_under_streams_ms"
POLL_S = 0.02
UPLOAD_SIZE = (3000, 2000)
# An upload job: as cheap as the service allows here (the uploader deletes it at once anyway).
UPLOAD_FIELDS = {
    "prompt": "A lantern glows in the snow.",
    "seconds": "1",
    "num_scenes": "1",
    "size": "128x128",
}
HOLD_PROMPT = "A fox runs through snow. It finds a lantern. The lantern glows. Dawn breaks over the hills."
# Bounds on every loop, whatever `seconds` says.
MAX_POLLS = 100_000
MAX_UPLOADS_PER_CLIENT = 1_000
OPEN_TIMEOUT_S = 30.0


def noisy_png(width: int = UPLOAD_SIZE[0], height: int = UPLOAD_SIZE[1], seed: int = 0) -> bytes:
    """A PNG of a colour gradient with Gaussian noise (sigma 4): about 10 MB at 3000x2000.

    Noise compresses badly, so the file is large; pure noise would be 17 MB, over the default
    `limits.max_body_bytes` (16 MiB).
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], axis=-1)
    pixels = np.clip(base + rng.normal(0, 4, (height, width, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def summarize(raw: dict[str, Any]) -> dict[str, Any]:
    """The figure and its companions from `status_under_streams`'s raw result (raw samples kept, rounded).

    The percentiles are None when no poll was answered (``status_errors`` then says how they failed).
    """
    status = raw["status_ms"]
    uploads = raw["upload_ms"]
    summary: dict[str, Any] = {
        "seconds": raw["seconds"],
        "status_p50_ms": percentile(status, 50) if status else None,
        "status_p99_ms": percentile(status, 99) if status else None,
        "status_max_ms": max(status) if status else None,
        "status_samples": len(status),
        "status_errors": raw["status_errors"],
        "stream_cap": raw["stream_cap"],
        "streams_held": raw["streams_held"],
        "streams_open_at_polls": _range(raw["open_streams_at_polls"]),
        "streams_refused_at_open": raw["streams_refused_at_open"],
        "streams_ended_early": raw["streams_ended_early"],
        "stream_events": raw["stream_events"],
        "over_cap": raw["over_cap"],
        "uploads_done": len(uploads),
        "upload_errors": raw["upload_errors"],
        "upload_bytes": raw["upload_bytes"],
        "upload_p50_ms": percentile(uploads, 50) if uploads else None,
        "upload_max_ms": max(uploads) if uploads else None,
        # How many uploads were in flight at the moment each poll was sent: {count: polls}.
        "uploads_in_flight_at_polls": dict(sorted(Counter(raw["uploads_in_flight_at_polls"]).items())),
        "held_statuses_at_end": raw["held_statuses_at_end"],
        "load_average": raw.get("load_average"),
        "raw_ms": {
            "status": [round(v, 2) for v in status],
            "upload": [round(v, 1) for v in uploads],
        },
    }
    return summary


def sse_kind(line: str) -> str | None:
    """What one line of an event stream is: ``retry``, ``event`` (an ``event:`` line), ``keep-alive``, or
    None (``data:`` lines, blank lines and anything else)."""
    if line.startswith("retry:"):
        return "retry"
    if line.startswith("event:"):
        return "event"
    if line.startswith(": keep-alive"):
        return "keep-alive"
    return None


def _range(values: Iterable[int]) -> dict[str, int] | None:
    values = list(values)
    return {"min": min(values), "max": max(values)} if values else None


# -- held videos ----------------------------------------------------------------------------------


def hold_videos(database_path: str | Path, count: int, model: str, lease_s: float) -> list[str]:
    """Put ``count`` jobs straight into the service's store as in progress under a lease of a runner that
    does not exist, live for ``lease_s``: no runner takes them up before then, so they never end."""
    from serve_app.store.jobs import JobRow, JobStore, SceneRow, now

    store = JobStore(database_path)
    runner = f"bench-hold-{uuid.uuid4().hex[:8]}"
    held = []
    try:
        for _ in range(count):
            job_id = f"video_{uuid.uuid4().hex}"
            store.create(
                JobRow(
                    id=job_id,
                    status="in_progress",
                    model=model,
                    prompt=HOLD_PROMPT,
                    size="128x128",
                    seconds="4",
                    request_json=json.dumps({"prompt": HOLD_PROMPT, "num_scenes": 4, "seconds": 4}),
                    created_at=now(),
                    started_at=now(),
                    progress=30,
                    title="Held by the benchmark",
                    script_backend="template",
                    runner_id=runner,
                    lease_until=time.time() + lease_s,
                )
            )
            # Four scenes, as the benchmark job has, so each stream's video object is of a usual size.
            store.set_scenes(
                job_id,
                [
                    SceneRow(job_id, i, caption, caption, 1.0, 127, status="animating", progress=40)
                    for i, caption in enumerate(HOLD_PROMPT.split(". "))
                ],
            )
            held.append(job_id)
    finally:
        store.close()
    return held


# -- streams --------------------------------------------------------------------------------------


@dataclass
class _StreamState:
    open: int = 0
    ended: Counter = field(default_factory=Counter)
    events: Counter = field(default_factory=Counter)
    refused: Counter = field(default_factory=Counter)


class _Streams:
    """Event streams held open from an asyncio loop on a thread of its own."""

    def __init__(self, base_url: str, count: int) -> None:
        self.base_url = base_url
        self.count = count
        self.state = _StreamState()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="bench-streams", daemon=True)
        self._tasks: list[asyncio.Task] = []
        self._client: httpx.AsyncClient | None = None

    def __enter__(self) -> _Streams:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        try:
            self._call(self._close(), OPEN_TIMEOUT_S)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(OPEN_TIMEOUT_S)
            self._loop.close()

    def open(self, video_ids: list[str]) -> None:
        """Open one stream per video, one after the other, each counted once its `retry:` line arrived."""
        self._call(self._open(video_ids), OPEN_TIMEOUT_S + 2 * len(video_ids))

    def probe(self, video_id: str) -> dict[str, Any]:
        """Open one more stream and close it at once: its status and error code (429 past the cap)."""
        return self._call(self._probe(video_id), OPEN_TIMEOUT_S)

    def _call(self, coroutine: Any, timeout: float) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            # Read timeout above the service's 15 s keep-alive: a quiet stream is not a dead one.
            self._client = httpx.AsyncClient(
                base_url=self.base_url,
                timeout=httpx.Timeout(10.0, read=60.0),
                limits=httpx.Limits(max_connections=self.count + 8, max_keepalive_connections=8),
            )
        return self._client

    async def _open(self, video_ids: list[str]) -> None:
        # A stream refused with 429 is tried again for a while: streams of an earlier measurement may
        # still count on the ingress until it notices that their clients left.
        deadline = time.monotonic() + OPEN_TIMEOUT_S
        for video_id in video_ids:
            while True:
                opened = asyncio.Event()
                task = asyncio.create_task(self._hold(video_id, opened))
                await asyncio.wait_for(opened.wait(), OPEN_TIMEOUT_S)
                if not task.done() or time.monotonic() >= deadline:
                    break
                await asyncio.sleep(0.5)
            self._tasks.append(task)

    async def _hold(self, video_id: str, opened: asyncio.Event) -> None:
        counted = False
        try:
            async with self._http().stream("GET", f"/v1/videos/{video_id}/events") as response:
                if response.status_code != 200:
                    self.state.refused[response.status_code] += 1
                    return
                async for line in response.aiter_lines():
                    kind = sse_kind(line)
                    if kind == "retry" and not counted:
                        counted = True
                        self.state.open += 1
                        opened.set()
                    elif kind is not None:
                        self.state.events[kind] += 1
            if counted:  # the service ended the stream
                self.state.ended["ended by the service"] += 1
        except httpx.HTTPError as exc:
            if counted:
                self.state.ended[f"{type(exc).__name__}: {exc}"[:200]] += 1
        finally:
            if counted:
                self.state.open -= 1
            opened.set()

    def wait_closed(self, timeout: float) -> None:
        """Wait (at most ``timeout``) for every held stream to end."""

        async def wait() -> None:
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=timeout)

        self._call(wait(), timeout + 5)

    async def _probe(self, video_id: str) -> dict[str, Any]:
        async with self._http().stream("GET", f"/v1/videos/{video_id}/events") as response:
            answer: dict[str, Any] = {"status": response.status_code}
            if response.status_code != 200:
                body = await response.aread()
                try:
                    answer["code"] = json.loads(body)["error"]["code"]
                except (ValueError, KeyError, TypeError):
                    answer["code"] = None
            return answer

    async def _close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()


# -- uploads --------------------------------------------------------------------------------------


class _Uploads:
    """``clients`` threads, each with one multipart create of ``image`` in flight at a time."""

    def __init__(self, base_url: str, clients: int, image: bytes) -> None:
        self.base_url = base_url
        self.image = image
        self.upload_ms: list[float] = []
        self.errors: Counter = Counter()
        self.in_flight = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, name=f"bench-upload-{i}", daemon=True) for i in range(clients)
        ]

    def __enter__(self) -> _Uploads:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(150)

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=120) as client:
            for _ in range(MAX_UPLOADS_PER_CLIENT):
                if self._stop.is_set():
                    return
                with self._lock:
                    self.in_flight += 1
                started = time.perf_counter()
                try:
                    response = client.post(
                        "/v1/videos",
                        data=UPLOAD_FIELDS,
                        files={"input_reference": ("reference.png", self.image, "image/png")},
                    )
                except httpx.HTTPError as exc:
                    self.errors[type(exc).__name__] += 1
                    continue
                finally:
                    elapsed = (time.perf_counter() - started) * 1000
                    with self._lock:
                        self.in_flight -= 1
                if response.status_code != 200:
                    self.errors[str(response.status_code)] += 1
                    continue
                self.upload_ms.append(elapsed)
                # Its job is not what is measured: stop it and remove its files now.
                try:
                    deleted = client.delete(f"/v1/videos/{response.json()['id']}")
                except httpx.HTTPError as exc:
                    self.errors[f"delete {type(exc).__name__}"] += 1
                    continue
                if deleted.status_code != 200:
                    self.errors[f"delete {deleted.status_code}"] += 1


# -- the measurement ------------------------------------------------------------------------------


def status_under_streams(
    base_url: str,
    database_path: str | Path,
    stream_cap: int,
    model: str,
    streams: int | None = None,
    uploaders: int = 2,
    seconds: float = 40.0,
    image: bytes | None = None,
) -> dict[str, Any]:
    """Status-poll latency while ``streams`` event streams are open and ``uploaders`` uploads in flight.

    Args:
        base_url: the app's URL (`http://127.0.0.1:PORT/bench`).
        database_path: the service's job store (`storage.database_path`), where the held videos go.
        stream_cap: `limits.max_event_streams` of the deployed config.
        model: the served model name (the held videos' `model`).
        streams: streams to hold open; default the cap.
        uploaders: uploads kept in flight at once.
        seconds: how long status is polled once the streams are open and the uploads have started.
        image: the upload's bytes; default `noisy_png()`.

    Returns the raw samples and counts; `summarize` makes the figures of them.
    """
    streams = stream_cap if streams is None else streams
    image = noisy_png() if image is None else image
    # One held video per stream (and one to poll when no stream is asked for).
    held = hold_videos(database_path, max(streams, 1), model, lease_s=seconds + 600)
    status_ms: list[float] = []
    status_errors: Counter = Counter()
    open_at_polls: list[int] = []
    uploads_at_polls: list[int] = []
    over_cap: dict[str, Any] = {}
    held_statuses: Counter = Counter()
    load_before = os.getloadavg()
    try:
        with httpx.Client(base_url=base_url, timeout=30) as client, _Streams(base_url, streams) as opened:
            opened.open(held[:streams])
            if streams >= stream_cap:
                over_cap["before"] = opened.probe(held[0])
            with _Uploads(base_url, uploaders, image) as uploads:
                deadline = time.monotonic() + seconds
                for index in range(MAX_POLLS):
                    if time.monotonic() >= deadline:
                        break
                    open_at_polls.append(opened.state.open)
                    uploads_at_polls.append(uploads.in_flight)
                    started = time.perf_counter()
                    response = client.get(f"/v1/videos/{held[index % len(held)]}")
                    elapsed = (time.perf_counter() - started) * 1000
                    if response.status_code == 200:
                        status_ms.append(elapsed)
                    else:
                        status_errors[str(response.status_code)] += 1
                    time.sleep(POLL_S)
                if streams >= stream_cap:
                    over_cap["after"] = opened.probe(held[0])
            for video_id in held:
                response = client.get(f"/v1/videos/{video_id}")
                held_statuses[
                    response.json()["status"] if response.status_code == 200 else str(response.status_code)
                ] += 1
            load_after = os.getloadavg()
            streams_held, ended_early = opened.state.open, dict(opened.state.ended)
            refused, events = dict(opened.state.refused), dict(opened.state.events)
            # Deleting a held video ends its streams on the service's side (an `error` event), so none is
            # left counting against the cap once this returns.
            _delete(client, held)
            held = []
            opened.wait_closed(10)
    finally:
        if held:
            with httpx.Client(base_url=base_url, timeout=30) as client:
                _delete(client, held)
    return {
        "seconds": seconds,
        "stream_cap": stream_cap,
        "streams_held": streams_held,
        "streams_refused_at_open": refused,
        "streams_ended_early": ended_early,
        "stream_events": events,
        "over_cap": over_cap,
        "status_ms": status_ms,
        "status_errors": dict(status_errors),
        "open_streams_at_polls": open_at_polls,
        "uploads_in_flight_at_polls": uploads_at_polls,
        "upload_ms": uploads.upload_ms,
        "upload_errors": dict(uploads.errors),
        "upload_bytes": len(image),
        "held_statuses_at_end": dict(held_statuses),
        # The host's 1/5/15-minute load averages: other work on the machine moves every latency here.
        "load_average": {"before": load_before, "after": load_after},
    }


def _delete(client: httpx.Client, video_ids: list[str]) -> None:
    for video_id in video_ids:
        client.delete(f"/v1/videos/{video_id}")
