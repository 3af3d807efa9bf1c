"""What crosses between a job's recipe and its five stages: typed requests, results and stage protocols.

The recipe (``serve_app.jobs.recipe.VideoRecipe``) calls a writer, a narrator, a painter, an animator and an
encoder through the protocols below. Two adapters implement them: Ray Serve handles in the service
(``serve_app.jobs.stages.ServeStages``) and engines called in this process (``engines.stages.local.LocalStages``) in
tests and benchmarks.

Frames never pass through the recipe: the animator's last event carries them as an opaque ``frames`` value
(the array itself in process, a Ray object reference in the service) that only the encoder opens.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from core.status import Animator as AnimatorName
from core.status import KeyframeSource
from engines.fallback import KeyframeResult, SceneResult
from engines.media.clips import EncodedScene, EncodeRequest, FinalVideo, StitchRequest
from engines.narrator import NarrateRequest, Narration
from engines.painter import PaintRequest
from engines.video.base import SceneRequest
from engines.writer import Script, WriteRequest


@dataclass
class AnimateRequest:
    """One scene to animate.

    Args:
        scene: the video model request; its ``image`` is left None, the animator takes it from the keyframe.
        text: the scene's caption, shown on the title card if the fallback makes the clip.
        key: ``job_id:index``, which a cancel of the job reaches the animator by.
    """

    scene: SceneRequest
    text: str
    key: str

    @property
    def job_id(self) -> str:
        return self.key.rsplit(":", 1)[0]


@dataclass
class KeyframeReady:
    """First event of an animation: the keyframe is there, made by ``source``."""

    source: KeyframeSource
    fallback_reason: str | None = None


@dataclass
class StepDone:
    """The scene's denoising finished step ``step`` of ``total``."""

    step: int
    total: int


@dataclass
class Animated:
    """Last event of an animation: who made the frames, and the frames for the encoder only.

    Args:
        frames: the frames, opaque to the recipe: a uint8 array in process, a reference in the service.
        generator, seed, seconds, fallback_reason, batch_size: as in ``engines.fallback.SceneResult``.
        keyframe: what made the keyframe the frames start from.
    """

    frames: Any
    generator: AnimatorName
    seed: int | None
    seconds: float
    keyframe: KeyframeReady
    fallback_reason: str | None = None
    batch_size: int = 1

    @classmethod
    def of(cls, result: SceneResult, frames: Any, keyframe: KeyframeReady) -> Animated:
        return cls(
            frames=frames,
            generator=AnimatorName(result.generator),
            seed=result.seed,
            seconds=result.seconds,
            keyframe=keyframe,
            fallback_reason=result.fallback_reason,
            batch_size=result.batch_size,
        )


AnimationEvent = KeyframeReady | StepDone | Animated


class Writer(Protocol):
    async def write(self, request: WriteRequest) -> Script: ...


class Narrator(Protocol):
    async def narrate(self, request: NarrateRequest) -> Narration:
        """Speak one scene's text into the job's folder; the result says how long and who spoke."""
        ...


class Painter(Protocol):
    def paint(self, request: PaintRequest) -> Awaitable[KeyframeResult]:
        """Start painting; the animator awaits the result (in the service, without the recipe seeing it)."""
        ...


class Animator(Protocol):
    def animate(
        self, request: AnimateRequest, keyframe: KeyframeResult | Awaitable[KeyframeResult]
    ) -> AsyncIterator[AnimationEvent]:
        """Animate from ``keyframe`` (an image at hand, or a painting under way): `KeyframeReady`, then a
        `StepDone` per denoising step, then `Animated`."""
        ...


class Encoder(Protocol):
    async def encode_scene(self, request: EncodeRequest, animated: Animated) -> EncodedScene: ...

    async def stitch(self, request: StitchRequest) -> FinalVideo: ...


class Stages(Protocol):
    """The five stages a recipe runs on."""

    @property
    def writer(self) -> Writer: ...

    @property
    def narrator(self) -> Narrator: ...

    @property
    def painter(self) -> Painter: ...

    @property
    def animator(self) -> Animator: ...

    @property
    def encoder(self) -> Encoder: ...


R = TypeVar("R")


async def follow_steps(
    run: Callable[[Callable[[int, int], None]], Awaitable[R]],
) -> AsyncIterator[StepDone | R]:
    """Run ``run(progress)`` (which calls ``progress(step, total)`` from any thread) and yield a `StepDone`
    per call as it happens, then what ``run`` returned. Used by both adapters' animators."""
    loop = asyncio.get_running_loop()
    steps: asyncio.Queue[StepDone] = asyncio.Queue()

    def progress(step: int, total: int) -> None:
        loop.call_soon_threadsafe(steps.put_nowait, StepDone(step, total))

    task = asyncio.ensure_future(run(progress))
    try:
        while not task.done() or not steps.empty():
            next_step = asyncio.ensure_future(steps.get())
            await asyncio.wait({task, next_step}, return_when=asyncio.FIRST_COMPLETED)
            if next_step.done():
                yield next_step.result()
            else:
                next_step.cancel()
        yield task.result()
    finally:
        task.cancel()
