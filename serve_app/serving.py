"""The API's logic, apart from HTTP: create, read, list and delete videos, and run their jobs.

``VideoService`` receives its store and job runner in the constructor, so tests can build it with fakes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from serve_app import metrics
from serve_app.config import AppConfig
from serve_app.errors import Conflict, NotFound, Overloaded, Unprocessable, bad_value
from serve_app.jobs import RETRYABLE, JobRunner
from serve_app.planning import plan_job
from serve_app.protocol import (
    TERMINAL,
    CreateVideoRequest,
    ModelList,
    ModelObject,
    SceneObject,
    VideoDeleted,
    VideoError,
    VideoList,
    VideoObject,
)
from serve_app.storage import CONTENT_TYPES, JOB_ID, JobFiles
from serve_app.store import IdempotencyConflict, JobRow, JobStore, now

logger = logging.getLogger("ray.serve")

MAX_REFERENCE_PIXELS = 40_000_000  # a decompression bomb is refused before it is decoded
EVENT_POLL_S = 0.5
EVENT_KEEPALIVE_S = 15.0


class VideoService:
    """Videos as the API sees them, backed by the job store; jobs run as tasks on this event loop.

    Args:
        config: the application config.
        store: the job store.
        runner: runs one job to its end.
    """

    def __init__(self, config: AppConfig, store: JobStore, runner: JobRunner) -> None:
        self.config = config
        self.store = store
        self.runner = runner
        self.started_at = now()
        self._tasks: dict[str, asyncio.Task] = {}
        self._slots = asyncio.Semaphore(config.jobs.max_concurrent_jobs)
        self._sweeper: asyncio.Task | None = None
        self._changed = asyncio.Event()
        store.listeners.append(self._on_write)

    # -- create ---------------------------------------------------------------------------------

    async def create(
        self, request: CreateVideoRequest, reference: bytes | None, idempotency_key: str | None
    ) -> VideoObject:
        """Validate ``request``, store the job and start it. Same key and body: the same job."""
        body_hash = _hash(request, reference)
        # 1. A retry of a request that already made its job gets that job, even when the queue is full.
        if idempotency_key is not None:
            existing = self.store.get_by_key(idempotency_key)
            if existing is not None:
                return self._replay(existing, idempotency_key, body_hash)
        # 2. Back-pressure before any work: a full queue answers 429 with a time to come back.
        queued = self.store.counts().get("queued", 0)
        if queued >= self.config.limits.max_queued_jobs:
            raise Overloaded(
                f"{queued} videos are waiting; try again later",
                code="queue_full",
                headers={"Retry-After": "30"},
            )
        # 3. Resolve and check everything the job will use, so a bad request fails now, not later.
        seed = request.seed if request.seed is not None else secrets.randbelow(2**32)
        plan = plan_job(request, self.config, seed)
        image = _decode_reference(reference) if reference is not None else None
        if request.input_reference is not None:
            image = _decode_data_url(request.input_reference.image_url)

        # 4. Store the job; a key taken meanwhile by a concurrent duplicate answers as in step 1.
        job_id = f"video_{uuid.uuid4().hex}"
        stored = request.model_dump(mode="json", exclude={"input_reference"}) | {"seed": seed}
        job = JobRow(
            id=job_id,
            status="queued",
            model=self.config.served_model_name,
            prompt=request.prompt,
            size=f"{plan.size[0]}x{plan.size[1]}",
            seconds=f"{plan.seconds:g}",
            request_json=json.dumps(stored),
            created_at=now(),
            idempotency_key=idempotency_key,
            request_hash=body_hash,
        )
        if image is not None:
            files = JobFiles(self.config.storage.root, job_id)
            files.folder.mkdir(parents=True, exist_ok=True)
            # Upright RGB PNG: any upload (CMYK JPEG, palette GIF, rotated phone photo) is stored one way.
            ImageOps.exif_transpose(image).convert("RGB").save(files.reference)
        try:
            self.store.create(job)
        except IdempotencyConflict as conflict:
            if image is not None:
                JobFiles(self.config.storage.root, job_id).remove()
            return self._replay(conflict.existing, idempotency_key, body_hash)
        self.start(job_id)
        return self.to_object(job)

    def _replay(self, existing: JobRow, key: str | None, body_hash: str) -> VideoObject:
        """The job an idempotency key already made; 422 if this request's body is not the one it was made with."""
        if existing.request_hash != body_hash:
            raise Unprocessable(
                f"Idempotency-Key {key!r} was used with a different request",
                param="Idempotency-Key",
                code="idempotency_key_reused",
            )
        return self.to_object(existing)

    # -- read -----------------------------------------------------------------------------------

    def retrieve(self, video_id: str) -> VideoObject:
        return self.to_object(self._job(video_id))

    def list(self, after: str | None, limit: int, order: str) -> VideoList:
        try:
            jobs, has_more = self.store.list(after, limit, order)
        except KeyError:
            raise bad_value("after", after, "no such video") from None
        data = [self.to_object(job) for job in jobs]
        return VideoList(
            data=data,
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
            has_more=has_more,
        )

    def content(self, video_id: str, variant: str) -> tuple[Path, str]:
        """The file of a finished video's ``variant`` and its media type."""
        job = self._job(video_id)
        if job.status != "completed":
            raise Conflict(
                f"video {video_id} is {job.status}; content is ready when it is completed", code="not_ready"
            )
        path = JobFiles(self.config.storage.root, video_id).variant(variant)
        if not path.is_file():
            raise NotFound(f"video {video_id} has no {variant}", param="variant")
        return path, CONTENT_TYPES[variant]

    def models(self) -> ModelList:
        return ModelList(data=[ModelObject(id=self.config.served_model_name, created=self.started_at)])

    async def events(self, video_id: str) -> AsyncIterator[str]:
        """Server-sent events: the video object each time it changes, ending at a final status.

        A comment line every ``EVENT_KEEPALIVE_S`` keeps proxies from closing a quiet stream.
        """
        last, quiet = None, 0.0
        while True:
            changed = self._changed  # taken before reading, so a write in between is not missed
            job = self.store.get(video_id)
            if job is None:
                yield _sse(
                    "error", {"error": {"code": "video_not_found", "message": f"{video_id} was deleted"}}
                )
                return
            video = self.to_object(job).model_dump_json()
            if video != last:
                last, quiet = video, 0.0
                yield f"event: video\nid: {job.progress}\ndata: {video}\n\n"
            elif quiet >= EVENT_KEEPALIVE_S:
                quiet = 0.0
                yield ": keep-alive\n\n"
            if job.status in TERMINAL:
                return
            # Woken by this process's own writes at once; the timeout catches writes from other replicas.
            started = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), EVENT_POLL_S)
            quiet += time.monotonic() - started

    # -- cancel and delete ----------------------------------------------------------------------

    async def cancel(self, video_id: str) -> VideoObject:
        """Stop a queued or running video: it ends ``cancelled`` and its SVD work stops at the next step."""
        job = self._job(video_id)
        if job.status in TERMINAL:
            raise Conflict(f"video {video_id} is already {job.status}", code="already_finished")
        finished = now()
        self.store.update(
            video_id,
            status="cancelled",
            completed_at=finished,
            expires_at=finished + int(self.config.jobs.retention_hours * 3600),
        )
        self.store.end_unfinished_scenes(video_id, "cancelled")
        await self._stop(video_id)
        metrics.get().jobs_finished.inc(tags={"status": "cancelled"})
        return self.retrieve(video_id)

    async def delete(self, video_id: str) -> VideoDeleted:
        """Stop the video's job if it runs, then remove its row and every artifact."""
        self._job(video_id)
        await self._stop(video_id)
        self.store.delete(video_id)
        JobFiles(self.config.storage.root, video_id).remove()
        return VideoDeleted(id=video_id)

    async def _stop(self, video_id: str) -> None:
        # The board tells SVD replicas to stop at the next denoising step; cancelling the task stops the
        # runner here (and Serve cancels its in-flight calls).
        if self.runner.handles.board is not None:
            try:
                await self.runner.handles.board.cancel.remote(video_id)
            except RETRYABLE as exc:
                # The runner's task is still cancelled below; a batch already running finishes unheard.
                logger.warning("cancel of %s did not reach the JobBoard: %s", video_id, exc)
        task = self._tasks.pop(video_id, None)
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    # -- running jobs ---------------------------------------------------------------------------

    def start(self, job_id: str) -> None:
        """Run ``job_id`` as a task once a slot is free (``jobs.max_concurrent_jobs`` run at once)."""
        if job_id in self._tasks and not self._tasks[job_id].done():
            return
        task = asyncio.get_running_loop().create_task(self._run(job_id), name=job_id)
        self._tasks[job_id] = task
        task.add_done_callback(
            lambda done: self._tasks.pop(job_id, None) if self._tasks.get(job_id) is done else None
        )

    def start_background(self) -> None:
        """Start the sweep (once): take up jobs no live runner holds, delete expired videos."""
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever(), name="sweep")

    def sweep(self) -> list[str]:
        """One sweep: start every claimable job (queued, or left by a dead runner); delete expired ones.

        Returns the ids of the jobs started.
        """
        started = [job_id for job_id in self.store.claimable() if job_id not in self._tasks]
        for job_id in started:
            self.start(job_id)
        if started:
            logger.info("Taking up %d unfinished job(s): %s", len(started), ", ".join(started))
        for job_id in self.store.expired(before=now()):
            self.store.delete(job_id)
            JobFiles(self.config.storage.root, job_id).remove()
            logger.info("job %s expired and was deleted", job_id)
        self._report_counts()
        return started

    async def _sweep_forever(self) -> None:
        while True:
            try:
                self.sweep()
            except Exception:  # noqa: BLE001 - a failed sweep must not stop the next one
                logger.exception("sweep failed")
            await asyncio.sleep(self.config.jobs.sweep_seconds)

    def _report_counts(self) -> None:
        gauge, counts = metrics.get().jobs, self.store.counts()
        for status in ("queued", "in_progress", "completed", "failed", "cancelled"):
            gauge.set(counts.get(status, 0), tags={"status": status})

    @property
    def running(self) -> int:
        return sum(1 for task in self._tasks.values() if not task.done())

    async def _run(self, job_id: str) -> None:
        metrics.get().queue_depth.set(self.store.counts().get("queued", 0))
        async with self._slots:
            await self.runner.run(job_id)

    # -- helpers --------------------------------------------------------------------------------

    def _on_write(self, job_id: str) -> None:
        """Store listener: wake every event stream (each re-reads its own video and sends it if changed)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # a write outside the event loop (a test, a thread): streams catch it by their timeout
        self._changed.set()
        self._changed = asyncio.Event()

    def _job(self, video_id: str) -> JobRow:
        job = self.store.get(video_id) if JOB_ID.match(video_id) else None
        if job is None:
            raise NotFound(f"no video {video_id!r}", param="video_id", code="video_not_found")
        return job

    def to_object(self, job: JobRow) -> VideoObject:
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
            title=job.title,
            writer=job.script_backend,
            scenes=[
                SceneObject(
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
                )
                for scene in job.scenes
            ],
        )


def _sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def _hash(request: CreateVideoRequest, reference: bytes | None) -> str:
    digest = hashlib.sha256(request.model_dump_json().encode())
    if reference is not None:
        digest.update(hashlib.sha256(reference).digest())
    return digest.hexdigest()


def _decode_reference(data: bytes) -> Image.Image:
    """Open an uploaded image fully (a truncated or fake file fails here, not in the job)."""
    too_large = f"at most {MAX_REFERENCE_PIXELS // 1_000_000} megapixels"
    try:
        with Image.open(io.BytesIO(data)) as probe:
            if probe.width * probe.height > MAX_REFERENCE_PIXELS:
                raise bad_value("input_reference", f"{probe.width}x{probe.height}", too_large)
            probe.verify()
        image = Image.open(io.BytesIO(data))
        image.load()
        return image
    except Image.DecompressionBombError as exc:  # Pillow's own, larger limit, hit while opening
        raise bad_value("input_reference", f"<{len(data)} bytes>", too_large) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise bad_value(
            "input_reference", f"<{len(data)} bytes>", "not a readable image (PNG, JPEG, WebP)"
        ) from exc


def _decode_data_url(url: str) -> Image.Image:
    import base64
    import binascii

    header, _, payload = url.partition(",")
    if not (header.startswith("data:image/") and header.endswith(";base64")):
        raise bad_value(
            "input_reference.image_url",
            url[:40],
            "only base64 image data URLs; upload a file or use data:image/...",
        )
    try:
        return _decode_reference(base64.b64decode(payload, validate=True))
    except binascii.Error as exc:
        raise bad_value("input_reference.image_url", url[:40], "invalid base64") from exc
