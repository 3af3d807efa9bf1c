"""Running a video job as numbered steps: write, then per scene paint, animate, encode; then stitch.

The runner talks to the four deployments through handles it receives in its constructor (tests pass
fakes with the same ``method.remote(...)`` shape). Each finished scene clip is a checkpoint: a job that
runs again skips the scenes already done.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.exceptions import BackPressureError

from core import metrics
from core.errors import GenerationCancelled, InvalidInput, MediaError, ModelUnavailable
from core.files import JobFiles
from engines.painter import prepare_reference
from engines.svd import SceneRequest
from engines.writer import improve_visual_prompt, motion_bucket_id
from serve_app.config import AppConfig
from serve_app.errors import APIError, public_text
from serve_app.planning import JobPlan, plan_job
from serve_app.protocol import CreateVideoRequest, parse_create
from serve_app.store import JobStore, SceneRow, now

logger = logging.getLogger("ray.serve")

# How a job's progress splits between its steps, in percent.
WRITE_SHARE, SCENES_SHARE = 5, 85
# Where each scene stage starts, in percent of the scene.
STAGE_START = {"painting": 5, "animating": 25, "encoding": 85, "completed": 100}


# A replica that died (crash, ray.kill, node lost) or a full queue costs a retry of that call, not the job.
RETRYABLE: tuple[type[BaseException], ...] = (RayActorError, ActorUnavailableError, BackPressureError)
CALL_ATTEMPTS = 4
PROGRESS_POLL_S = 0.5


@dataclass
class Handles:
    """The deployments a job needs (DeploymentHandles in Serve, fakes in tests)."""

    writer: Any
    painter: Any
    svd: Any
    encoder: Any
    board: Any = None


class JobRunner:
    """Runs jobs stored in ``store`` through the deployments.

    Args:
        config: the application config.
        store: the job store.
        handles: the writer, painter, SVD and encoder deployments.
    """

    def __init__(self, config: AppConfig, store: JobStore, handles: Handles) -> None:
        self.config = config
        self.store = store
        self.handles = handles
        self.runner_id = f"runner-{uuid.uuid4().hex[:12]}"

    async def run(self, job_id: str) -> bool:
        """Run (or resume) one job to a final status, holding its lease throughout.

        Returns False without doing anything when another live runner holds the job. Never raises for
        the job's own failures; a lost lease or a cancel stops the work at the next await.
        """
        lease_s = self.config.jobs.lease_seconds
        if not self.store.claim(job_id, self.runner_id, lease_s):
            return False
        heartbeat = asyncio.create_task(self._heartbeat(job_id, asyncio.current_task(), lease_s))
        try:
            await self._run_claimed(job_id)
        finally:
            heartbeat.cancel()
            self.store.release(job_id, self.runner_id)
            await self._forget(job_id)
        return True

    async def _forget(self, job_id: str) -> None:
        """Drop the job's step progress from the JobBoard, which would otherwise keep it for ever."""
        if self.handles.board is None:
            return
        try:
            await self.handles.board.forget.remote(job_id)
        except RETRYABLE as exc:
            logger.warning("job %s: the JobBoard did not hear that it ended: %s", job_id, exc)

    async def _heartbeat(self, job_id: str, work: asyncio.Task | None, lease_s: float) -> None:
        while True:
            await asyncio.sleep(lease_s / 3)
            if not self.store.renew(job_id, self.runner_id, lease_s):
                logger.warning("job %s: lease lost to another runner; stopping here", job_id)
                if work is not None:
                    work.cancel()
                return

    async def _run_claimed(self, job_id: str) -> None:
        job = self.store.get(job_id)
        if job is None or job.status in ("completed", "failed", "cancelled"):
            return
        max_attempts = self.config.jobs.max_attempts
        if job.attempts >= max_attempts:
            # Started that often and never ended: its runner died each time. Another start would too.
            self._fail(
                job_id,
                TooManyAttempts(
                    f"the job was started {job.attempts} times and its runner "
                    f"stopped each time (jobs.max_attempts={max_attempts})"
                ),
            )
            return
        files = JobFiles(self.config.storage.root, job_id)
        files.folder.mkdir(parents=True, exist_ok=True)  # the Encoder writes only into a job's own folder
        self.store.update(
            job_id, status="in_progress", started_at=job.started_at or now(), attempts=job.attempts + 1
        )
        started = time.monotonic()
        try:
            # 0. Plan again from the stored request: a redeploy with tighter limits fails it here, visibly.
            request = parse_create(job.request, self.config.limits)
            plan = plan_job(request, self.config, seed=job.request["seed"])
            # 1. Write the script, unless the caller gave scenes or an earlier run already wrote them.
            scenes = job.scenes or await self._write(job_id, request, plan)
            # 2. Make the scenes: paint, animate, encode. Scenes overlap (scene 2 animates while scene 1
            #    encodes) unless continuity chains each to the last frame of the one before.
            await self._make_scenes(job_id, request, plan, scenes, files)
            # 3. Stitch the clips; write the poster, spritesheet and captions.
            stitch_started = time.monotonic()
            captions = [scene.caption for scene in scenes]
            await self._call(self.handles.encoder.finish, job_id, captions, plan.size, request.captions)
            self._observe("stitch", stitch_started)
            # 4. Done, unless a cancel landed first (during the stitch, say): then the cancel stands.
            if not self.store.finish(job_id, "completed", self.config.jobs.retention_seconds, progress=100):
                logger.info("job %s ended before it could complete; its end stands", job_id)
                return
            logger.info("job %s completed in %.1f s", job_id, time.monotonic() - started)
            metrics.get().jobs_finished.inc(tags={"status": "completed"})
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure becomes the job's error object
            self._fail(job_id, exc)

    # -- steps ----------------------------------------------------------------------------------

    async def _write(self, job_id: str, request: CreateVideoRequest, plan: JobPlan) -> list[SceneRow]:
        started = time.monotonic()
        if request.scenes is not None:
            rows = [
                SceneRow(
                    job_id=job_id,
                    idx=i,
                    caption=spec.caption,
                    visual_prompt=spec.visual_prompt
                    or improve_visual_prompt(spec.caption, self._style_terms(request)),
                    duration_s=spec.duration_s or plan.scene_seconds,
                    motion_bucket_id=motion_bucket_id(spec.motion or "moderate"),
                )
                for i, spec in enumerate(request.scenes)
            ]
            title, backend = None, "explicit"
        else:
            script = await self._call(
                self.handles.writer.write, request.prompt, plan.num_scenes, None, request.style
            )
            # Equal scene lengths: the video lasts what was asked, and equal frame counts batch together.
            rows = [
                SceneRow(
                    job_id=job_id,
                    idx=i,
                    caption=scene.caption,
                    visual_prompt=scene.visual_prompt,
                    duration_s=plan.seconds / len(script.scenes),
                    motion_bucket_id=scene.motion_bucket_id,
                )
                for i, scene in enumerate(script.scenes)
            ]
            title, backend = script.title, script.backend
        self.store.set_scenes(job_id, rows)
        self.store.update(job_id, title=title, script_backend=backend, progress=WRITE_SHARE)
        self._observe("write", started)
        logger.info("job %s: %d scenes written by %s", job_id, len(rows), backend)
        return rows

    async def _make_scenes(
        self, job_id: str, request: CreateVideoRequest, plan: JobPlan, scenes: list[SceneRow], files: JobFiles
    ) -> None:
        if request.continuity:
            last_frame = None
            for scene in scenes:
                last_frame = await self._make_scene(job_id, request, plan, scene, files, last_frame)
            return
        async with asyncio.TaskGroup() as group:
            for scene in scenes:
                group.create_task(self._make_scene(job_id, request, plan, scene, files, None))

    async def _make_scene(
        self,
        job_id: str,
        request: CreateVideoRequest,
        plan: JobPlan,
        scene: SceneRow,
        files: JobFiles,
        previous_frame: Any,
    ) -> Any:
        """Paint, animate and encode one scene. Returns its last frame (for continuity)."""
        clip = files.clip(scene.idx)
        if scene.status == "completed" and clip.is_file():  # checkpoint: done in an earlier run
            return await asyncio.to_thread(_last_frame, clip) if request.continuity else None
        self._scene(job_id, scene.idx, "painting", attempts=scene.attempts + 1)
        seed = plan.seed + scene.idx
        width, height = plan.generation_size

        # a. The first frame: the caller's reference, the previous scene's end, or a painted keyframe.
        #    Resizing an image is CPU work: off the event loop that answers polls.
        stage_started = time.monotonic()
        if scene.idx == 0 and files.reference.is_file():
            keyframe = await asyncio.to_thread(_open_reference, files.reference, width, height)
            made_by = "reference"
        elif previous_frame is not None:
            keyframe = await asyncio.to_thread(
                prepare_reference, Image.fromarray(previous_frame), width, height
            )
            made_by = "continuity"
        else:
            painted = await self._call(self.handles.painter.paint, scene.visual_prompt, width, height, seed)
            keyframe, made_by = painted.image, painted.generator
        self._observe("paint", stage_started)

        # b. Animate it.
        self._scene(job_id, scene.idx, "animating", keyframe_generator=made_by)
        stage_started = time.monotonic()
        svd_request = SceneRequest(
            image=keyframe,
            seed=seed,
            width=width,
            height=height,
            num_frames=plan.frames_for(scene.duration_s, self.config.limits.max_frames_per_scene),
            num_inference_steps=plan.steps,
            fps=plan.fps,
            motion_bucket_id=scene.motion_bucket_id
            if request.motion_bucket_id is None
            else request.motion_bucket_id,
            noise_aug_strength=request.noise_aug_strength,
        )
        key = f"{job_id}:{scene.idx}"
        result = await self._follow(
            job_id, scene.idx, key, self._call(self.handles.svd.animate, svd_request, scene.caption, key)
        )
        self._observe("animate", stage_started)

        # c. Encode its clip: the checkpoint.
        self._scene(
            job_id,
            scene.idx,
            "encoding",
            generator=result.generator,
            fallback_reason=public_text(result.fallback_reason) if result.fallback_reason else None,
            batch_size=result.batch_size,
        )
        stage_started = time.monotonic()
        encoded = await self._call(self.handles.encoder.encode_scene, job_id, scene.idx, result, plan.fps)
        self._observe("encode", stage_started)
        self._scene(job_id, scene.idx, "completed", clip_path=encoded.path)
        metrics.get().scenes.inc(tags={"generator": result.generator})
        return encoded.last_frame

    # -- calls ----------------------------------------------------------------------------------

    async def _call(self, method: Any, *args: Any) -> Any:
        """``await method.remote(*args)``, retried with backoff when the replica died or was overloaded."""
        for attempt in range(1, CALL_ATTEMPTS + 1):
            try:
                return await method.remote(*args)
            except RETRYABLE as exc:
                if attempt == CALL_ATTEMPTS:
                    raise
                delay = min(2.0**attempt, 15.0)
                logger.warning("call failed (%s); retry %d in %.0f s", type(exc).__name__, attempt, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _follow(self, job_id: str, idx: int, key: str, call: Awaitable[Any]) -> Any:
        """Await an SVD call while copying its step progress from the JobBoard into the scene."""
        task = asyncio.ensure_future(call)
        if self.handles.board is None:
            return await task
        low, high = STAGE_START["animating"], STAGE_START["encoding"]
        shown = None
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=PROGRESS_POLL_S)
                if done:
                    return task.result()
                try:
                    step = await self.handles.board.progress.remote(key)
                except RETRYABLE:
                    continue  # progress is advisory: a board that restarts must not fail the scene
                if step and step != shown:
                    shown = step
                    self._scene(job_id, idx, "animating", progress=low + (high - low) * step[0] // step[1])
        finally:
            task.cancel()

    # -- bookkeeping ----------------------------------------------------------------------------

    def _scene(self, job_id: str, idx: int, status: str, **changes: Any) -> None:
        """Move a scene to ``status`` and recompute the job's progress from all its scenes."""
        changes.setdefault("progress", STAGE_START[status])
        self.store.update_scene(job_id, idx, status=status, **changes)
        job = self.store.get(job_id)
        if job is not None and job.scenes:
            done = sum(scene.progress for scene in job.scenes) / (100 * len(job.scenes))
            self.store.update(job_id, progress=int(WRITE_SHARE + SCENES_SHARE * done))

    def _fail(self, job_id: str, exc: BaseException) -> None:
        cause = _unwrap(exc)
        code = _error_code(cause)
        # The whole text (paths, ffmpeg's command line and output) goes to the log only; the job says less.
        logger.warning("job %s failed (%s): %s", job_id, code, cause, exc_info=code == "internal_error")
        ended = self.store.finish(
            job_id,
            "failed",
            self.config.jobs.retention_seconds,
            error_code=code,
            error_message=_message(cause, code, job_id),
        )
        if ended:  # else it was cancelled (or deleted) meanwhile: that stands
            metrics.get().jobs_finished.inc(tags={"status": "failed"})

    def _style_terms(self, request: CreateVideoRequest) -> list[str]:
        writer = self.config.writer
        return [*([request.style] if request.style else []), *writer.style, *writer.quality_terms]

    @staticmethod
    def _observe(stage: str, started: float) -> None:
        metrics.get().stage_seconds.observe(time.monotonic() - started, tags={"stage": stage})


class TooManyAttempts(Exception):
    """A job was started ``jobs.max_attempts`` times without ending."""


def _open_reference(path: Path, width: int, height: int) -> Image.Image:
    with Image.open(path) as reference:
        return prepare_reference(reference, width, height)


def _last_frame(clip: Path) -> Any:
    from engines.media import VideoProcessor

    frames = VideoProcessor.sample_frames(clip, 10**6)
    return frames[-1]


def _unwrap(exc: BaseException) -> BaseException:
    """The error a replica raised, out of Ray's wrapper and out of a task group."""
    while True:
        if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
            exc = exc.exceptions[0]
        elif getattr(exc, "cause", None) is not None and isinstance(exc.cause, BaseException):
            exc = exc.cause
        else:
            return exc


def _error_code(exc: BaseException) -> str:
    for kind, code in (
        (TooManyAttempts, "too_many_attempts"),
        (ModelUnavailable, "model_unavailable"),
        (InvalidInput, "invalid_input"),
        (MediaError, "media_error"),
        (GenerationCancelled, "cancelled"),
        (APIError, "invalid_request"),
    ):
        if isinstance(exc, kind):
            return code
    return "internal_error"


# Codes whose exception text is for the log only (ffmpeg's command line and output, a traceback's cause).
_LOG_ONLY = {
    "media_error": "encoding with ffmpeg failed",
    "internal_error": "internal error",
}


def _message(exc: BaseException, code: str, job_id: str) -> str:
    """What the job's error says: the first line of ``exc`` without server paths, or for codes whose text
    is for the log only, a pointer to it."""
    if code in _LOG_ONLY:
        return f"{_LOG_ONLY[code]}; the server log has the details under job {job_id}"
    text = str(exc).strip().splitlines()
    return public_text(text[0])[:1000] if text else type(exc).__name__
