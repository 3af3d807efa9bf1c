"""Animating one scene from its keyframe: what the VideoAnimator deployment and LocalStages share.

Both adapters stream the same events for a scene (`KeyframeReady`, a `StepDone` per denoising step,
`Animated`) and run scenes that share an engine call the same way (each scene's progress, one cancel for
the call, the fallback policy). They differ only in how scenes meet (Ray Serve's `@serve.batch` or a
`MicroBatcher`; the shared step loop under `scheduling: step`), how a cancel is asked about (the JobBoard
or a set of job ids) and where the frames go (the object store, or stay in process). Plain Python, no Ray.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.status import KeyframeSource
from engines.fallback import FallbackPolicy, KeyframeResult, SceneResult, animate_scenes
from engines.stages.protocols import (
    Animated,
    AnimateRequest,
    AnimationEvent,
    KeyframeReady,
    StepDone,
    follow_steps,
)
from engines.video.base import CancelToken, SceneRequest, VideoModel
from engines.video.config import SVDConfig, TransformerVideoConfig


@dataclass
class SceneItem:
    """One scene on its way to the video model: its request with the keyframe filled in, its title-card text,
    its ``job_id:index`` key and where its step progress goes."""

    request: SceneRequest
    text: str
    key: str
    progress: Callable[[int, int], None]

    @property
    def job_id(self) -> str:
        return self.key.rsplit(":", 1)[0]


async def animate_from_keyframe(
    request: AnimateRequest,
    keyframe: KeyframeResult,
    submit: Callable[[SceneItem], Awaitable[SceneResult | Exception]],
    hand_over: Callable[[np.ndarray], Any],
) -> AsyncIterator[AnimationEvent]:
    """Animate one scene from its keyframe, streaming `KeyframeReady`, a `StepDone` per denoising step and
    `Animated`.

    Args:
        request: the scene (see `AnimateRequest`).
        keyframe: its first frame.
        submit: runs the scene (with whatever others it meets) and returns its result, or the exception that
            failed it alone; the adapter picks it by `scheduling`.
        hand_over: what `Animated.frames` carries for the frames made: the array itself, or a reference.
    """
    ready = KeyframeReady(KeyframeSource(keyframe.generator), keyframe.fallback_reason)
    yield ready
    scene = dataclasses.replace(request.scene, image=keyframe.image)
    outcome: SceneResult | Exception | None = None
    async for event in follow_steps(
        lambda progress: submit(SceneItem(scene, request.text, request.key, progress))
    ):
        if isinstance(event, StepDone):
            yield event
        else:
            outcome = event
    if isinstance(outcome, Exception):
        raise outcome
    assert outcome is not None
    yield Animated.of(outcome, hand_over(outcome.frames), ready)


def run_scenes(
    engine: VideoModel | None,
    items: list[SceneItem],
    policy: FallbackPolicy,
    config: SVDConfig | TransformerVideoConfig,
    cancel: CancelToken,
) -> list[SceneResult]:
    """Animate ``items`` in one engine call (or as title cards, per the policy); blocking, so call it from a
    worker thread. Every step of the call reaches every item's progress.

    Args:
        engine: the video model, or None where none loaded.
        items: the scenes of the call.
        policy: the fallback policy.
        config: the `video` section (title cards take their size and length from it).
        cancel: set once every job of ``items`` is cancelled; the call then stops at a step boundary.
    """

    def progress(step: int, total: int) -> None:
        # Called on the pipeline's thread; each item's callback hands it to its own event loop.
        for item in items:
            item.progress(step, total)

    read_peak = _peak_reader(engine, config)
    results = animate_scenes(
        engine,
        [item.request for item in items],
        [item.text for item in items],
        policy,
        config,
        progress=progress,
        cancel=cancel,
    )
    peak = read_peak()
    for result in results:
        result.peak_memory_bytes = peak
    return results


def _peak_reader(
    engine: VideoModel | None, config: SVDConfig | TransformerVideoConfig
) -> Callable[[], int | None]:
    """How the call's peak GPU memory is read: over this call alone under `scheduling: call` (the model runs
    one call at a time), as the replica's peak so far under `step` (its scenes overlap)."""
    if engine is None or engine.placement is None:
        return lambda: None
    from engines.video.memory import peak_reader  # torch: a replica without a model never imports it

    return peak_reader(engine.placement.device, window=config.scheduling == "call")


__all__ = ["SceneItem", "animate_from_keyframe", "run_scenes"]
