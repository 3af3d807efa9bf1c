"""LocalStages: the four stages as engines called in this process (tests, benchmarks, no Ray).

Keyframes and scenes that arrive together share one engine call, as Ray Serve's batching does in the
service, so the in-process side of a benchmark does the same work the service does.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable

from core.status import KeyframeSource
from engines.fallback import (
    FallbackPolicy,
    KeyframeResult,
    SceneResult,
    animate_scenes,
    paint_keyframes,
    write_script,
)
from engines.media import ffmpeg
from engines.media.clips import ClipEncoder, EncodedScene, EncodeRequest, FinalVideo, StitchRequest
from engines.narrator import NarrateRequest, Narration, NarrationConfig, NarratorEngine
from engines.painter import PainterEngine, PaintRequest
from engines.stages.micro_batch import MicroBatcher
from engines.stages.protocols import (
    Animated,
    AnimateRequest,
    AnimationEvent,
    KeyframeReady,
    KeyframeSpec,
    StepDone,
    follow_steps,
)
from engines.video.base import SceneRequest, VideoModel
from engines.video.svd.engine import SVDConfig
from engines.video.text import TransformerVideoConfig
from engines.writer import Script, ScriptWriter, WriteRequest


@dataclasses.dataclass
class _Scene:
    request: SceneRequest
    text: str
    job_id: str
    progress: Callable[[int, int], None]


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
        ready = KeyframeReady(KeyframeSource(made.generator), made.fallback_reason)
        yield ready
        scene = dataclasses.replace(request.scene, image=made.image)
        # Under `scheduling: step` every scene enters the shared step loop on its own; the loop batches.
        submit = self._scenes.submit if self.video.scheduling == "call" else self._animate_in_loop
        result: SceneResult | None = None
        async for event in follow_steps(
            lambda progress: submit(_Scene(scene, request.text, request.job_id, progress))
        ):
            if isinstance(event, StepDone):
                yield event
            else:
                result = event
        assert result is not None
        yield Animated.of(result, result.frames, ready)

    # A cancel of the job's task kills the ffmpeg of these at once, as the Encoder deployment's does.
    async def encode_scene(self, request: EncodeRequest, animated: Animated) -> EncodedScene:
        return await ffmpeg.to_thread_in_scope(self.clips.encode_scene, request, animated.frames)

    async def stitch(self, request: StitchRequest) -> FinalVideo:
        return await ffmpeg.to_thread_in_scope(self.clips.stitch, request)

    def _paint_batch(self, requests: list[PaintRequest]) -> list[KeyframeResult]:
        return paint_keyframes(self.painter_engine, requests, self.policy)

    async def _animate_in_loop(self, scene: _Scene) -> SceneResult:
        return (await asyncio.to_thread(self._animate_batch, [scene]))[0]

    def _animate_batch(self, scenes: list[_Scene]) -> list[SceneResult]:
        job_ids = {scene.job_id for scene in scenes}

        def progress(step: int, total: int) -> None:
            for scene in scenes:
                scene.progress(step, total)

        class Cancelled:
            @staticmethod
            def is_set() -> bool:
                return job_ids <= self.cancelled

        return animate_scenes(
            self.svd,
            [scene.request for scene in scenes],
            [scene.text for scene in scenes],
            self.policy,
            self.video,
            progress=progress,
            cancel=Cancelled(),
        )
