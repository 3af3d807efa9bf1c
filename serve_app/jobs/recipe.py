"""The one recipe of a video: write the script, then per scene keyframe, animate, encode; then stitch.

``VideoRecipe`` runs a job the job store holds through four stages (``engines.stages.protocols.Stages``): Ray
Serve handles in the service, engines in this process in tests and benchmarks. It reads and writes only
the job's row and small results; frames go from the animator to the encoder without passing through it.
Each finished scene clip is a checkpoint: a job that runs again skips the scenes already done.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import io
import json
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from PIL import Image

from core import metrics
from core.errors import FramesLost, NarrationTooLong, classify, public_text
from core.files import JobFiles
from core.status import Animator, JobStatus, KeyframeSource, NoticeCode, SceneStatus, ScriptSource
from engines.fallback import KeyframeResult
from engines.media import VideoProcessor
from engines.media.audio import sniff_music
from engines.media.clips import EncodedScene, EncodeRequest, SpokenScene, StitchRequest, png_bytes
from engines.narrator import NarrateRequest, Narration
from engines.painter import PaintRequest, prepare_reference
from engines.stages.protocols import Animated, AnimateRequest, KeyframeReady, Stages, StepDone
from engines.video.base import SceneRequest
from engines.writer import WriteRequest, improve_visual_prompt, motion_bucket_id
from serve_app.config import AppConfig
from serve_app.jobs.plan import (
    Fit,
    JobPlan,
    faster_rates,
    fit_narration,
    fit_pauses,
    plan_job,
    segment_frames,
)
from serve_app.protocol import CreateVideoRequest, NarrationOptions, parse_create
from serve_app.store.jobs import JobRow, JobStore, SceneRow, now

logger = logging.getLogger("ray.serve")

# How a job's progress splits between its steps, in percent.
WRITE_SHARE, SCENES_SHARE = 5, 85
# Times a scene is animated when its frames are lost before the encoder has them.
FRAMES_ATTEMPTS = 2
# Segment k of a scene uses seed + k * this: far from the seeds of the scenes after it.
SEGMENT_SEED_STRIDE = 1_000_003
# Times a job's narration is spoken again, faster, to fit: a voice's length is not exactly inverse to its
# rate (its pauses stay), so the first correction may fall a little short.
NARRATION_ATTEMPTS = 3
# How much longer than asked a narrated video must run for its notices to say so (less is a frame or two).
LONGER_NOTICE_S = 0.1
# Where each scene stage starts, in percent of the scene.
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
        self.storage = config.storage.open()

    async def __call__(self, job_id: str) -> None:
        """Make (or finish) the video of ``job_id``, which the caller holds the lease of.

        Never raises for the job's own failures: they become its error. A cancel of the calling task
        stops the work at the next await.
        """
        job = self.store.get(job_id)
        if job is None or job.status in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED):
            return
        files = JobFiles(self.storage, job_id)
        await asyncio.to_thread(files.create)  # the encoder writes only into a job's own folder
        # The first write, after the folder, says whether the job is still there: a DELETE since the read
        # above would otherwise leave a folder that no row owns.
        started_now = self.store.advance(
            job_id,
            status=JobStatus.IN_PROGRESS,
            started_at=job.started_at or now(),
            attempts=job.attempts + 1,
        )
        if not started_now:
            await self._stopped(job_id, files)
            return
        started = time.monotonic()
        try:
            # 0. Plan again from the stored request: a redeploy with tighter limits fails it here, visibly.
            request = parse_create(job.request, self.config.limits)
            extends = job.extended_from_video_id is not None
            plan = plan_job(request, self.config, seed=job.request["seed"], extra_joins=int(extends))
            # 1. Write the script, unless the caller gave scenes or an earlier run already wrote them. A remix
            #    or an extension takes over the clips of the video it starts from that it can.
            scenes = job.scenes or await self._write(job, request, plan, files)
            # The writer may make fewer scenes than planned (a prompt of fewer phrases).
            plan = plan.with_scenes(len(scenes) - (len(job.inherited) if extends else 0))
            # 2. Make the scenes: keyframe, animate, encode. Scenes overlap (scene 2 animates while scene 1
            #    encodes) unless continuity chains each to the last frame of the one before. An extension's
            #    first scene starts from the last frame of the video it extends.
            opening = len(job.inherited) if extends else None
            await self._make_scenes(job_id, request, plan, scenes, files, opening)
            # 3. Stitch the clips; burn the subtitles in and add the voices and the music bed; write the
            #    poster, spritesheet and captions.
            stitch_started = time.monotonic()
            final = await self.stages.encoder.stitch(
                await self._stitch_request(job_id, request, plan, scenes)
            )
            self._observe("stitch", stitch_started)
            # 4. Done, unless a cancel landed first (during the stitch, say): then the cancel stands. The
            #    video says how long its file lasts.
            retention = self.config.jobs.retention_seconds
            seconds = f"{round(final.duration, 2):g}"
            ended = self.store.finish(
                job_id,
                JobStatus.COMPLETED,
                retention,
                progress=100,
                seconds=seconds,
                has_audio=int(final.audio is not None),
            )
            if not ended:
                await self._stopped(job_id, files)
                return
            logger.info("job %s completed in %.1f s", job_id, time.monotonic() - started)
            metrics.get().jobs_finished.inc(tags={"status": JobStatus.COMPLETED})
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure becomes the job's error object
            if self.store.get(job_id) is None:
                # Deleted meanwhile: what failed was a write for no job (a scene for no row, a file for no
                # folder), not the job.
                await self._stopped(job_id, files, exc)
            else:
                self.fail(job_id, exc)
        finally:
            files.forget()

    async def _stopped(self, job_id: str, files: JobFiles, cause: Exception | None = None) -> None:
        """The job was cancelled or deleted while this run worked on it. A cancel's end stands as it is; a
        deleted job's folder is removed, as a write of this run may have made it again after the DELETE
        removed it (and the sweep would find it only after ``ORPHAN_GRACE_S``)."""
        if self.store.get(job_id) is not None:
            logger.info("job %s ended before it could complete; its end stands", job_id)
            return
        logger.info(
            "job %s was deleted while it ran; stopping here%s", job_id, f" ({cause})" if cause else ""
        )
        await asyncio.to_thread(files.remove)

    # -- steps ----------------------------------------------------------------------------------

    async def _write(
        self, job: JobRow, request: CreateVideoRequest, plan: JobPlan, files: JobFiles
    ) -> list[SceneRow]:
        started = time.monotonic()
        # An extension's scenes follow those of the video it extends.
        inherited = job.inherited if job.extended_from_video_id else []
        first = len(inherited)
        speaks = self.config.narration.backend != "none"  # a request stored under another config may ask
        options = request.narration_options(default=True) if speaks else None
        # `seconds` is a contract: scenes of an asked length (or explicit scenes with their own lengths) are
        # spoken fast enough to fit them.
        asked = request.seconds is not None or any(
            spec.duration_s is not None for spec in request.scenes or []
        )
        pause = self._pause(plan, joins=plan.num_scenes > 1 or first > 0)
        if request.scenes is not None:
            terms = self._style_terms(request)
            rows = [
                SceneRow(
                    job_id=job.id,
                    idx=first + i,
                    caption=spec.caption,
                    visual_prompt=spec.visual_prompt or improve_visual_prompt(spec.caption, terms),
                    duration_s=spec.duration_s or plan.scene_seconds,
                    motion_bucket_id=motion_bucket_id(spec.motion or "moderate"),
                )
                for i, spec in enumerate(request.scenes)
            ]
            title, backend = None, ScriptSource.EXPLICIT.value
        else:
            # A narrated scene of an asked length has that long to speak, less its pause: the writer
            # budgets each caption's words for it.
            speech_s = max(0.5, plan.scene_seconds - pause) if options is not None and asked else None
            script = await self.stages.writer.write(
                WriteRequest(request.prompt, plan.num_scenes, style=request.style, scene_seconds=speech_s)
            )
            # Equal scene lengths: the video lasts what was asked, and equal frame counts batch together.
            rows = [
                SceneRow(
                    job_id=job.id,
                    idx=first + i,
                    caption=scene.caption,
                    visual_prompt=scene.visual_prompt,
                    duration_s=plan.seconds / len(script.scenes),
                    motion_bucket_id=scene.motion_bucket_id,
                )
                for i, scene in enumerate(script.scenes)
            ]
            title, backend = script.title, script.backend
        plan = plan.with_scenes(len(rows))
        # 1b. Speak each scene before anything is animated: a scene lasts at least its narration.
        notices: list[dict[str, str]] = []
        if options is not None:
            fixed = sum(scene.duration_s for scene in inherited)
            pause = self._pause(plan, joins=len(rows) > 1 or first > 0)
            fit = Fit(pause=pause, explicit=request.scenes is not None, asked=asked, fixed=fixed)
            rows, notices = await self._narrate(job, plan, rows, options, fit)
        if job.extended_from_video_id:
            rows = [*(await asyncio.to_thread(self._take_over, job, inherited, files)), *rows]
        elif job.remixed_from_video_id:
            rows = await asyncio.to_thread(self._reuse, job, request, plan, rows, files)
        self.store.set_scenes(job.id, rows)
        self.store.advance(
            job.id,
            title=title,
            script_backend=backend,
            progress=WRITE_SHARE,
            notices_json=json.dumps(notices, ensure_ascii=False) if notices else None,
        )
        self._observe("write", started)
        logger.info("job %s: %d scenes written by %s", job.id, len(rows), backend)
        return rows

    def _pause(self, plan: JobPlan, joins: bool) -> float:
        """Silence a narrated scene keeps around its voice; a cross-fade covers half of each join."""
        return self.config.narration.pause_s + (plan.transition_s if joins else 0.0)

    async def _narrate(
        self, job: JobRow, plan: JobPlan, rows: list[SceneRow], options: NarrationOptions, fit: Fit
    ) -> tuple[list[SceneRow], list[dict[str, str]]]:
        """Speak each scene's caption and make each scene last at least its narration plus a pause.

        Scenes of an asked length (``fit.asked``) keep shorter pauses (down to the gap between sentences),
        then are spoken faster, up to `narration.max_rate`, until their narration fits; what does not fit
        even then makes the video longer, and a notice says by how much. Otherwise the narration sets the length, as long as the video stays within `limits.max_seconds`
        (spoken faster up to `max_rate` to stay there; past that the job fails with `narration_too_long`).
        A scene whose voice says nothing keeps silence, and a notice says so.

        Returns the scenes with their lengths and narrations, and the notices.
        """
        started = time.monotonic()
        narration = self.config.narration
        planned = [row.duration_s for row in rows]
        fastest = max(options.rate, narration.max_rate)
        limit = self.config.limits.max_seconds - fit.fixed
        rates = [options.rate] * len(rows)
        spoken = await self._speak(job, plan, rows, options, rates, range(len(rows)))
        for attempt in range(NARRATION_ATTEMPTS + 1):
            # Where the narration does not fit, the pauses shrink first, then the voice speeds up.
            goals = fit.goals(planned, [said.seconds + fit.pause for said in spoken], limit)
            pauses = fit_pauses([said.seconds for said in spoken], goals, fit.pause, narration.sentence_gap_s)
            needs = [said.seconds + pause for said, pause in zip(spoken, pauses, strict=True)]
            faster = faster_rates([_speech_seconds(said) for said in spoken], needs, rates, goals, fastest)
            changed = [i for i, (old, new) in enumerate(zip(rates, faster, strict=True)) if new != old]
            if not changed or attempt == NARRATION_ATTEMPTS:
                break
            logger.info(
                "job %s: speaking scenes %s at %s to fit", job.id, changed, [faster[i] for i in changed]
            )
            rates = faster
            for i, said in zip(
                changed, await self._speak(job, plan, rows, options, rates, changed), strict=True
            ):
                spoken[i] = said
        durations = fit_narration(planned, needs, fit.explicit)
        total = sum(durations)
        if total > limit + 1e-6:
            raise NarrationTooLong(
                f"the narration needs {fit.fixed + total:.1f} s, more than limits.max_seconds="
                f"{self.config.limits.max_seconds:g} even spoken {fastest:g}x as fast as the voice's pace; "
                "shorten the scenes' text or ask for fewer scenes"
            )
        notices = []
        if fit.asked and total > sum(planned) + LONGER_NOTICE_S:
            notices.append(
                _notice(
                    NoticeCode.NARRATION_LONGER_THAN_ASKED,
                    f"the narration needs {total:.1f} s at {max(rates):g}x; {sum(planned):g} s asked",
                )
            )
        for row, said in zip(rows, spoken, strict=True):
            if said.silent:
                notices.append(
                    _notice(
                        NoticeCode.SILENT_NARRATION,
                        f"scene {row.idx + 1}: the voice {said.voice!r} said nothing for its caption; the "
                        "scene keeps silence for its length",
                    )
                )
        self._observe("narrate", started)
        rows = [
            dataclasses.replace(row, duration_s=duration, narration_json=_narration_json(said, pause / 2))
            for row, said, duration, pause in zip(rows, spoken, durations, pauses, strict=True)
        ]
        return rows, notices

    async def _speak(
        self,
        job: JobRow,
        plan: JobPlan,
        rows: list[SceneRow],
        options: NarrationOptions,
        rates: list[float],
        which: Iterable[int],
    ) -> list[Narration]:
        """The narrations of scenes ``which`` (indexes into ``rows``), each at its rate, spoken together."""
        return list(
            await asyncio.gather(
                *(
                    self.stages.narrator.narrate(
                        NarrateRequest(
                            job.id,
                            rows[i].idx,
                            rows[i].caption,
                            seed_of(plan, rows[i].idx),
                            options.voice,
                            rates[i],
                            options.language,
                        )
                    )
                    for i in which
                )
            )
        )

    async def _stitch_request(
        self, job_id: str, request: CreateVideoRequest, plan: JobPlan, scenes: list[SceneRow]
    ) -> StitchRequest:
        files = JobFiles(self.storage, job_id)
        spoken: list[SpokenScene | None] = []
        for scene in scenes:
            said = scene.narration
            if not said or said.get("silent"):  # a voice that said nothing is left out of the mix
                spoken.append(None)
                continue
            sentences = [(part["text"], part["start"], part["end"]) for part in said["sentences"]]
            spoken.append(SpokenScene(sentences, said["lead"]))
        return StitchRequest(
            job_id,
            [scene.caption for scene in scenes],
            plan.size,
            request.captions,
            spoken=spoken,
            music=await asyncio.to_thread(_music_format, files),
            burn_subtitles=request.burn_subtitles,
        )

    def _take_over(self, job: JobRow, inherited: list[SceneRow], files: JobFiles) -> list[SceneRow]:
        """The scenes of the video an extension extends, done, with the clips copied when it was created."""
        for scene in inherited:
            files.move(files.inherited(scene.idx), files.clip(scene.idx))
            files.move(files.inherited_narration(scene.idx), files.narration(scene.idx))
        return [_done(scene, job, files.clip(scene.idx)) for scene in inherited]

    def _reuse(
        self, job: JobRow, request: CreateVideoRequest, plan: JobPlan, rows: list[SceneRow], files: JobFiles
    ) -> list[SceneRow]:
        """A remix's scenes. Each scene made of the same things as the source's scene at its place takes
        over that scene's clip and is done; the others are made.

        With continuity a scene starts from the one before, so only an unbroken run from the first scene is
        taken over. A fallback's clip is made again unless the fallback is all this deployment makes.
        """
        source = {scene.idx: scene for scene in job.inherited}
        frames = plan.scene_frames([row.duration_s for row in rows])
        kept: list[SceneRow] = []
        unbroken = True  # every scene so far taken over (what a chained scene needs)
        for row in rows:
            old = source.get(row.idx)
            chained = request.continuity and row.idx > 0
            same = (
                old is not None
                and old.fingerprint == self._fingerprint(request, plan, row, frames[row.idx], files, chained)
                and (old.generator != Animator.FALLBACK or self.config.fallback == "always")
                and unbroken
                and files.has(files.inherited(row.idx))
            )
            if same and old is not None:
                files.move(files.inherited(row.idx), files.clip(row.idx))
                kept.append(_done(old, job, files.clip(row.idx)))
            else:
                kept.append(row)
                unbroken = not request.continuity
        taken = sum(1 for row in kept if row.source_video_id)
        logger.info(
            "job %s: %d of %d scenes taken over from %s", job.id, taken, len(kept), job.remixed_from_video_id
        )
        return kept

    async def _make_scenes(
        self,
        job_id: str,
        request: CreateVideoRequest,
        plan: JobPlan,
        scenes: list[SceneRow],
        files: JobFiles,
        opening: int | None,
    ) -> None:
        """Make every scene not done yet; scene ``opening`` starts from the last frame of the one before."""

        frames = plan.scene_frames([scene.duration_s for scene in scenes])

        async def start_of(scene: SceneRow) -> bytes | None:
            if scene.idx != opening or scene.status == SceneStatus.COMPLETED:
                return None
            return await asyncio.to_thread(_last_frame_png, files, files.clip(scene.idx - 1))

        if request.continuity:
            last_frame = None
            for scene in scenes:
                start = last_frame or await start_of(scene)
                last_frame = await self._make_scene(
                    job_id, request, plan, scene, frames[scene.idx], files, start
                )
            return

        async def make(scene: SceneRow) -> None:
            start = await start_of(scene)
            await self._make_scene(job_id, request, plan, scene, frames[scene.idx], files, start)

        async with asyncio.TaskGroup() as group:
            for scene in scenes:
                group.create_task(make(scene))

    async def _make_scene(
        self,
        job_id: str,
        request: CreateVideoRequest,
        plan: JobPlan,
        scene: SceneRow,
        frames: int,
        files: JobFiles,
        previous_frame: bytes | None,
    ) -> bytes | None:
        """Keyframe, animate and encode one scene. Returns its last frame as PNG bytes (for continuity).

        A scene longer than one model call is made of segments, each animated from the last frame of the
        one before and encoded to its own file: a job that runs again resumes after the last one written.
        """
        clip = files.clip(scene.idx)
        if scene.status == SceneStatus.COMPLETED and await asyncio.to_thread(files.has, clip):
            # checkpoint: done in an earlier run
            return await asyncio.to_thread(_last_frame_png, files, clip) if request.continuity else None
        lengths = self._segments(frames)
        first = scene.segments_done if scene.segments == len(lengths) else 0
        while first > 0 and not await asyncio.to_thread(files.has, files.segment(scene.idx, first - 1)):
            first -= 1  # a segment file gone (a redeploy on a fresh volume): make it again
        first = min(first, len(lengths) - 1)
        self._scene(
            job_id,
            scene.idx,
            SceneStatus.PAINTING,
            attempts=scene.attempts + 1,
            segments=len(lengths),
            segments_done=first,
        )
        width, height = plan.generation_size

        # a. The first frame: the caller's reference, the previous scene's end, or a keyframe painted (in the
        #    service, handed from the painter to the animator directly). Resizing runs off the event loop.
        #    A segment after the first starts from the end of the one before.
        stage_started = time.monotonic()
        keyframe: Any
        if first > 0:
            png = await asyncio.to_thread(_last_frame_png, files, files.segment(scene.idx, first - 1))
            keyframe = KeyframeResult(
                await asyncio.to_thread(_open_png, png, width, height), KeyframeSource.CONTINUITY
            )
        elif scene.idx == 0 and await asyncio.to_thread(files.has, files.reference):
            image = await asyncio.to_thread(_open_reference, files, width, height)
            keyframe = KeyframeResult(image, KeyframeSource.REFERENCE)
        elif previous_frame is not None:
            image = await asyncio.to_thread(_open_png, previous_frame, width, height)
            keyframe = KeyframeResult(image, KeyframeSource.CONTINUITY)
        elif getattr(self.config.video, "keyframes", "painted") == "none":
            keyframe = KeyframeResult(None, KeyframeSource.TEXT)  # the video model starts from the text
        else:
            keyframe = self.stages.painter.paint(
                PaintRequest(scene.visual_prompt, width, height, seed_of(plan, scene.idx))
            )

        motion = scene.motion_bucket_id if request.motion_bucket_id is None else request.motion_bucket_id
        encoded = None
        for segment in range(first, len(lengths)):
            if segment > first:
                assert encoded is not None and encoded.last_frame_png is not None
                image = await asyncio.to_thread(_open_png, encoded.last_frame_png, width, height)
                keyframe = KeyframeResult(image, KeyframeSource.CONTINUITY)
            # b. Animate it (the painting, when there is one, goes to the animator without passing here).
            animate = AnimateRequest(
                scene=SceneRequest(
                    seed=seed_of(plan, scene.idx, segment),
                    width=width,
                    height=height,
                    num_frames=lengths[segment],
                    num_inference_steps=plan.steps,
                    fps=plan.fps,
                    motion_bucket_id=motion,
                    noise_aug_strength=request.noise_aug_strength,
                    # Families that take text (LTX, Wan) see the keyframe's prompt; SVD ignores it.
                    prompt=scene.visual_prompt,
                ),
                text=scene.caption,
                key=f"{job_id}:{scene.idx}",
            )
            encode = EncodeRequest(
                job_id,
                scene.idx,
                plan.fps,
                keep_last_frame=request.continuity or segment < len(lengths) - 1,
                segment=segment,
                segments=len(lengths),
            )
            encoded = await self._segment(job_id, scene, animate, keyframe, encode, stage_started)
            stage_started = time.monotonic()
        assert encoded is not None
        self._scene(
            job_id,
            scene.idx,
            SceneStatus.COMPLETED,
            clip_path=encoded.path,
            segments_done=len(lengths),
            fingerprint=await asyncio.to_thread(
                self._fingerprint, request, plan, scene, frames, files, previous_frame is not None
            ),
        )
        return encoded.last_frame_png

    async def _segment(
        self,
        job_id: str,
        scene: SceneRow,
        animate: AnimateRequest,
        keyframe: Any,
        encode: EncodeRequest,
        started: float,
    ) -> EncodedScene:
        """Animate and encode one segment of a scene (all of it, for most scenes): its checkpoint.

        Frames lost on the way (their animator died) are made again.
        """
        last = encode.segment == encode.segments - 1
        for attempt in range(1, FRAMES_ATTEMPTS + 1):
            animated = await self._animate(job_id, scene, animate, keyframe, started, encode)
            self._scene(
                job_id,
                scene.idx,
                SceneStatus.ENCODING if last else SceneStatus.ANIMATING,
                progress=_progress(encode.segment + 1, encode.segments)
                if not last
                else STAGE_START[SceneStatus.ENCODING],
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
                logger.warning("job %s: scene %d's frames were lost; animating it again", job_id, scene.idx)
                continue
            self._observe("encode", started)
            if last:
                metrics.get().scenes.inc(tags={"generator": animated.generator})
            else:
                self._scene(
                    job_id,
                    scene.idx,
                    SceneStatus.ANIMATING,
                    segments_done=encode.segment + 1,
                    progress=_progress(encode.segment + 1, encode.segments),
                )
            return encoded
        raise AssertionError("unreachable")

    async def _animate(
        self,
        job_id: str,
        scene: SceneRow,
        request: AnimateRequest,
        keyframe: Any,
        started: float,
        encode: EncodeRequest,
    ) -> Animated:
        """Animate a segment from its keyframe, copying step progress into the scene as it comes."""
        animated: Animated | None = None
        async for event in self.stages.animator.animate(request, keyframe):
            if isinstance(event, KeyframeReady):
                self._observe("paint", started)
                started = time.monotonic()
                # What made the scene's first frame; later segments start from the one before.
                made_by = {"keyframe_generator": event.source} if encode.segment == 0 else {}
                progress = _progress(encode.segment, encode.segments)
                self._scene(job_id, scene.idx, SceneStatus.ANIMATING, progress=progress, **made_by)
            elif isinstance(event, StepDone):
                done = encode.segment + event.step / event.total
                self._scene(
                    job_id, scene.idx, SceneStatus.ANIMATING, progress=_progress(done, encode.segments)
                )
            else:
                animated = event
        if animated is None:
            raise RuntimeError(f"the animator ended scene {scene.idx} without its frames")
        self._observe("animate", started)
        return animated

    def _segments(self, frames: int) -> list[int]:
        """Frames of each model call that makes a scene of ``frames`` frames."""
        return segment_frames(frames, self.config.limits.max_frames_per_segment)

    def _fingerprint(
        self,
        request: CreateVideoRequest,
        plan: JobPlan,
        scene: SceneRow,
        frames: int,
        files: JobFiles,
        chained: bool,
    ) -> str:
        """What a scene's clip is made from: a remix whose scene has the same fingerprint takes its clip over."""
        motion = scene.motion_bucket_id if request.motion_bucket_id is None else request.motion_bucket_id
        if scene.idx == 0 and files.has(files.reference):
            start = "reference:" + hashlib.sha256(files.local(files.reference).read_bytes()).hexdigest()
        else:
            start = "previous scene" if chained else "painted"
        made_of = {
            "caption": scene.caption,
            "visual_prompt": scene.visual_prompt,
            "frames": frames,
            "seed": seed_of(plan, scene.idx),
            "size": plan.generation_size,
            "steps": plan.steps,
            "fps": plan.fps,
            "motion": motion,
            "noise": request.noise_aug_strength,
            "interpolation": self.config.video_processing.interpolation_factor,
            "start": start,
        }
        return hashlib.sha256(json.dumps(made_of, sort_keys=True).encode()).hexdigest()

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


def _notice(code: NoticeCode, message: str) -> dict[str, str]:
    return {"code": code.value, "message": message}


def _speech_seconds(said: Narration) -> float:
    """How long the voice itself speaks (the gaps between sentences do not shorten with the pace)."""
    return sum(part.end - part.start for part in said.sentences)


def _narration_json(said: Narration, lead: float) -> str:
    """A scene's narration as the scene row keeps it (the video object's `narration`)."""
    return json.dumps(
        {
            "narrator": said.narrator,
            "voice": said.voice,
            "language": said.language,
            "seconds": round(said.seconds, 3),
            "lead": round(lead, 3),
            "rate": round(said.rate, 3),
            "sentences": [
                {"text": part.text, "start": round(part.start, 3), "end": round(part.end, 3)}
                for part in said.sentences
            ],
            "fallback_reason": said.fallback_reason,
            "silent": said.silent,
        },
        ensure_ascii=False,
    )


def _music_format(files: JobFiles) -> str | None:
    """The format of the job's music bed, or None when it has none."""
    try:
        with open(files.local(files.music), "rb") as music:
            return sniff_music(music.read(16))
    except FileNotFoundError:
        return None


def _done(scene: SceneRow, job: JobRow, clip: Path) -> SceneRow:
    """``scene`` of another video as a finished scene of ``job``, saying which video made it."""
    return dataclasses.replace(
        scene,
        job_id=job.id,
        status=SceneStatus.COMPLETED,
        progress=100,
        attempts=0,
        clip_path=str(clip),
        source_video_id=scene.source_video_id or scene.job_id,
    )


def seed_of(plan: JobPlan, index: int, segment: int = 0) -> int:
    """The seed of a scene's segment: scene i starts at ``seed + i``; its later segments have seeds of their own."""
    return (plan.seed + index + segment * SEGMENT_SEED_STRIDE) % 2**32


def _progress(segments_done: float, segments: int) -> int:
    """A scene's progress while it animates, ``segments_done`` of its ``segments`` made."""
    low, high = STAGE_START[SceneStatus.ANIMATING], STAGE_START[SceneStatus.ENCODING]
    return int(low + (high - low) * segments_done / segments)


def _open_reference(files: JobFiles, width: int, height: int) -> Image.Image:
    with Image.open(files.local(files.reference)) as reference:
        return prepare_reference(reference, width, height)


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
