"""What crosses between a job's recipe and its five stages: typed requests, results and stage protocols.

The recipe (``serve_app.jobs.recipe.VideoRecipe``) calls a writer, a narrator, a painter, an animator and an
encoder through the protocols below. Two adapters implement them: Ray Serve handles in the service
(``serve_app.jobs.stages.ServeStages``) and engines called in this process (``engines.stages.local.LocalStages``) in
tests and benchmarks.

Frames never pass through the recipe: the animator's last event carries them as an opaque ``frames`` value
(the array itself in process, a Ray object reference in the service) that only the encoder opens. A painted
keyframe does not either: the recipe says where each first frame comes from (`KeyframeSpec`), the painter
turns that into what its own adapter's animator takes (`Painter` and `Animator` share that type, ``K``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from PIL import Image

from core.status import Animator as AnimatorName
from core.status import KeyframeSource
from engines.fallback import KeyframeResult, SceneResult
from engines.media.clips import EncodedScene, EncodeRequest, FinalVideo, StitchRequest
from engines.narrator import NarrateRequest, Narration
from engines.painter import PaintRequest
from engines.video.base import SceneRequest
from engines.writer import Script, WriteRequest


@dataclass(frozen=True)
class KeyframeSpec:
    """Where a scene's (or a segment's) first frame comes from.

    Args:
        source: what makes it: the painter (from ``painting``), the caller's reference, the previous scene's
            or segment's last frame (``image``), or nothing (`KeyframeSource.TEXT`: the video model starts
            from the prompt).
        image: the frame at hand, already at the generation size; None unless the source is a reference or
            continuity.
        painting: what to paint; set only when the source is the painter.
    """

    source: KeyframeSource
    image: Image.Image | None = None
    painting: PaintRequest | None = None

    @classmethod
    def painted(cls, request: PaintRequest) -> KeyframeSpec:
        return cls(KeyframeSource.PAINTER, painting=request)

    @classmethod
    def given(cls, image: Image.Image, source: KeyframeSource) -> KeyframeSpec:
        """A frame at hand: the caller's reference, or the last frame of what came before."""
        return cls(source, image=image)

    @classmethod
    def text_only(cls) -> KeyframeSpec:
        return cls(KeyframeSource.TEXT)

    def at_hand(self) -> KeyframeResult:
        """The keyframe itself, where nothing has to paint it."""
        if self.painting is not None:
            raise ValueError("a keyframe to paint is not at hand: the painter makes it")
        return KeyframeResult(self.image, self.source)


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
        generator, seed, seconds, fallback_reason, batch_size, peak_memory_bytes, ignored_fields: as in
            ``engines.fallback.SceneResult``.
        keyframe: what made the keyframe the frames start from.
    """

    frames: Any
    generator: AnimatorName
    seed: int | None
    seconds: float
    keyframe: KeyframeReady
    fallback_reason: str | None = None
    batch_size: int = 1
    peak_memory_bytes: int | None = None
    ignored_fields: tuple[str, ...] = ()

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
            peak_memory_bytes=result.peak_memory_bytes,
            ignored_fields=result.ignored_fields,
        )


AnimationEvent = KeyframeReady | StepDone | Animated


class Writer(Protocol):
    async def write(self, request: WriteRequest) -> Script: ...


class Narrator(Protocol):
    async def narrate(self, request: NarrateRequest) -> Narration:
        """Speak one scene's text into the job's folder; the result says how long and who spoke."""
        ...


# What a painter hands its animator for one keyframe: each adapter's own (a painting under way in process, a
# request the animator's call carries to the painter deployment in the service). The recipe only passes it on.
K = TypeVar("K")
K_co = TypeVar("K_co", covariant=True)
K_contra = TypeVar("K_contra", contravariant=True)


class Painter(Protocol[K_co]):
    def paint(self, keyframe: KeyframeSpec) -> K_co:
        """Start making the first frame ``keyframe`` describes, for this adapter's animator to receive (a
        frame at hand passes as it is; a painting may start here or when the animator is called)."""
        ...


class Animator(Protocol[K_contra]):
    def animate(self, request: AnimateRequest, keyframe: K_contra) -> AsyncIterator[AnimationEvent]:
        """Animate from ``keyframe`` (what this adapter's painter gave): `KeyframeReady`, then a `StepDone`
        per denoising step, then `Animated`."""
        ...


class Encoder(Protocol):
    async def encode_scene(self, request: EncodeRequest, animated: Animated) -> EncodedScene: ...

    async def stitch(self, request: StitchRequest) -> FinalVideo: ...


class Stages(Protocol[K]):
    """The five stages a recipe runs on; ``K`` is what their painter hands their animator."""

    @property
    def writer(self) -> Writer: ...

    @property
    def narrator(self) -> Narrator: ...

    @property
    def painter(self) -> Painter[K]: ...

    @property
    def animator(self) -> Animator[K]: ...

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
