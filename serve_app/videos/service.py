"""The API's logic, apart from HTTP: create, read, list, cancel and delete videos.

``VideoService`` stores jobs and answers about them; the job runner (``serve_app.jobs.runner``) makes them. It
receives its store and its ``RunnerSignals`` in the constructor, so tests can build it with fakes.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import secrets
import shutil
import tempfile
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from pydantic import ValidationError

from core import metrics
from core.errors import InvalidInput
from core.files import VARIANT_FILES, JobFiles, atomic_output, is_job_id
from core.status import TERMINAL, JobStatus, Variant
from engines.media import audio
from serve_app.api import uploads
from serve_app.api.downloads import StoredContent
from serve_app.api.errors import Conflict, NotFound, Overloaded, Unprocessable, bad_value
from serve_app.api.validation import client_errors
from serve_app.config import AppConfig
from serve_app.jobs.plan import JobPlan, plan_job
from serve_app.jobs.stages import RETRYABLE
from serve_app.protocol import (
    CreateVideoRequest,
    ExtendRequest,
    ModelList,
    ModelObject,
    NarrationObject,
    Notice,
    RemixRequest,
    SceneObject,
    VideoDeleted,
    VideoError,
    VideoList,
    VideoObject,
    WebhookState,
    parse_create,
)
from serve_app.store.jobs import IdempotencyConflict, JobRow, JobStore, QueueFull, SceneRow, now
from serve_app.webhooks import delivery as webhooks

logger = logging.getLogger("ray.serve")

EVENT_POLL_S = 0.5
EVENT_KEEPALIVE_S = 15.0
EVENT_RETRY_MS = 2000  # what EventSource waits before it reconnects to a stream that ended


class RunnerSignals(Protocol):
    """What the ingress tells the job runners; both are hints: the store is what they act on."""

    async def job_stored(self, job_id: str) -> None:
        """A job was stored: a runner may take it up now instead of at its next poll."""
        ...

    async def job_stopped(self, job_id: str) -> None:
        """A job was cancelled or deleted: its animation may stop at the next denoising step."""
        ...


class ServeSignals:
    """``RunnerSignals`` over the JobRunner and JobBoard deployments' handles."""

    def __init__(self, runner: Any, board: Any) -> None:
        self.runner = runner
        self.board = board

    async def job_stored(self, job_id: str) -> None:
        try:
            await self.runner.wake.remote()
        except RETRYABLE as exc:  # a runner finds the job at its next poll anyway
            logger.warning("job %s: no runner heard of it at once: %s", job_id, exc)

    async def job_stopped(self, job_id: str) -> None:
        try:
            await self.board.cancel.remote(job_id)
        except RETRYABLE as exc:
            # The runner still stops at its next look at the store; a batch already running finishes unheard.
            logger.warning("cancel of %s did not reach the JobBoard: %s", job_id, exc)


@dataclass
class Content:
    """A finished video's file, opened: a DELETE that comes after cannot take it from a download."""

    file: BinaryIO
    media_type: str
    filename: str


class VideoService:
    """Videos as the API sees them, backed by the job store.

    Args:
        config: the application config.
        store: the job store.
        runners: what the job runners are told of creates, cancels and deletes.
    """

    def __init__(self, config: AppConfig, store: JobStore, runners: RunnerSignals) -> None:
        self.config = config
        self.store = store
        self.runners = runners
        self.storage = config.storage.open()
        self.started_at = now()
        self._changed = asyncio.Event()
        # A token for each event stream now open (see open_events).
        self._streams: set[object] = set()
        # Each video's latest object as JSON, shared by all its streams: one read per change, not one each.
        self._snapshots: dict[str, tuple[float, str | None, str]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None  # the streams' loop, for writes heard off it
        store.add_listener(self._on_write)

    # -- create ---------------------------------------------------------------------------------

    async def create(
        self,
        request: CreateVideoRequest,
        reference: bytes | None,
        idempotency_key: str | None,
        music: bytes | None = None,
    ) -> VideoObject:
        """Validate ``request``, store the job and start it. Same key and body: the same job.

        ``reference`` and ``music``: the bytes of an uploaded first image and music bed, if any.
        """
        body_hash = await asyncio.to_thread(_hash, request, reference, music)  # a large upload hashes for ms
        # 1. A retry of a request that already made its job gets that job, even when the queue is full.
        if idempotency_key is not None:
            existing = self.store.get_by_key(idempotency_key)
            if existing is not None:
                return self._replay(existing, idempotency_key, body_hash)
        # 2. Back-pressure before any work: a full queue answers 429 with a time to come back.
        self._check_queue()
        # 3. Resolve and check everything the job will use, so a bad request fails now, not later.
        seed = request.seed if request.seed is not None else secrets.randbelow(2**32)
        plan = plan_job(request, self.config, seed)
        webhook_url = await self._webhook_url(request.webhook_url)
        reference_png = await _reference_png(request, reference)
        self._check_narration(request)
        bed = await self._music(request, music)
        job = self._job_row(
            request, plan, webhook_url=webhook_url, idempotency_key=idempotency_key, body_hash=body_hash
        )
        return await self._store(job, reference_png, music=bed)

    def _check_queue(self) -> None:
        """Refuse a new job before any work on it when the queue is full. Only a hint: creates racing for
        the last place all pass it, and the insert decides (``_store``)."""
        queued = self.store.counts().get(JobStatus.QUEUED, 0)
        if queued >= self.config.limits.max_queued_jobs:
            raise _queue_full(queued)

    def _check_narration(self, request: CreateVideoRequest) -> None:
        if request.narration not in (None, False) and self.config.narration.backend == "none":
            raise bad_value(
                "narration", request.narration, "this deployment has no narrator (narration.backend: none)"
            )

    async def _music(self, request: CreateVideoRequest, upload: bytes | None) -> Path | bytes | None:
        """The music bed a request asks for, checked: the uploaded bytes, or the named track's file.

        A track of the music folder is checked as an upload is: an operator's empty or broken file is a 400
        now, not a job that fails (or, without ffmpeg's time limit, never ends) at its stitch.
        """
        ffmpeg_path = self.config.video_processing.ffmpeg_path
        if upload is not None:
            await asyncio.to_thread(_check_music, upload, f"<{len(upload)} bytes>", ffmpeg_path)
            return upload
        if request.music is None:
            return None
        folder = self.config.video_processing.audio.music_folder
        if folder is None:
            raise bad_value(
                "music",
                request.music,
                "this deployment has no music folder (video_processing.audio.music_folder)",
            )
        tracks = await asyncio.to_thread(music_tracks, folder)
        if request.music not in tracks:
            names = ", ".join(sorted(tracks)[:20]) or "none"
            raise bad_value("music", request.music, f"no such track; the music folder has: {names}")
        await asyncio.to_thread(_check_music, tracks[request.music], request.music, ffmpeg_path)
        return tracks[request.music]

    async def _store(
        self,
        job: JobRow,
        reference_png: bytes | None,
        inherited: Sequence[tuple[JobFiles, int]] = (),
        music: bytes | Path | JobFiles | None = None,
    ) -> VideoObject:
        """Store a new job with its reference image, music bed and the clips it takes over, then start it.

        ``music``: the caller's upload, a track of the music folder, or the bed of the video it starts from.
        The insert counts the queue again, in its own transaction: of creates racing for the last place in
        it, one stores its job and the others are refused (429), their files removed.
        """
        # The files are written before the row, so a runner never sees a job without them; a crash in
        # between leaves a folder without a row, which the sweep removes.
        files = JobFiles(self.storage, job.id)
        try:
            if reference_png is not None:
                await asyncio.to_thread(files.write_reference, reference_png)
            for source, index in inherited:
                await asyncio.to_thread(_take, files, source, source.clip(index), files.inherited(index))
                if await asyncio.to_thread(source.has, source.narration(index)):
                    narration = source.narration(index)
                    await asyncio.to_thread(_take, files, source, narration, files.inherited_narration(index))
            if isinstance(music, JobFiles):
                await asyncio.to_thread(_take, files, music, music.music, files.music)
            elif music is not None:
                await asyncio.to_thread(_write_music, files, music)
            self.store.create(job, max_queued=self.config.limits.max_queued_jobs)
        except IdempotencyConflict as conflict:
            files.remove()
            return self._replay(conflict.existing, job.idempotency_key, job.request_hash or "")
        except QueueFull as full:
            files.remove()
            raise _queue_full(full.queued) from None
        except BaseException:
            files.remove()
            raise
        finally:
            files.forget()  # the ingress reads none of them again
        await self.runners.job_stored(job.id)
        return self.to_objects([job])[0]

    def _job_row(
        self,
        request: CreateVideoRequest,
        plan: JobPlan,
        *,
        webhook_url: str | None,
        idempotency_key: str | None = None,
        body_hash: str | None = None,
        **lineage: Any,
    ) -> JobRow:
        """The row of a new job: ``request`` as it will run, under the ``plan`` it was checked against.

        ``idempotency_key`` and ``body_hash``: a create's key and the hash of its body (None for a remix or
        an extension, which take none); ``lineage``: the columns naming the video it starts from.
        """
        stored = request.model_dump(mode="json", exclude={"input_reference", "webhook_url"})
        stored["seed"] = plan.seed
        return JobRow(
            id=f"video_{uuid.uuid4().hex}",
            status=JobStatus.QUEUED,
            model=self.config.served_model_name,
            prompt=request.prompt,
            size=f"{plan.size[0]}x{plan.size[1]}",
            seconds=f"{plan.seconds:g}",
            request_json=json.dumps(stored),
            created_at=now(),
            idempotency_key=idempotency_key,
            request_hash=body_hash,
            webhook_url=webhook_url,
            **lineage,
        )

    async def _webhook_url(self, asked: str | None) -> str | None:
        """The webhook of a new job (the request's, else the deployment's), checked; None for none."""
        hooks = self.config.webhooks
        url = asked or hooks.url
        if url is None:
            return None
        if hooks.signing_key() is None:
            if asked is None:
                logger.warning("webhooks.url is set but %s is not: no webhook is sent", hooks.secret_env)
                return None
            raise bad_value(
                "webhook_url",
                asked,
                f"webhooks are off: the server has no signing secret ({hooks.secret_env})",
            )
        try:
            await asyncio.to_thread(webhooks.check_target, url, hooks.allowed_hosts)
        except webhooks.WebhookRefused as refused:
            raise bad_value("webhook_url", url, refused.reason) from None
        return url

    # -- remix, edit, extend --------------------------------------------------------------------

    async def remix(self, source_id: str, remix: RemixRequest, param: str = "video_id") -> VideoObject:
        """A new video from a completed one's settings with a new prompt (and, optionally, scenes).

        Scenes made of the same things as the source's scene at their place take over its clip. ``param``:
        where the request named the source, for its errors (the path's ``video_id``; an edit's ``video.id``).
        """
        source = self._source(source_id, param)
        if source.extended_from_video_id is not None:
            raise bad_value(
                param,
                source_id,
                "is an extension: remix the video it extends, then extend the remix",
            )
        fields = source.request | {"prompt": remix.prompt}
        fields.pop("scenes", None)
        if remix.scenes is not None:
            fields.pop("num_scenes", None)
            fields["scenes"] = [scene.model_dump(mode="json", exclude_none=True) for scene in remix.scenes]
        request = self._reparse(fields, "prompt")
        plan = plan_job(request, self.config, source.request["seed"])
        self._check_queue()  # before its clips are copied
        webhook_url = await self._webhook_url(remix.webhook_url)
        job = self._job_row(
            request,
            plan,
            webhook_url=webhook_url,
            remixed_from_video_id=source.id,
            inherited_json=_scenes_json(source),
        )
        reference = await self._source_reference(source)
        return await self._store(job, reference, self._clips(source), await self._source_music(source))

    async def extend(self, extension: ExtendRequest) -> VideoObject:
        """A new video: a completed one, then new scenes written from the prompt that start from its end."""
        source = self._source(extension.video.id, "video.id")
        limits = self.config.limits
        total = float(source.seconds) + extension.seconds
        if total > limits.max_seconds:
            raise bad_value(
                "seconds",
                extension.seconds,
                f"{source.id} lasts {source.seconds} s and a video may last at most {limits.max_seconds:g} s",
            )
        fields = {
            key: value
            for key, value in source.request.items()
            if key not in ("scenes", "num_scenes", "seconds", "prompt")
        } | {"prompt": extension.prompt, "seconds": extension.seconds}
        request = self._reparse(fields, "prompt")
        plan = plan_job(request, self.config, source.request["seed"], extra_joins=1)
        if plan.num_scenes + len(source.scenes) > limits.max_scenes:
            raise bad_value(
                "seconds",
                extension.seconds,
                f"{source.id} has {len(source.scenes)} scenes, this adds {plan.num_scenes}, and a video has "
                f"at most {limits.max_scenes} (limits.max_scenes)",
            )
        self._check_queue()  # before its clips are copied
        webhook_url = await self._webhook_url(extension.webhook_url)
        job = self._job_row(
            request,
            plan,
            webhook_url=webhook_url,
            extended_from_video_id=source.id,
            inherited_json=_scenes_json(source),
        )
        job.seconds = f"{total:g}"
        return await self._store(job, None, self._clips(source), await self._source_music(source))

    def _source(self, video_id: str, param: str) -> JobRow:
        """The completed video a remix or an extension starts from."""
        job = self.store.get(video_id) if is_job_id(video_id) else None
        if job is None:
            raise NotFound(f"no video {video_id!r}", param=param, code="video_not_found")
        if job.status != JobStatus.COMPLETED:
            raise Conflict(
                f"video {video_id} is {job.status}; only a completed video can be remixed or extended",
                param=param,
                code="not_ready",
            )
        return job

    def _reparse(self, fields: dict[str, Any], param: str) -> CreateVideoRequest:
        """A create request made of a source's stored settings and new fields, checked as a create is."""
        try:
            return parse_create(fields, self.config.limits)
        except ValidationError as exc:
            first = client_errors(CreateVideoRequest, exc)[0]
            where = ".".join(str(part) for part in first["loc"]) or param
            raise bad_value(where, fields.get(where, "<from the source video>"), first["msg"]) from None

    def _clips(self, source: JobRow) -> list[tuple[JobFiles, int]]:
        files = JobFiles(self.storage, source.id)
        return [(files, scene.idx) for scene in source.scenes]

    async def _source_music(self, source: JobRow) -> JobFiles | None:
        """The files of a video a remix or an extension starts from, when it has a music bed."""
        files = JobFiles(self.storage, source.id)
        return files if await asyncio.to_thread(files.has, files.music) else None

    async def _source_reference(self, source: JobRow) -> bytes | None:
        files = JobFiles(self.storage, source.id)
        try:
            return await asyncio.to_thread(lambda: files.local(files.reference).read_bytes())
        except FileNotFoundError:
            return None
        finally:
            files.forget()

    def _replay(self, existing: JobRow, key: str | None, body_hash: str) -> VideoObject:
        """The job an idempotency key already made; 422 if this request's body is not the one it was made with."""
        if existing.request_hash != body_hash:
            raise Unprocessable(
                f"Idempotency-Key {key!r} was used with a different request",
                param="Idempotency-Key",
                code="idempotency_key_reused",
            )
        return self.to_objects([existing])[0]

    # -- read -----------------------------------------------------------------------------------

    def retrieve(self, video_id: str) -> VideoObject:
        return self.to_objects([self._job(video_id)])[0]

    def list(self, after: str | None, limit: int, order: str) -> VideoList:
        try:
            jobs, has_more = self.store.page(after, limit, order)
        except KeyError:
            raise bad_value("after", after, "no such video") from None
        data = self.to_objects(jobs)
        return VideoList(
            data=data,
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
            has_more=has_more,
        )

    def content(self, video_id: str, variant: str) -> Content | StoredContent | str:
        """The file of a finished video's ``variant`` with its media type and download name: opened (on
        local storage), found in the object store, or (with ``storage.presign``) a presigned URL to it."""
        job = self._job(video_id)
        if job.status != JobStatus.COMPLETED:
            raise Conflict(
                f"video {video_id} is {job.status}; content is ready when it is completed", code="not_ready"
            )
        files = JobFiles(self.storage, video_id)
        path = files.variant(variant)
        media_type = VARIANT_FILES[Variant(variant)].media_type
        missing = NotFound(f"video {video_id} has no {variant}", param="variant")
        if not self.storage.remote:
            try:
                file = path.open("rb")
            except (FileNotFoundError, NotADirectoryError):  # none made, or deleted since the row was read
                raise missing from None
            return Content(file, media_type, f"{video_id}{path.suffix}")
        stored = self.storage.stat(files.key(path))
        if stored is None:
            raise missing
        if self.config.storage.presign:
            url = self.storage.presign(files.key(path), self.config.storage.presign_seconds)
            if url is not None:
                return url
        return StoredContent(self.storage, files.key(path), stored, media_type, f"{video_id}{path.suffix}")

    def models(self) -> ModelList:
        return ModelList(data=[ModelObject(id=self.config.served_model_name, created=self.started_at)])

    def open_events(self, video_id: str) -> AsyncIterator[str]:
        """The event stream of ``video_id``: 404 for an unknown video, 429 past ``limits.max_event_streams``.

        Streams are capped so that they cannot take the replica's request slots that polls need. A stream
        gives its slot back when it ends, fails or is cancelled (Serve cancels it when the client leaves),
        or, if it never ran, when it is dropped.
        """
        self._job(video_id)  # 404 before the stream starts
        cap = self.config.limits.max_event_streams
        if len(self._streams) >= cap:
            raise Overloaded(
                f"{cap} event streams are open on this replica (limits.max_event_streams); poll "
                f"GET /v1/videos/{video_id} or try again later",
                code="too_many_streams",
                headers={"Retry-After": "5"},
            )
        slot = object()
        self._streams.add(slot)
        stream = self._holding(slot, self.events(video_id))
        weakref.finalize(stream, self._streams.discard, slot)
        return stream

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
        last, quiet = None, 0.0
        while time.monotonic() < ends_at:
            changed = self._changed  # taken before reading, so a write in between is not missed
            status, video = self._snapshot(video_id)
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

    def _snapshot(self, video_id: str) -> tuple[str | None, str]:
        """A video's status and object as JSON, read once per change (or per poll interval) for all streams."""
        cached = self._snapshots.get(video_id)
        if cached is not None and time.monotonic() - cached[0] < EVENT_POLL_S:
            return cached[1], cached[2]
        job = self.store.get(video_id)
        status, video = (job.status, self.to_objects([job])[0].model_dump_json()) if job else (None, "")
        if len(self._snapshots) > 2 * self.config.limits.max_event_streams:
            self._snapshots.clear()  # stale entries of videos no stream follows any more
        self._snapshots[video_id] = (time.monotonic(), status, video)
        return status, video

    # -- cancel and delete ----------------------------------------------------------------------

    async def cancel(self, video_id: str) -> VideoObject:
        """Stop a queued or running video: it ends ``cancelled`` and its SVD work stops at the next step."""
        job = self._job(video_id)
        # One conditional write decides a cancel racing the job's own end: whichever lands first stands.
        if job.status in TERMINAL or not self.store.finish(
            video_id, JobStatus.CANCELLED, self.config.jobs.retention_seconds
        ):
            status = self._job(video_id).status
            raise Conflict(f"video {video_id} is already {status}", code="already_finished")
        await self._stop(video_id)
        metrics.get().jobs_finished.inc(tags={"status": JobStatus.CANCELLED})
        return self.retrieve(video_id)

    async def delete(self, video_id: str) -> VideoDeleted:
        """Stop the video's job if it runs, then remove its row and every artifact."""
        self._job(video_id)
        await self._stop(video_id)
        self.store.delete(video_id)
        await asyncio.to_thread(JobFiles(self.storage, video_id).remove)
        return VideoDeleted(id=video_id)

    async def _stop(self, video_id: str) -> None:
        # The runner stops the job when it next finds it ended or gone in the store; the signal stops the
        # animator's batch at its next denoising step.
        await self.runners.job_stopped(video_id)

    def counts(self) -> dict[JobStatus, int]:
        """Jobs by status."""
        return self.store.counts()

    # -- helpers --------------------------------------------------------------------------------

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

    def _job(self, video_id: str) -> JobRow:
        job = self.store.get(video_id) if is_job_id(video_id) else None
        if job is None:
            raise NotFound(f"no video {video_id!r}", param="video_id", code="video_not_found")
        return job

    def to_objects(self, jobs: Sequence[JobRow]) -> builtins.list[VideoObject]:
        """The video objects of ``jobs``, with their places in the queue and webhooks (one query each, and
        none where no job is queued or has a webhook: a running job's poll reads the store once)."""
        positions = self.store.queue_positions([job.id for job in jobs if job.status == JobStatus.QUEUED])
        hooks = self.store.webhook_states([job.id for job in jobs if job.webhook_url])
        start_at = self._start_times() if positions else None
        objects = []
        for job in jobs:
            video = self.to_object(job)
            video.queue_position = positions.get(job.id)
            if video.queue_position is not None:
                video.estimated_start_at = start_at.get(video.queue_position) if start_at else None
            hook = hooks.get(job.id)
            if hook is not None:
                video.webhook = WebhookState(
                    status=hook.status,
                    attempts=hook.attempts,
                    last_error=hook.last_error,
                )
            elif job.webhook_url:
                video.webhook = WebhookState(status="waiting", attempts=0)
            objects.append(video)
        return objects

    def _start_times(self) -> _StartTimes:
        """A rough start time for each place in the queue: the jobs running and those ahead drain
        ``max_concurrent_jobs`` per runner at a time, each taking as long as recent jobs took."""
        job_seconds, runners = self.store.pace()
        running = self.store.counts().get(JobStatus.IN_PROGRESS, 0)
        slots = max(1, runners) * self.config.jobs.max_concurrent_jobs
        return _StartTimes(job_seconds, running, slots)

    @staticmethod
    def _variants(job: JobRow) -> builtins.list[str]:
        """The content variants a completed job has (none before it completes): all, captions only when its
        request asked for them. Read from the row, not the disk: every poll and stream update builds this."""
        if job.status != JobStatus.COMPLETED:
            return []
        left_out = set()
        if not job.request.get("captions", True):
            left_out.add(Variant.CAPTIONS)
        if not job.has_audio:
            left_out.add(Variant.AUDIO)
        return [variant.value for variant in Variant if variant not in left_out]

    def to_object(self, job: JobRow) -> VideoObject:
        """The video object of ``job`` as its row has it (``to_objects`` adds the queue and the webhook)."""
        return VideoObject(
            id=job.id,
            model=job.model,
            status=job.status,
            progress=job.progress,
            created_at=job.created_at,
            completed_at=job.completed_at if job.status in TERMINAL else None,
            expires_at=job.expires_at,
            prompt=job.prompt,
            size=job.size,
            seconds=job.seconds,
            error=VideoError(code=job.error_code, message=job.error_message or "")
            if job.error_code
            else None,
            variants=self._variants(job),
            remixed_from_video_id=job.remixed_from_video_id,
            extended_from_video_id=job.extended_from_video_id,
            title=job.title,
            writer=job.script_backend,
            scenes=[_scene_object(scene) for scene in job.scenes],
            notices=[Notice(**notice) for notice in job.notices],
        )


def _scene_object(scene: SceneRow) -> SceneObject:
    spoken = scene.narration
    return SceneObject(
        index=scene.idx,
        caption=scene.caption,
        visual_prompt=scene.visual_prompt,
        duration_s=scene.duration_s,
        status=scene.status,
        progress=scene.progress,
        generator=scene.generator,
        keyframe_generator=scene.keyframe_generator,
        fallback_reason=scene.fallback_reason,
        attempts=scene.attempts,
        batch_size=scene.batch_size,
        segments=scene.segments,
        segments_done=scene.segments_done,
        source_video_id=scene.source_video_id,
        narrator=spoken["narrator"] if spoken and not spoken.get("silent") else None,
        narration=NarrationObject(**spoken) if spoken else None,
    )


@dataclass
class _StartTimes:
    job_seconds: float | None
    running: int
    slots: int

    def get(self, position: int) -> int | None:
        if self.job_seconds is None:
            return None
        waves = (self.running + position) // self.slots
        return now() + math.ceil(waves * self.job_seconds)


def _queue_full(queued: int) -> Overloaded:
    return Overloaded(
        f"{queued} videos are waiting; try again later", code="queue_full", headers={"Retry-After": "30"}
    )


def _scenes_json(source: JobRow) -> str:
    """A finished video's scenes, as a remix or an extension of it keeps them (``JobRow.inherited``)."""
    return json.dumps([dataclasses.asdict(scene) for scene in source.scenes])


def _take(files: JobFiles, source: JobFiles, path: Path, target: Path) -> None:
    """Give ``files`` the source video's file ``path`` as ``target``: a hard link or a copy in the store.

    Either way the new video keeps its clips when the source video is deleted or expires.
    """
    try:
        files.take(source, path, target)
    except FileNotFoundError:
        raise Conflict(f"a clip of the source video is gone ({path.name})", code="not_ready") from None


def _sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def _hash(request: CreateVideoRequest, reference: bytes | None, music: bytes | None = None) -> str:
    digest = hashlib.sha256(request.model_dump_json().encode())
    if reference is not None:
        digest.update(hashlib.sha256(reference).digest())
    if music is not None:
        digest.update(b"music" + hashlib.sha256(music).digest())
    return digest.hexdigest()


def music_tracks(folder: str) -> dict[str, Path]:
    """The music beds of the configured folder by file stem (WAV, MP3, Ogg, FLAC, M4A files)."""
    path = Path(folder)
    if not path.is_dir():
        return {}
    suffixes = {f".{kind}" for kind in audio.MUSIC_FORMATS}
    return {
        entry.stem: entry
        for entry in sorted(path.iterdir())
        if entry.suffix.lower() in suffixes and entry.is_file() and audio.MUSIC_NAME.fullmatch(entry.stem)
    }


def _check_music(music: bytes | Path, shown: str, ffmpeg_path: str | None) -> None:
    """Refuse a music bed (an upload's bytes, or a track's file) that is not a WAV, MP3, Ogg, FLAC or M4A file
    ffmpeg can decode to at least ``audio.MIN_MUSIC_S`` of sound: a 400 naming `music`, showing ``shown``.

    The format comes from the first bytes, as the stitch takes it from the job's copy.
    """
    with tempfile.TemporaryDirectory() as scratch:
        if isinstance(music, bytes):
            path = Path(scratch) / "music.audio"
            path.write_bytes(music)
        else:
            path = music
        with open(path, "rb") as file:
            kind = audio.sniff_music(file.read(16))
        if kind is None:
            raise bad_value("music", shown, "is not a WAV, MP3, Ogg, FLAC or M4A file")
        try:
            audio.check_music(path, kind, ffmpeg_path)
        except InvalidInput as exc:
            raise bad_value("music", shown, exc.reason) from None


def _write_music(files: JobFiles, music: bytes | Path) -> None:
    """The job's music bed: the caller's upload, or a copy of a track of the music folder."""
    with atomic_output(files.music, "music") as temp:
        if isinstance(music, bytes):
            temp.write_bytes(music)
        else:
            shutil.copyfile(music, temp)
    files.keep(files.music)


async def _reference_png(request: CreateVideoRequest, upload: bytes | None) -> bytes | None:
    """The request's reference image (an upload or a data URL) as upright RGB PNG bytes, or None.

    Decoding a large image takes a while: it runs off the event loop.
    """
    if request.input_reference is not None:
        url = request.input_reference.image_url
        image = await asyncio.to_thread(uploads.decode_data_url, url, "input_reference.image_url")
    elif upload is not None:
        image = await asyncio.to_thread(uploads.decode_image, upload, "input_reference")
    else:
        return None
    return await asyncio.to_thread(uploads.encode_png, image)
