"""The one recipe of a video: write the script, narrate it, then per scene keyframe, animate, encode; then stitch.

``VideoRecipe`` runs a job the job store holds through five stages (``engines.stages.protocols.Stages``): Ray
Serve handles in the service, engines in this process in tests and benchmarks. It reads and writes only
the job's row and small results; frames go from the animator to the encoder without passing through it.
Each finished scene clip is a checkpoint: a job that runs again skips the scenes already done.

Each step is a method that takes the run (`JobRun`): what the job asked, its plan, its files, its scenes
and its progress, filled in as the steps go.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic

from PIL import Image

from core import metrics
from core.errors import FramesLost, StoreUnavailable, classify, public_text
from core.files import REFERENCE_SOURCE_KEY, JobFiles
from core.status import JobStatus, KeyframeSource, NoticeCode, SceneStatus, ScriptSource
from engines.media import VideoProcessor
from engines.media.audio import sniff_music
from engines.media.clips import EncodedScene, EncodeRequest, FinalVideo, SpokenScene, StitchRequest, png_bytes
from engines.painter import PaintRequest, prepare_reference
from engines.stages.protocols import (
    Animated,
    AnimateRequest,
    K,
    KeyframeReady,
    KeyframeSpec,
    Stages,
    StepDone,
)
from engines.video.base import SceneRequest
from engines.video.config import rules_of
from engines.writer import WriteRequest, improve_visual_prompt, motion_bucket_id
from serve_app.config import AppConfig
from serve_app.jobs import lineage
from serve_app.jobs.narration import narrate_scenes
from serve_app.jobs.plan import Fit, JobPlan, plan_job, seed_of, segment_frames
from serve_app.jobs.progress import STAGE_START, WRITE_SHARE, JobProgress, animating
from serve_app.protocol import CreateVideoRequest, NarrationOptions, parse_create
from serve_app.store.jobs import JobRow, JobStore, SceneRow, now

__all__ = ["JobRun", "VideoRecipe", "seed_of", "unwrap"]

logger = logging.getLogger("ray.serve")

# Times a scene is animated when its frames are lost before the encoder has them.
FRAMES_ATTEMPTS = 2


@dataclass
class JobRun:
    """One run of a job's recipe: what every step reads, and what the steps before it made.

    Args:
        job: the job's row as this run found it.
        files: the job's folder.
        progress: the scenes' and the job's progress, written to the store.
        started: when the run began (``time.monotonic()``).
        request, plan: what the job asks, planned again from its stored request (the plan step).
        narration: how to narrate, or None for a silent video (the plan step).
        script_started: when the write step began (the `write` stage's time runs to the script stored).
        scenes: the job's scenes: written (the write step), spoken (narrate), with an extension's or a
            remix's scenes taken over (take over); or as an earlier run stored them.
        frames: each scene's frame count, by index (the scenes step).
        title, script_backend, notices: what the write and narrate steps tell the video object.
        stage_seconds: seconds each stage took in this run, summed over the scenes (the video object's
            `stage_durations`).
        peak_memory_bytes: the most GPU memory a call that animated a scene of this run held (the video
            object's `peak_memory_mb`); None while no call read one.
        ignored_fields: the request's fields the served checkpoint had no use for (a notice each).
    """

    job: JobRow
    files: JobFiles
    progress: JobProgress
    started: float = field(default_factory=time.monotonic)
    request: CreateVideoRequest = field(init=False)
    plan: JobPlan = field(init=False)
    narration: NarrationOptions | None = None
    script_started: float = 0.0
    scenes: list[SceneRow] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)
    title: str | None = None
    script_backend: str | None = None
    notices: list[dict[str, str]] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    peak_memory_bytes: int | None = None
    ignored_fields: set[str] = field(default_factory=set)

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def inherited(self) -> list[SceneRow]:
        """An extension's scenes of the video it extends (its own follow them); none for other jobs."""
        return self.job.inherited if self.job.extended_from_video_id else []

    @property
    def asked(self) -> bool:
        """Whether the request set the video's length: `seconds` (or `num_frames`) is a contract, and scenes of an asked
        length (or explicit scenes with their own lengths) are spoken fast enough to fit them."""
        scenes = self.request.scenes or []
        given = self.request.seconds is not None or self.request.num_frames is not None
        return given or any(spec.duration_s is not None for spec in scenes)


@dataclass
class Segment(Generic[K]):
    """One model call of a scene (all of a short scene): what to animate from which keyframe, and its encoding.

    Args:
        scene: the scene.
        animate: the animator's request.
        keyframe: what the painter handed over for the animator (`engines.stages.protocols.Painter`).
        encode: the encoder's request; its ``segment`` and ``segments`` say which part of the scene this is.
    """

    scene: SceneRow
    animate: AnimateRequest
    keyframe: K
    encode: EncodeRequest

    @property
    def last(self) -> bool:
        return self.encode.segment == self.encode.segments - 1


class VideoRecipe(Generic[K]):
    """Makes the video of a stored job.

    Args:
        config: the application config.
        store: the job store.
        stages: the writer, narrator, painter, animator and encoder (``K``: what their painter hands their
            animator for a keyframe).
    """

    def __init__(self, config: AppConfig, store: JobStore, stages: Stages[K]) -> None:
        self.config = config
        self.store = store
        self.stages = stages
        self.storage = config.storage.open()

    async def __call__(self, job_id: str) -> None:
        """Make (or finish) the video of ``job_id``, which the caller holds the lease of.

        Never raises for the job's own failures: they become its error. A cancel of the calling task
        stops the work at the next await.
        """
        run = await self.start(job_id)
        if run is None:
            return
        try:
            # 1. Plan again from the stored request: a redeploy with tighter limits fails it here, visibly.
            self.plan(run)
            if not run.scenes:  # else an earlier run wrote, narrated and stored them
                # 2. Write the script, unless the caller gave the scenes.
                await self.write(run)
                # 3. Speak each scene before anything is animated: a scene lasts at least its narration.
                await self.narrate(run)
                # 4. A remix or an extension takes over the clips of the video it starts from that it can;
                #    the script is stored.
                await self.take_over(run)
            # 5. Make the scenes: keyframe, animate, encode. Scenes overlap (scene 2 animates while scene 1
            #    encodes) unless continuity chains each to the last frame of the one before. An extension's
            #    first scene starts from the last frame of the video it extends.
            await self.make_scenes(run)
            # 6. Stitch the clips; burn the subtitles in and add the voices and the music bed; write the
            #    poster, spritesheet and captions.
            final = await self.stitch(run)
            # 7. Done, unless a cancel landed first (during the stitch, say): then the cancel stands.
            await self.finish(run, final)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure becomes the job's error object
            if isinstance(unwrap(exc), StoreUnavailable):
                # An outage longer than the runner's patience: the job stays as it is, leased, and is
                # resumed from its last finished scene once the store is back.
                raise
            if self.store.get(job_id) is None:
                # Deleted meanwhile: what failed was a write for no job (a scene for no row, a file for no
                # folder), not the job.
                await self._stopped(run, exc)
            else:
                self.fail(job_id, exc)
        finally:
            run.progress.close()
            run.files.forget()

    # -- steps ----------------------------------------------------------------------------------

    async def start(self, job_id: str) -> JobRun | None:
        """Mark the job started, with its folder made; None when it has ended or is gone."""
        job = self.store.get(job_id)
        if job is None or job.status in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED):
            return None
        if job.started_at is None:
            metrics.get().queue_wait.observe(max(0.0, time.time() - job.created_at))
        run = JobRun(job, JobFiles(self.storage, job_id), JobProgress(self.store, job_id), scenes=job.scenes)
        await asyncio.to_thread(run.files.create)  # the encoder writes only into a job's own folder
        # The first write, after the folder, says whether the job is still there: a DELETE since the read
        # above would otherwise leave a folder that no row owns.
        started_now = self.store.advance(
            job_id,
            status=JobStatus.IN_PROGRESS,
            started_at=job.started_at or now(),
            attempts=job.attempts + 1,
        )
        if not started_now:
            await self._stopped(run)
            return None
        return run

    def plan(self, run: JobRun) -> None:
        """The request, its plan and its narration, from the stored request and this deployment's config."""
        job = run.job
        run.request = parse_create(job.request, self.config.limits)
        extends = job.extended_from_video_id is not None
        run.plan = plan_job(run.request, self.config, seed=job.request["seed"], extra_joins=int(extends))
        speaks = self.config.narration.backend != "none"  # a request stored under another config may ask
        run.narration = run.request.narration_options(default=True) if speaks else None

    async def write(self, run: JobRun) -> None:
        """The job's own scenes: the caller's, or the writer's from the prompt."""
        run.script_started = time.monotonic()
        request, plan = run.request, run.plan
        first = len(run.inherited)  # an extension's scenes follow those of the video it extends
        if request.scenes is not None:
            terms = self._style_terms(request)
            run.scenes = [
                SceneRow(
                    job_id=run.id,
                    idx=first + i,
                    caption=spec.caption,
                    visual_prompt=spec.visual_prompt or improve_visual_prompt(spec.caption, terms),
                    duration_s=spec.duration_s or plan.scene_seconds,
                    motion_bucket_id=motion_bucket_id(spec.motion or "moderate"),
                )
                for i, spec in enumerate(request.scenes)
            ]
            run.script_backend = ScriptSource.EXPLICIT.value
        else:
            # A narrated scene of an asked length has that long to speak, less its pause: the writer
            # budgets each caption's words for it.
            pause = self._pause(plan, joins=plan.num_scenes > 1 or first > 0)
            speaks_in = run.narration is not None and run.asked
            speech_s = max(0.5, plan.scene_seconds - pause) if speaks_in else None
            script = await self.stages.writer.write(
                WriteRequest(request.prompt, plan.num_scenes, style=request.style, scene_seconds=speech_s)
            )
            # Equal scene lengths: the video lasts what was asked, and equal frame counts batch together.
            run.scenes = [
                SceneRow(
                    job_id=run.id,
                    idx=first + i,
                    caption=scene.caption,
                    visual_prompt=scene.visual_prompt,
                    duration_s=plan.seconds / len(script.scenes),
                    motion_bucket_id=scene.motion_bucket_id,
                )
                for i, scene in enumerate(script.scenes)
            ]
            run.title, run.script_backend = script.title, script.backend
        # The writer may make fewer scenes than planned (a prompt of fewer phrases).
        run.plan = plan.with_scenes(len(run.scenes))

    async def narrate(self, run: JobRun) -> None:
        """Speak the job's own scenes and make each last its narration (`narration.narrate_scenes`)."""
        if run.narration is None:
            return
        started = time.monotonic()
        fit = Fit(
            pause=self._pause(run.plan, joins=len(run.scenes) > 1 or bool(run.inherited)),
            explicit=run.request.scenes is not None,
            asked=run.asked,
            fixed=sum(scene.duration_s for scene in run.inherited),
        )
        run.scenes, run.notices = await narrate_scenes(
            self.stages.narrator, self.config, run.id, run.plan, run.scenes, run.narration, fit
        )
        self._observe(run, "narrate", started)

    async def take_over(self, run: JobRun) -> None:
        """Put an extension's or a remix's scenes taken over among the job's own, and store the script."""
        job = run.job
        if job.extended_from_video_id:
            taken = await asyncio.to_thread(lineage.take_over, job, run.inherited, run.files)
            run.scenes = [*taken, *run.scenes]
        elif job.remixed_from_video_id:
            run.scenes = await asyncio.to_thread(
                lineage.reuse, self.config, job, run.request, run.plan, run.scenes, run.files
            )
        self.store.set_scenes(run.id, run.scenes)
        self.store.advance(
            run.id,
            title=run.title,
            script_backend=run.script_backend,
            progress=WRITE_SHARE,
            notices_json=json.dumps(run.notices, ensure_ascii=False) if run.notices else None,
        )
        self._observe(run, "write", run.script_started)
        logger.info("job %s: %d scenes written by %s", run.id, len(run.scenes), run.script_backend)

    async def make_scenes(self, run: JobRun) -> None:
        """Make every scene not done yet; an extension's first own scene starts from the last frame of the
        video it extends."""
        run.plan = run.plan.with_scenes(len(run.scenes) - len(run.inherited))
        run.frames = run.plan.scene_frames([scene.duration_s for scene in run.scenes])
        run.progress.track(run.scenes)
        opening = len(run.inherited) if run.job.extended_from_video_id else None

        async def start_of(scene: SceneRow) -> bytes | None:
            if scene.idx != opening or scene.status == SceneStatus.COMPLETED:
                return None
            return await asyncio.to_thread(_last_frame_png, run.files, run.files.clip(scene.idx - 1))

        if run.request.continuity:
            last_frame = None
            for scene in run.scenes:
                last_frame = await self.make_scene(run, scene, last_frame or await start_of(scene))
            return

        async def make(scene: SceneRow) -> None:
            await self.make_scene(run, scene, await start_of(scene))

        async with asyncio.TaskGroup() as group:
            for scene in run.scenes:
                group.create_task(make(scene))

    async def make_scene(self, run: JobRun, scene: SceneRow, previous_frame: bytes | None) -> bytes | None:
        """Keyframe, animate and encode one scene. Returns its last frame as PNG bytes (for continuity).

        A scene longer than one model call is made of segments, each animated from the last frame of the
        one before and encoded to its own file: a job that runs again resumes after the last one written.
        """
        files, request = run.files, run.request
        clip = files.clip(scene.idx)
        if scene.status == SceneStatus.COMPLETED and await asyncio.to_thread(files.has, clip):
            # checkpoint: done in an earlier run
            return await asyncio.to_thread(_last_frame_png, files, clip) if request.continuity else None
        frames = run.frames[scene.idx]
        lengths = segment_frames(frames, self.config.limits.max_frames_per_segment)
        first = scene.segments_done if scene.segments == len(lengths) else 0
        while first > 0 and not await asyncio.to_thread(files.has, files.segment(scene.idx, first - 1)):
            first -= 1  # a segment file gone (a redeploy on a fresh volume): make it again
        first = min(first, len(lengths) - 1)
        run.progress.scene(
            scene.idx,
            SceneStatus.PAINTING,
            attempts=scene.attempts + 1,
            segments=len(lengths),
            segments_done=first,
        )

        # a. The first frame: the caller's reference, the previous scene's end, or a keyframe painted (in the
        #    service, handed from the painter to the animator directly). A segment after the first starts
        #    from the end of the one before.
        stage_started = time.monotonic()
        keyframe = self.stages.painter.paint(await self._first_frame(run, scene, first, previous_frame))
        motion = scene.motion_bucket_id if request.motion_bucket_id is None else request.motion_bucket_id
        width, height = run.plan.generation_size
        encoded = None
        for index in range(first, len(lengths)):
            if index > first:
                assert encoded is not None and encoded.last_frame_png is not None
                image = await asyncio.to_thread(_open_png, encoded.last_frame_png, width, height)
                keyframe = self.stages.painter.paint(KeyframeSpec.given(image, KeyframeSource.CONTINUITY))
            # b. Animate it (the painting, when there is one, goes to the animator without passing here).
            animate = AnimateRequest(
                scene=SceneRequest(
                    seed=seed_of(run.plan, scene.idx, index),
                    width=width,
                    height=height,
                    num_frames=lengths[index],
                    num_inference_steps=run.plan.steps,
                    fps=run.plan.fps,
                    motion_bucket_id=motion,
                    noise_aug_strength=request.noise_aug_strength,
                    # Families that take text (LTX, Wan) see the keyframe's prompt and these; SVD ignores them.
                    prompt=scene.visual_prompt,
                    negative_prompt=request.negative_prompt,
                    guidance_scale=request.guidance_scale,
                    guidance_scale_2=request.guidance_scale_2,
                    boundary_ratio=request.boundary_ratio,
                    flow_shift=request.flow_shift,
                ),
                text=scene.caption,
                key=f"{run.id}:{scene.idx}",
            )
            encode = EncodeRequest(
                run.id,
                scene.idx,
                run.plan.fps,
                keep_last_frame=request.continuity or index < len(lengths) - 1,
                segment=index,
                segments=len(lengths),
                interpolation=request.interpolation,
            )
            encoded = await self._segment(run, Segment(scene, animate, keyframe, encode), stage_started)
            stage_started = time.monotonic()
        assert encoded is not None
        fingerprint = await asyncio.to_thread(
            lineage.fingerprint,
            self.config,
            request,
            run.plan,
            scene,
            frames,
            files,
            previous_frame is not None,
        )
        run.progress.scene(
            scene.idx,
            SceneStatus.COMPLETED,
            clip_path=encoded.path,
            segments_done=len(lengths),
            fingerprint=fingerprint,
        )
        return encoded.last_frame_png

    async def _first_frame(
        self, run: JobRun, scene: SceneRow, segment: int, previous_frame: bytes | None
    ) -> KeyframeSpec:
        """Where segment ``segment`` of ``scene`` starts from. Opening and resizing images run off the
        event loop."""
        files, (width, height) = run.files, run.plan.generation_size
        if segment > 0:
            png = await asyncio.to_thread(_last_frame_png, files, files.segment(scene.idx, segment - 1))
            image = await asyncio.to_thread(_open_png, png, width, height)
            return KeyframeSpec.given(image, KeyframeSource.CONTINUITY)
        if scene.idx == 0 and await asyncio.to_thread(files.has, files.reference):
            image, source = await asyncio.to_thread(_open_reference, files, width, height)
            return KeyframeSpec.given(image, source)
        if previous_frame is not None:
            image = await asyncio.to_thread(_open_png, previous_frame, width, height)
            return KeyframeSpec.given(image, KeyframeSource.CONTINUITY)
        if getattr(self.config.video, "keyframes", "painted") == "none":
            return KeyframeSpec.text_only()  # the video model starts from the text
        return KeyframeSpec.painted(
            PaintRequest(scene.visual_prompt, width, height, seed_of(run.plan, scene.idx))
        )

    async def _segment(self, run: JobRun, segment: Segment[K], started: float) -> EncodedScene:
        """Animate and encode one segment of a scene: its checkpoint. Frames lost on the way (their animator
        died) are made again."""
        scene, encode = segment.scene, segment.encode
        for attempt in range(1, FRAMES_ATTEMPTS + 1):
            animated = await self._animate(run, segment, started)
            run.progress.scene(
                scene.idx,
                SceneStatus.ENCODING if segment.last else SceneStatus.ANIMATING,
                progress=STAGE_START[SceneStatus.ENCODING]
                if segment.last
                else animating(encode.segment + 1, encode.segments),
                generator=animated.generator,
                fallback_reason=public_text(animated.fallback_reason) if animated.fallback_reason else None,
                batch_size=animated.batch_size,
            )
            started = time.monotonic()
            try:
                encoded = await self.stages.encoder.encode_scene(encode, animated)
            except FramesLost:
                if attempt == FRAMES_ATTEMPTS:
                    raise
                logger.warning("job %s: scene %d's frames were lost; animating it again", run.id, scene.idx)
                continue
            self._observe(run, "encode", started)
            if segment.last:
                metrics.get().scenes.inc(tags={"generator": animated.generator})
            else:
                run.progress.scene(
                    scene.idx,
                    SceneStatus.ANIMATING,
                    segments_done=encode.segment + 1,
                    progress=animating(encode.segment + 1, encode.segments),
                )
            return encoded
        raise AssertionError("unreachable")

    async def _animate(self, run: JobRun, segment: Segment[K], started: float) -> Animated:
        """Animate a segment from its keyframe, copying step progress into the scene as it comes."""
        idx, part, parts = segment.scene.idx, segment.encode.segment, segment.encode.segments
        animated: Animated | None = None
        async for event in self.stages.animator.animate(segment.animate, segment.keyframe):
            if isinstance(event, KeyframeReady):
                self._observe(run, "paint", started)
                started = time.monotonic()
                # What made the scene's first frame; later segments start from the one before.
                made_by = {"keyframe_generator": event.source} if part == 0 else {}
                run.progress.scene(idx, SceneStatus.ANIMATING, progress=animating(part, parts), **made_by)
            elif isinstance(event, StepDone):
                run.progress.step(idx, animating(part + event.step / event.total, parts))
            else:
                animated = event
        if animated is None:
            raise RuntimeError(f"the animator ended scene {idx} without its frames")
        self._observe(run, "animate", started)
        if animated.peak_memory_bytes is not None:
            run.peak_memory_bytes = max(run.peak_memory_bytes or 0, animated.peak_memory_bytes)
        run.ignored_fields.update(animated.ignored_fields)
        return animated

    async def stitch(self, run: JobRun) -> FinalVideo:
        """The video from its scenes' clips, with their voices, the music bed and the captions."""
        started = time.monotonic()
        spoken: list[SpokenScene | None] = []
        for scene in run.scenes:
            said = scene.narration
            if not said or said.get("silent"):  # a voice that said nothing is left out of the mix
                spoken.append(None)
                continue
            sentences = [(part["text"], part["start"], part["end"]) for part in said["sentences"]]
            spoken.append(SpokenScene(sentences, said["lead"]))
        final = await self.stages.encoder.stitch(
            StitchRequest(
                run.id,
                [scene.caption for scene in run.scenes],
                run.plan.size,
                run.request.captions,
                spoken=spoken,
                music=await asyncio.to_thread(_music_format, run.files),
                burn_subtitles=run.request.burn_subtitles,
            )
        )
        self._observe(run, "stitch", started)
        return final

    async def finish(self, run: JobRun, final: FinalVideo) -> None:
        """End the job completed, unless a cancel landed first. The video says how long its file lasts."""
        ended = self.store.finish(
            run.id,
            JobStatus.COMPLETED,
            self.config.jobs.retention_seconds,
            progress=100,
            seconds=f"{round(final.duration, 2):g}",
            has_audio=int(final.audio is not None),
            timings_json=json.dumps(
                {
                    "wall": round(time.monotonic() - run.started, 3),
                    "stages": {stage: round(s, 3) for stage, s in run.stage_seconds.items()},
                    "peak_memory_bytes": run.peak_memory_bytes,
                }
            ),
            **self._ignored_by_the_checkpoint(run),
        )
        if not ended:
            await self._stopped(run)
            return
        logger.info("job %s completed in %.1f s", run.id, time.monotonic() - run.started)
        metrics.get().jobs_finished.inc(tags={"status": JobStatus.COMPLETED})

    def _ignored_by_the_checkpoint(self, run: JobRun) -> dict[str, str]:
        """The video's notices with one for each field the served checkpoint had no use for (Wan 2.2 A14B's
        expert fields on a checkpoint with one expert), as `store.finish` takes them; {} when there is none.
        The fields no checkpoint of the family takes are told when the video is read (`VideoObjects`)."""
        if not run.ignored_fields:
            return {}
        stored = self.store.get(run.id)
        notices = stored.notices if stored is not None else []
        label = rules_of(self.config.video).label
        for name in sorted(run.ignored_fields):
            notice = {
                "code": NoticeCode.IGNORED_FIELD,
                "message": f"the served {label} checkpoint has no use for {name}; it was ignored",
            }
            if notice not in notices:
                notices.append(notice)
        return {"notices_json": json.dumps(notices, ensure_ascii=False)}

    # -- endings and bookkeeping ----------------------------------------------------------------

    async def _stopped(self, run: JobRun, cause: Exception | None = None) -> None:
        """The job was cancelled or deleted while this run worked on it. A cancel's end stands as it is; a
        deleted job's folder is removed, as a write of this run may have made it again after the DELETE
        removed it (and the sweep would find it only after ``ORPHAN_GRACE_S``)."""
        if self.store.get(run.id) is not None:
            logger.info("job %s ended before it could complete; its end stands", run.id)
            return
        logger.info(
            "job %s was deleted while it ran; stopping here%s", run.id, f" ({cause})" if cause else ""
        )
        await asyncio.to_thread(run.files.remove)

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

    def _pause(self, plan: JobPlan, joins: bool) -> float:
        """Silence a narrated scene keeps around its voice; a cross-fade covers half of each join."""
        return self.config.narration.pause_s + (plan.transition_s if joins else 0.0)

    def _style_terms(self, request: CreateVideoRequest) -> list[str]:
        writer = self.config.writer
        return [*([request.style] if request.style else []), *writer.style, *writer.quality_terms]

    @staticmethod
    def _observe(run: JobRun, stage: str, started: float) -> None:
        """A stage's time: to the metrics, and to the run's sum of each stage over its scenes."""
        seconds = time.monotonic() - started
        metrics.get().stage_seconds.observe(seconds, tags={"stage": stage})
        run.stage_seconds[stage] = run.stage_seconds.get(stage, 0.0) + seconds


def _music_format(files: JobFiles) -> str | None:
    """The format of the job's music bed, or None when it has none."""
    try:
        with open(files.local(files.music), "rb") as music:
            return sniff_music(music.read(16))
    except FileNotFoundError:
        return None


def _open_reference(files: JobFiles, width: int, height: int) -> tuple[Image.Image, KeyframeSource]:
    """The caller's reference at the generation size, and what it was: an image, or a video's last frame."""
    with Image.open(files.local(files.reference)) as reference:
        # A reference stored before the mark existed was an image.
        source = reference.info.get(REFERENCE_SOURCE_KEY, KeyframeSource.REFERENCE)
        return prepare_reference(reference, width, height), KeyframeSource(source)


def _open_png(png: bytes, width: int, height: int) -> Image.Image:
    with Image.open(io.BytesIO(png)) as frame:
        return prepare_reference(frame, width, height)


def _last_frame_png(files: JobFiles, clip: Path) -> bytes:
    return png_bytes(VideoProcessor.sample_frames(files.local(clip), 10**6)[-1])


def unwrap(exc: BaseException) -> BaseException:
    """The error a replica raised, out of Ray's wrapper and out of a task group."""
    while True:
        if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
            exc = exc.exceptions[0]
        elif isinstance(cause := getattr(exc, "cause", None), BaseException):
            exc = cause
        else:
            return exc
