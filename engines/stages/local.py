"""LocalStages: the four stages as engines called in this process (tests, benchmarks, no Ray).

Keyframes and scenes that arrive together share one engine call, as Ray Serve's batching does in the
service, so the in-process side of a benchmark does the same work the service does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable

from engines.fallback import FallbackPolicy, KeyframeResult, SceneResult, paint_keyframes, write_script
from engines.media import ffmpeg
from engines.media.clips import ClipEncoder, EncodedScene, EncodeRequest, FinalVideo, StitchRequest
from engines.narrator import NarrateRequest, Narration, NarrationConfig, NarratorEngine
from engines.painter import PainterEngine, PaintRequest
from engines.stages.animate import SceneItem, animate_from_keyframe, run_scenes
from engines.stages.micro_batch import MicroBatcher
from engines.stages.protocols import (
    Animated,
    AnimateRequest,
    AnimationEvent,
    KeyframeSpec,
)
from engines.video.base import VideoModel
from engines.video.config import SVDConfig, TransformerVideoConfig
from engines.writer import Script, ScriptWriter, WriteRequest


class LocalStages:
    """Writer, narrator, painter, animator and encoder over engines in this process, under one fallback policy.

    Args:
        writer: the scene writer (see `engines.fallback.scene_writer`).
        painter, svd: the loaded engines (``svd``: the video model of any family), or None where the policy stands in for them.
        clips: the encoder of the job files.
        policy: the fallback policy.
        video: the SVD settings (title cards take their size and length from it when a request does not).
        cancelled: ids of cancelled jobs; their scenes stop at the next denoising step.
        narrator: the loaded narrator; default eSpeak NG as `NarrationConfig()` sets it.
    """

    def __init__(
        self,
        writer: ScriptWriter,
        painter: PainterEngine | None,
        svd: VideoModel | None,
        clips: ClipEncoder,
        policy: FallbackPolicy,
        video: SVDConfig | TransformerVideoConfig,
        cancelled: set[str] | None = None,
        narrator: NarratorEngine | None = None,
    ) -> None:
        self.writer_engine = writer
        self.painter_engine = painter
        self.svd = svd
        self.clips = clips
        self.policy = policy
        self.video = video
        self.cancelled = cancelled if cancelled is not None else set()
        self.narrator_engine = narrator or NarratorEngine(NarrationConfig(), clips.storage, policy)
        self._paintings = MicroBatcher(self._paint_batch, max_size=4, wait_s=0.05)
        self._scenes = MicroBatcher(self._animate_batch, max_size=4, wait_s=0.2)
        # The five protocols, by name: this object is all of them.
        self.writer, self.narrator, self.painter, self.animator, self.encoder = self, self, self, self, self

    async def write(self, request: WriteRequest) -> Script:
        return await asyncio.to_thread(write_script, self.writer_engine, request, self.policy)

    async def narrate(self, request: NarrateRequest) -> Narration:
        return await asyncio.to_thread(self.narrator_engine.narrate, request)

    def paint(self, keyframe: KeyframeSpec) -> KeyframeResult | Awaitable[KeyframeResult]:
        """The frame at hand, or a painting started now (keyframes asked together share a pipeline call)."""
        if keyframe.painting is None:
            return keyframe.at_hand()
        return asyncio.ensure_future(self._paintings.submit(keyframe.painting))

    async def animate(
        self, request: AnimateRequest, keyframe: KeyframeResult | Awaitable[KeyframeResult]
    ) -> AsyncIterator[AnimationEvent]:
        made = keyframe if isinstance(keyframe, KeyframeResult) else await keyframe
        # Under `scheduling: step` every scene enters the shared step loop on its own; the loop batches.
        submit = self._scenes.submit if self.video.scheduling == "call" else self._animate_in_loop
        # In process the frames are handed over as they are.
        async for event in animate_from_keyframe(request, made, submit, lambda frames: frames):
            yield event

    # A cancel of the job's task kills the ffmpeg of these at once, as the Encoder deployment's does.
    async def encode_scene(self, request: EncodeRequest, animated: Animated) -> EncodedScene:
        return await ffmpeg.to_thread_in_scope(self.clips.encode_scene, request, animated.frames)

    async def stitch(self, request: StitchRequest) -> FinalVideo:
        return await ffmpeg.to_thread_in_scope(self.clips.stitch, request)

    def _paint_batch(self, requests: list[PaintRequest]) -> list[KeyframeResult]:
        return paint_keyframes(self.painter_engine, requests, self.policy)

    async def _animate_in_loop(self, scene: SceneItem) -> SceneResult:
        return (await asyncio.to_thread(self._animate_batch, [scene]))[0]

    def _animate_batch(self, scenes: list[SceneItem]) -> list[SceneResult]:
        return run_scenes(self.svd, scenes, self.policy, self.video, _JobsCancelled(self.cancelled, scenes))


class _JobsCancelled:
    """Set once every job of a call's scenes is in ``cancelled`` (a mixed call finishes for the others)."""

    def __init__(self, cancelled: set[str], scenes: list[SceneItem]) -> None:
        self.cancelled = cancelled
        self.job_ids = {scene.job_id for scene in scenes}

    def is_set(self) -> bool:
        return self.job_ids <= self.cancelled
