"""The API's logic, apart from HTTP: create, remix, extend, cancel and delete videos, and read them.

``VideoService`` stores jobs and answers about them; the job runner (``serve_app.jobs.runner``) makes them. It
receives its store and its ``RunnerSignals`` in the constructor, so tests can build it with fakes. Reading is
handed to its neighbours: the video object (``objects``), the files to download (``content``), the event
streams (``events``); what a create uploads is checked in ``inputs``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import secrets
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from core import metrics
from core.errors import (
    Conflict,
    GatewayTimeout,
    JobFailed,
    NotFound,
    Overloaded,
    Unprocessable,
    bad_value,
)
from core.files import JobFiles, is_job_id
from core.status import TERMINAL, JobStatus
from core.storage import StoredContent
from serve_app.config import AppConfig
from serve_app.jobs.plan import JobPlan, plan_job
from serve_app.jobs.stages import RETRYABLE
from serve_app.protocol import (
    CreateVideoRequest,
    ExtendRequest,
    ExtensionFields,
    ModelList,
    ModelObject,
    RemixRequest,
    VideoDeleted,
    VideoList,
    VideoObject,
    parse_create,
)
from serve_app.store.jobs import IdempotencyConflict, JobRow, JobStore, QueueFull, now
from serve_app.videos.content import Content, open_content
from serve_app.videos.events import EventHub
from serve_app.videos.inputs import music_bed, reference_as_png, request_hash, write_music
from serve_app.videos.objects import VideoObjects
from serve_app.videos.uploads import video_container
from serve_app.videos.validation import client_errors
from serve_app.webhooks import delivery as webhooks

logger = logging.getLogger("ray.serve")


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
        self.storage = config.storage.open(patient=False)  # a download during an outage is a 503 at once
        self.started_at = now()
        self.objects = VideoObjects(config, store)  # rows as the API shows them
        self.hub = EventHub(config, store, self.objects)  # the event streams

    # -- create ---------------------------------------------------------------------------------

    async def create(
        self,
        request: CreateVideoRequest,
        reference: bytes | None,
        idempotency_key: str | None,
        music: bytes | None = None,
        reference_param: str = "input_reference",
    ) -> VideoObject:
        """Validate ``request``, store the job and start it. Same key and body: the same job.

        ``reference`` and ``music``: the bytes of an uploaded first image (or video) and music bed, if any;
        ``reference_param``: the field the reference came in, named in its errors.
        """
        # A large upload hashes for milliseconds: off the event loop.
        body_hash = await asyncio.to_thread(request_hash, request, reference, music)
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
        if request.num_frames is not None:
            # Kept as the length it stands for: an extension (or a remix) of this video sets `seconds` anew.
            request = request.model_copy(update={"seconds": plan.seconds, "num_frames": None})
        webhook_url = await self._webhook_url(request.webhook_url)
        reference_png = await reference_as_png(request, reference, reference_param)
        self._check_narration(request)
        bed = await music_bed(self.config, request, music)
        job = self._job_row(
            request, plan, webhook_url=webhook_url, idempotency_key=idempotency_key, body_hash=body_hash
        )
        return await self._store(job, reference_png, music=bed)

    async def create_and_wait(
        self,
        request: CreateVideoRequest,
        reference: bytes | None,
        idempotency_key: str | None,
        music: bytes | None = None,
    ) -> Content | StoredContent | str:
        """``create``, then the finished video to download (as ``content`` gives it) once it completes
        within ``limits.sync_timeout_s``.

        Raises:
            GatewayTimeout: 504 past the timeout; the job goes on, and the error carries its id.
            JobFailed: 500 with the job's own error code and message when it failed.
            Conflict: 409 when it was cancelled meanwhile (or an Idempotency-Key replays a cancelled video);
                NotFound: 404 when it was deleted.
            Overloaded: 429 (before any job is made) past ``limits.max_event_streams`` waiting requests and
                event streams on this replica.
        """
        timeout_s = self.config.limits.sync_timeout_s
        # A place among the event streams first: a flood of waiting requests cannot take the slots polls need.
        with self.hub.waiting():
            video = await self.create(request, reference, idempotency_key, music=music)
            status = await self.hub.final_status(video.id, timeout_s)
        if status == JobStatus.COMPLETED:
            return await asyncio.to_thread(self.content, video.id, "video")
        where = {"Location": f"/v1/videos/{video.id}"}  # and the id in the error: the job may go on
        if status is None:
            raise NotFound(
                f"{video.id} was deleted before it finished",
                code="video_not_found",
                headers=where,
                video_id=video.id,
            )
        if status == JobStatus.CANCELLED:
            raise Conflict(
                f"{video.id} was cancelled before it finished",
                code="cancelled",
                headers=where,
                video_id=video.id,
            )
        if status == JobStatus.FAILED:
            job = self.objects.job(video.id)
            raise JobFailed(
                job.error_message or "the video failed", code=job.error_code, headers=where, video_id=video.id
            )
        raise GatewayTimeout(
            f"{video.id} did not finish within {timeout_s:g} s (limits.sync_timeout_s); it goes on: poll "
            f"GET /v1/videos/{video.id} and download it from /v1/videos/{video.id}/content",
            code="sync_timeout",
            headers=where,
            video_id=video.id,
        )

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
                await asyncio.to_thread(write_music, files, music)
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
        return self.objects.to_objects([job])[0]

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

    async def extend_upload(self, extension: ExtensionFields, upload: bytes) -> VideoObject:
        """A new video that continues an uploaded clip: scenes written from the prompt, the first starting
        from the clip's last frame. A create with the clip as `input_reference`; the clip is not re-encoded
        into the result (the caller has it, and would get it back at this service's size and rate)."""
        if video_container(upload) is None:
            raise bad_value(
                "video",
                f"<{len(upload)} bytes>",
                "must be an MP4, MOV or WebM file, or a completed video's id",
            )
        request = self._reparse(extension.model_dump(exclude_none=True), "prompt")
        return await self.create(request, upload, None, reference_param="video")

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
        return self.objects.to_objects([existing])[0]

    # -- read: the video object, its files and its event stream --------------------------------------

    def retrieve(self, video_id: str) -> VideoObject:
        """The object of ``video_id``; 404 when there is none."""
        return self.objects.retrieve(video_id)

    def list(self, after: str | None, limit: int, order: str) -> VideoList:
        """A page of videos (see ``VideoObjects.list``)."""
        return self.objects.list(after, limit, order)

    def content(self, video_id: str, variant: str) -> Content | StoredContent | str:
        """A finished video's ``variant`` to download (see ``open_content``); blocking, so run in a thread."""
        return open_content(self.config.storage, self.storage, self.objects.job(video_id), variant)

    def models(self) -> ModelList:
        return ModelList(data=[ModelObject(id=self.config.served_model_name, created=self.started_at)])

    def open_events(self, video_id: str) -> AsyncIterator[str]:
        """The event stream of ``video_id`` (see ``EventHub.open_events``): 404, or 429 past the cap."""
        return self.hub.open_events(video_id)

    def events(self, video_id: str) -> AsyncIterator[str]:
        """The events of ``video_id`` without taking a stream's place (see ``EventHub.events``)."""
        return self.hub.events(video_id)

    # -- cancel and delete ----------------------------------------------------------------------

    async def cancel(self, video_id: str) -> VideoObject:
        """Stop a queued or running video: it ends ``cancelled`` and its SVD work stops at the next step."""
        job = self.objects.job(video_id)
        # One conditional write decides a cancel racing the job's own end: whichever lands first stands.
        if job.status in TERMINAL or not self.store.finish(
            video_id, JobStatus.CANCELLED, self.config.jobs.retention_seconds
        ):
            status = self.objects.job(video_id).status
            raise Conflict(f"video {video_id} is already {status}", code="already_finished")
        await self._stop(video_id)
        metrics.get().jobs_finished.inc(tags={"status": JobStatus.CANCELLED})
        return self.retrieve(video_id)

    async def delete(self, video_id: str) -> VideoDeleted:
        """Stop the video's job if it runs, then remove its row and every artifact."""
        self.objects.job(video_id)
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
