"""The event hub: each video's server-sent event stream, woken by the store's writes.

Every stream of a replica waits on one event that any write sets (this process's at once; on PostgreSQL
other processes' too, through the store's listener), and re-reads its video only when it changed: the
objects are shared between the streams of one video, one read per change, not one each.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import weakref
from collections.abc import AsyncIterator, Iterator

from core.errors import Overloaded, StoreUnavailable
from core.status import TERMINAL, JobStatus
from serve_app.config import AppConfig
from serve_app.store.jobs import JobStore
from serve_app.videos.objects import VideoObjects

EVENT_POLL_S = 0.5
EVENT_KEEPALIVE_S = 15.0
EVENT_RETRY_MS = 2000  # what EventSource waits before it reconnects to a stream that ended


class EventHub:
    """The event streams of one replica, capped at ``limits.max_event_streams``.

    Args:
        config: the application config.
        store: the job store; the hub listens to its writes.
        objects: how a video's row reads as its object.
    """

    def __init__(self, config: AppConfig, store: JobStore, objects: VideoObjects) -> None:
        self.config = config
        self.store = store
        self.objects = objects
        self._changed = asyncio.Event()
        # A token for each event stream now open (see open_events).
        self._streams: set[object] = set()
        # Each video's latest object as JSON, shared by all its streams: one read per change, not one each.
        self._snapshots: dict[str, tuple[float, JobStatus | None, str]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None  # the streams' loop, for writes heard off it
        store.add_listener(self._on_write)

    def open_events(self, video_id: str) -> AsyncIterator[str]:
        """The event stream of ``video_id``: 404 for an unknown video, 429 past ``limits.max_event_streams``.

        Streams are capped so that they cannot take the replica's request slots that polls need. A stream
        gives its slot back when it ends, fails or is cancelled (Serve cancels it when the client leaves),
        or, if it never ran, when it is dropped.
        """
        self.objects.job(video_id)  # 404 before the stream starts
        slot = self._take_slot(f"poll GET /v1/videos/{video_id} or try again later")
        stream = self._holding(slot, self.events(video_id))
        weakref.finalize(stream, self._streams.discard, slot)
        return stream

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """A place among the event streams for a request that waits for its video (``final_status``): it
        holds a request slot as long as a stream does. 429 past ``limits.max_event_streams``."""
        slot = self._take_slot("create the video with POST /v1/videos and poll it, or try again later")
        try:
            yield
        finally:
            self._streams.discard(slot)

    def _take_slot(self, advice: str) -> object:
        cap = self.config.limits.max_event_streams
        if len(self._streams) >= cap:
            raise Overloaded(
                f"{cap} event streams and sync requests are open on this replica (limits.max_event_streams); "
                + advice,
                code="too_many_streams",
                headers={"Retry-After": "5"},
            )
        slot = object()
        self._streams.add(slot)
        return slot

    async def _holding(self, slot: object, stream: AsyncIterator[str]) -> AsyncIterator[str]:
        try:
            async for chunk in stream:
                yield chunk
        finally:
            self._streams.discard(slot)

    async def events(self, video_id: str) -> AsyncIterator[str]:
        """Server-sent events: the video object each time it changes, ending at a final status.

        A comment line every ``EVENT_KEEPALIVE_S`` keeps proxies from closing a quiet stream; after
        ``limits.event_stream_max_seconds`` the stream ends and the client reconnects (``retry:``).
        """
        self._loop = asyncio.get_running_loop()
        yield f"retry: {EVENT_RETRY_MS}\n\n"
        ends_at = time.monotonic() + self.config.limits.event_stream_max_seconds
        last: str | None = None
        quiet = 0.0
        while time.monotonic() < ends_at:
            changed = self._changed  # taken before reading, so a write in between is not missed
            status: JobStatus | None
            video: str | None
            try:
                status, video = self._snapshot(video_id)
            except StoreUnavailable:
                # The store is away (a restart, a failover): the stream stays open, kept alive, and reads
                # again at the next poll.
                status, video = JobStatus.IN_PROGRESS, last
            if status is None:
                yield _sse(
                    "error", {"error": {"code": "video_not_found", "message": f"{video_id} was deleted"}}
                )
                return
            if video != last:
                last, quiet = video, 0.0
                yield f"event: video\ndata: {video}\n\n"
            elif quiet >= EVENT_KEEPALIVE_S:
                quiet = 0.0
                yield ": keep-alive\n\n"
            if status in TERMINAL:
                return
            # Woken by this process's own writes at once; the timeout catches writes from other replicas.
            started = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), EVENT_POLL_S)
            quiet += time.monotonic() - started

    async def final_status(self, video_id: str, timeout_s: float) -> JobStatus | None:
        """``video_id``'s final status once it has one, woken as the event streams are (no stream slot is
        taken); its status then if ``timeout_s`` passes first; None once it is deleted."""
        self._loop = asyncio.get_running_loop()
        ends_at = time.monotonic() + timeout_s
        while True:
            changed = self._changed  # taken before reading, so a write in between is not missed
            try:
                status, _ = self._snapshot(video_id)
            except StoreUnavailable:
                if time.monotonic() >= ends_at:
                    raise  # the answer is due, and the store cannot give it
                status = JobStatus.IN_PROGRESS  # not known while the store is away: wait on
            left = ends_at - time.monotonic()
            if status is None or status in TERMINAL or left <= 0:
                return status
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), min(EVENT_POLL_S, left))

    def _snapshot(self, video_id: str) -> tuple[JobStatus | None, str]:
        """A video's status and object as JSON, read once per change (or per poll interval) for all streams."""
        cached = self._snapshots.get(video_id)
        if cached is not None and time.monotonic() - cached[0] < EVENT_POLL_S:
            return cached[1], cached[2]
        job = self.store.get(video_id)
        status, video = (
            (job.status, self.objects.to_objects([job])[0].model_dump_json()) if job else (None, "")
        )
        if len(self._snapshots) > 2 * self.config.limits.max_event_streams:
            self._snapshots.clear()  # stale entries of videos no stream follows any more
        self._snapshots[video_id] = (time.monotonic(), status, video)
        return status, video

    def _on_write(self, job_id: str) -> None:
        """Store listener: wake every event stream (each re-reads its own video and sends it if changed)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            # Another thread: the store's listening thread (a write of another process, on PostgreSQL), or
            # a write outside the event loop. Hand it to the streams' loop; with none, they poll.
            loop = self._loop
            try:
                if loop is None:
                    raise RuntimeError("no stream has started")
                loop.call_soon_threadsafe(self._on_write, job_id)
            except RuntimeError:  # no loop, or it closed meanwhile
                self._snapshots.pop(job_id, None)
            return
        self._snapshots.pop(job_id, None)
        self._changed.set()
        self._changed = asyncio.Event()


def _sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"
