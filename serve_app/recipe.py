"""The one recipe of a video: write the script, then per scene keyframe, animate, encode; then stitch.

``VideoRecipe`` runs a job the job store holds through four stages (``engines.stages.Stages``): Ray
Serve handles in the service, engines in this process in tests and benchmarks. It reads and writes only
the job's row and small results; frames go from the animator to the encoder without passing through it.
Each finished scene clip is a checkpoint: a job that runs again skips the scenes already done.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from pathlib import Path
from typing import Any

from PIL import Image

from core import metrics
from core.errors import FramesLost, classify
from core.files import JobFiles
from core.status import JobStatus, KeyframeSource, SceneStatus, ScriptSource
from engines.fallback import KeyframeResult
from engines.media import VideoProcessor
from engines.media.clips import EncodeRequest, StitchRequest, png_bytes
from engines.painter import PaintRequest, prepare_reference
from engines.stages import Animated, AnimateRequest, KeyframeReady, Stages, StepDone
from engines.svd import SceneRequest
from engines.writer import WriteRequest, improve_visual_prompt, motion_bucket_id
from serve_app.config import AppConfig
from serve_app.errors import public_text
from serve_app.planning import JobPlan, plan_job
from serve_app.protocol import CreateVideoRequest, parse_create
from serve_app.store import JobStore, SceneRow, now

logger = logging.getLogger("ray.serve")

# How a job's progress splits between its steps, in percent.
WRITE_SHARE, SCENES_SHARE = 5, 85
# Where each scene stage starts, in percent of the scene.
# Times a scene is animated when its frames are lost before the encoder has them.
FRAMES_ATTEMPTS = 2
STAGE_START = {
    SceneStatus.PAINTING: 5,
    SceneStatus.ANIMATING: 25,
    SceneStatus.ENCODING: 85,
    SceneStatus.COMPLETED: 100,
}


class VideoRecipe:
    """Makes the video of a stored job.

    Args:
        config: the application config.
        store: the job store.
        stages: the writer, painter, animator and encoder.
    """

    def __init__(self, config: AppConfig, store: JobStore, stages: Stages) -> None:
        self.config = config
        self.store = store
        self.stages = stages

    async def __call__(self, job_id: str) -> None:
        """Make (or finish) the video of ``job_id``, which the caller holds the lease of.

        Never raises for the job's own failures: they become its error. A cancel of the calling task
        stops the work at the next await.
        """
        job = self.store.get(job_id)
        if job is None or job.status in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED):
            return
        files = JobFiles(self.config.storage.root, job_id)
        files.folder.mkdir(parents=True, exist_ok=True)  # the encoder writes only into a job's own folder
        self.store.advance(
            job_id,
            status=JobStatus.IN_PROGRESS,
            started_at=job.started_at or now(),
            attempts=job.attempts + 1,
        )
        started = time.monotonic()
        try:
            # 0. Plan again from the stored request: a redeploy with tighter limits fails it here, visibly.
            request = parse_create(job.request, self.config.limits)
            plan = plan_job(request, self.config, seed=job.request["seed"])
            # 1. Write the script, unless the caller gave scenes or an earlier run already wrote them.
            scenes = job.scenes or await self._write(job_id, request, plan)
            # 2. Make the scenes: keyframe, animate, encode. Scenes overlap (scene 2 animates while scene 1
            #    encodes) unless continuity chains each to the last frame of the one before.
            await self._make_scenes(job_id, request, plan, scenes, files)
            # 3. Stitch the clips; write the poster, spritesheet and captions.
            stitch_started = time.monotonic()
            captions = [scene.caption for scene in scenes]
            await self.stages.encoder.stitch(StitchRequest(job_id, captions, plan.size, request.captions))
            self._observe("stitch", stitch_started)
            # 4. Done, unless a cancel landed first (during the stitch, say): then the cancel stands.
            retention = self.config.jobs.retention_seconds
            if not self.store.finish(job_id, JobStatus.COMPLETED, retention, progress=100):
                logger.info("job %s ended before it could complete; its end stands", job_id)
                return
            logger.info("job %s completed in %.1f s", job_id, time.monotonic() - started)
            metrics.get().jobs_finished.inc(tags={"status": JobStatus.COMPLETED})
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure becomes the job's error object
            self.fail(job_id, exc)

    # -- steps ----------------------------------------------------------------------------------

    async def _write(self, job_id: str, request: CreateVideoRequest, plan: JobPlan) -> list[SceneRow]:
        started = time.monotonic()
        if request.scenes is not None:
            terms = self._style_terms(request)
            rows = [
                SceneRow(
                    job_id=job_id,
                    idx=i,
                    caption=spec.caption,
                    visual_prompt=spec.visual_prompt or improve_visual_prompt(spec.caption, terms),
                    duration_s=spec.duration_s or plan.scene_seconds,
                    motion_bucket_id=motion_bucket_id(spec.motion or "moderate"),
                )
                for i, spec in enumerate(request.scenes)
            ]
            title, backend = None, ScriptSource.EXPLICIT.value
        else:
            script = await self.stages.writer.write(
                WriteRequest(request.prompt, plan.num_scenes, style=request.style)
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
        self.store.advance(job_id, title=title, script_backend=backend, progress=WRITE_SHARE)
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
        previous_frame: bytes | None,
    ) -> bytes | None:
        """Keyframe, animate and encode one scene. Returns its last frame as PNG bytes (for continuity)."""
        clip = files.clip(scene.idx)
        if scene.status == SceneStatus.COMPLETED and clip.is_file():  # checkpoint: done in an earlier run
            return await asyncio.to_thread(_last_frame_png, clip) if request.continuity else None
        self._scene(job_id, scene.idx, SceneStatus.PAINTING, attempts=scene.attempts + 1)
        seed = plan.seed + scene.idx
        width, height = plan.generation_size

        # a. The first frame: the caller's reference, the previous scene's end, or a keyframe painted (in the
        #    service, handed from the painter to the animator directly). Resizing runs off the event loop.
        stage_started = time.monotonic()
        keyframe: Any
        if scene.idx == 0 and files.reference.is_file():
            image = await asyncio.to_thread(_open_reference, files.reference, width, height)
            keyframe = KeyframeResult(image, KeyframeSource.REFERENCE)
        elif previous_frame is not None:
            image = await asyncio.to_thread(_open_png, previous_frame, width, height)
            keyframe = KeyframeResult(image, KeyframeSource.CONTINUITY)
        else:
            keyframe = self.stages.painter.paint(PaintRequest(scene.visual_prompt, width, height, seed))

        # b. Animate it (the painting, when there is one, goes to the animator without passing here).
        motion = scene.motion_bucket_id if request.motion_bucket_id is None else request.motion_bucket_id
        animate = AnimateRequest(
            scene=SceneRequest(
                seed=seed,
                width=width,
                height=height,
                num_frames=plan.frames_for(scene.duration_s, self.config.limits.max_frames_per_scene),
                num_inference_steps=plan.steps,
                fps=plan.fps,
                motion_bucket_id=motion,
                noise_aug_strength=request.noise_aug_strength,
            ),
            text=scene.caption,
            key=f"{job_id}:{scene.idx}",
        )
        # c. Encode its clip: the checkpoint. Frames lost on the way (their animator died) are made again.
        encoded = None
        for attempt in range(1, FRAMES_ATTEMPTS + 1):
            animated = await self._animate(job_id, scene, animate, keyframe, stage_started)
            self._scene(
                job_id,
                scene.idx,
                SceneStatus.ENCODING,
                generator=animated.generator,
                fallback_reason=public_text(animated.fallback_reason) if animated.fallback_reason else None,
                batch_size=animated.batch_size,
            )
            stage_started = time.monotonic()
            try:
                encoded = await self.stages.encoder.encode_scene(
                    EncodeRequest(job_id, scene.idx, plan.fps, keep_last_frame=request.continuity), animated
                )
                break
            except FramesLost:
                if attempt == FRAMES_ATTEMPTS:
                    raise
                logger.warning("job %s: scene %d's frames were lost; animating it again", job_id, scene.idx)
        assert encoded is not None
        self._observe("encode", stage_started)
        self._scene(job_id, scene.idx, SceneStatus.COMPLETED, clip_path=encoded.path)
        metrics.get().scenes.inc(tags={"generator": animated.generator})
        return encoded.last_frame_png

    async def _animate(
        self, job_id: str, scene: SceneRow, request: AnimateRequest, keyframe: Any, started: float
    ) -> Animated:
        """Animate a scene from its keyframe, copying step progress into the scene as it comes."""
        animated: Animated | None = None
        async for event in self.stages.animator.animate(request, keyframe):
            if isinstance(event, KeyframeReady):
                self._observe("paint", started)
                started = time.monotonic()
                self._scene(job_id, scene.idx, SceneStatus.ANIMATING, keyframe_generator=event.source)
            elif isinstance(event, StepDone):
                low, high = STAGE_START[SceneStatus.ANIMATING], STAGE_START[SceneStatus.ENCODING]
                progress = low + (high - low) * event.step // event.total
                self._scene(job_id, scene.idx, SceneStatus.ANIMATING, progress=progress)
            else:
                animated = event
        if animated is None:
            raise RuntimeError(f"the animator ended scene {scene.idx} without its frames")
        self._observe("animate", started)
        return animated

    # -- bookkeeping ----------------------------------------------------------------------------

    def _scene(self, job_id: str, idx: int, status: SceneStatus, **changes: Any) -> None:
        """Move a scene to ``status`` and recompute the job's progress from all its scenes."""
        changes.setdefault("progress", STAGE_START[status])
        self.store.update_scene(job_id, idx, status=status, **changes)
        job = self.store.get(job_id)
        if job is not None and job.scenes:
            done = sum(scene.progress for scene in job.scenes) / (100 * len(job.scenes))
            self.store.advance(job_id, progress=int(WRITE_SHARE + SCENES_SHARE * done))

    def fail(self, job_id: str, exc: BaseException) -> None:
        """End ``job_id`` as failed with the code and text ``core.errors.classify`` gives ``exc``."""
        cause = unwrap(exc)
        kind = classify(cause)
        # The whole text (paths, ffmpeg's command line and output) goes to the log only; the job says less.
        logger.warning("job %s failed (%s): %s", job_id, kind.code, cause, exc_info=kind.status >= 500)
        message = public_text(kind.message)[:1000]
        if not kind.public:
            message = f"{message}; the server log has the details under job {job_id}"
        retention = self.config.jobs.retention_seconds
        ended = self.store.finish(
            job_id, JobStatus.FAILED, retention, error_code=kind.code, error_message=message
        )
        if ended:  # else it was cancelled (or deleted) meanwhile: that stands
            metrics.get().jobs_finished.inc(tags={"status": JobStatus.FAILED})

    def _style_terms(self, request: CreateVideoRequest) -> list[str]:
        writer = self.config.writer
        return [*([request.style] if request.style else []), *writer.style, *writer.quality_terms]

    @staticmethod
    def _observe(stage: str, started: float) -> None:
        metrics.get().stage_seconds.observe(time.monotonic() - started, tags={"stage": stage})


def _open_reference(path: Path, width: int, height: int) -> Image.Image:
    with Image.open(path) as reference:
        return prepare_reference(reference, width, height)


def _open_png(png: bytes, width: int, height: int) -> Image.Image:
    with Image.open(io.BytesIO(png)) as frame:
        return prepare_reference(frame, width, height)


def _last_frame_png(clip: Path) -> bytes:
    return png_bytes(VideoProcessor.sample_frames(clip, 10**6)[-1])


def unwrap(exc: BaseException) -> BaseException:
    """The error a replica raised, out of Ray's wrapper and out of a task group."""
    while True:
        if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
            exc = exc.exceptions[0]
        elif isinstance(cause := getattr(exc, "cause", None), BaseException):
            exc = cause
        else:
            return exc
