"""The video object: how a job's row reads in the API, with its place in the queue and its webhook."""

from __future__ import annotations

import builtins
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core.errors import NotFound, bad_value
from core.files import VARIANT_FILES, is_job_id
from core.status import TERMINAL, JobStatus, NoticeCode, Variant
from engines.video.config import rules_of
from serve_app.config import AppConfig
from serve_app.protocol import (
    SAMPLING_FIELDS,
    NarrationObject,
    Notice,
    SceneObject,
    VideoError,
    VideoList,
    VideoObject,
    WebhookState,
)
from serve_app.store.jobs import JobRow, JobStore, SceneRow, now


class VideoObjects:
    """Reads videos from the job store as the API shows them.

    Args:
        config: the application config.
        store: the job store.
    """

    def __init__(self, config: AppConfig, store: JobStore) -> None:
        self.config = config
        self.store = store

    def job(self, video_id: str) -> JobRow:
        """The row of ``video_id``; 404 (``video_not_found``) when there is none."""
        job = self.store.get(video_id) if is_job_id(video_id) else None
        if job is None:
            raise NotFound(f"no video {video_id!r}", param="video_id", code="video_not_found")
        return job

    def retrieve(self, video_id: str) -> VideoObject:
        """The object of ``video_id``; 404 when there is none."""
        return self.to_objects([self.job(video_id)])[0]

    def list(self, after: str | None, limit: int, order: str) -> VideoList:
        """A page of ``limit`` videos in creation ``order`` ('asc' or 'desc') after video ``after``; 400
        when ``after`` is unknown."""
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
            notices=[Notice(**notice) for notice in job.notices] + self._ignored_fields(job),
            **_timings(job),
        )

    def _ignored_fields(self, job: JobRow) -> builtins.list[Notice]:
        """A notice for each sampling field the job set that the served family has no use for: a client
        written for another server's models keeps working, and can see what had no effect."""
        rules = rules_of(self.config.video)
        return [
            Notice(
                code=NoticeCode.IGNORED_FIELD,
                message=f"{rules.family} takes no {name}; it was ignored",
            )
            for name in SAMPLING_FIELDS
            if job.request.get(name) is not None and name not in rules.request_fields
        ]


def _timings(job: JobRow) -> dict[str, Any]:
    """The completed video's timings and file, as vLLM-Omni's video object has them (none before)."""
    if job.status != JobStatus.COMPLETED:
        return {}
    timings = job.timings  # empty for a video completed before timings were kept
    return {
        "inference_time_s": timings.get("wall"),
        "stage_durations": timings.get("stages"),
        "peak_memory_mb": _mebibytes(timings.get("peak_memory_bytes")),
        "media_type": VARIANT_FILES[Variant.VIDEO].media_type,
        "file_name": f"{job.id}{VARIANT_FILES[Variant.VIDEO].suffix}",
    }


def _mebibytes(size: int | None) -> float | None:
    return None if size is None else round(size / 2**20, 1)


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
