"""VideoAnimator: the video model (SVD by default, or LTX-Video or Wan) on a GPU fraction, batching scenes
that arrive together. Until the families came it was SVDGenerator; configs name the deployment VideoAnimator."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

import ray
from ray import serve

from core import metrics
from core.errors import GenerationCancelled
from core.status import Animator
from deployments.batching import BatchSettings, apply_batch_settings, run_batch
from deployments.model_thread import ModelThread
from engines.fallback import FallbackPolicy, KeyframeResult, SceneResult, load_under_policy
from engines.stages.animate import SceneItem, animate_from_keyframe, run_scenes
from engines.stages.protocols import AnimateRequest, AnimationEvent
from engines.video.config import SVDConfig, TransformerVideoConfig
from engines.video.families import build_video_engine

if TYPE_CHECKING:
    # Only for annotations: the step loop imports torch, which a replica under `fallback: always` never needs.
    from engines.video.step_loop import StepScheduler

logger = logging.getLogger("ray.serve")


class BoardCancel:
    """Cancel in from the JobBoard for one pipeline call.

    A batch may hold scenes of several jobs; it stops only when every one of those jobs is cancelled (a
    cancelled job's scenes in a mixed batch finish with it and are discarded by their runner).
    """

    CHECK_EVERY_S = 0.5  # denoising steps take seconds on a GPU; the board is asked at most this often

    def __init__(self, board: Any, items: list[SceneItem]) -> None:
        self.board = board
        self.job_ids = sorted({item.job_id for item in items})
        # The first question waits CHECK_EVERY_S too: a batch that was just started is rarely cancelled already.
        self._checked_at = time.monotonic()
        self._cancelled = False

    def is_set(self) -> bool:
        if self.board is None or self._cancelled:
            return self._cancelled
        now = time.monotonic()
        if now - self._checked_at >= self.CHECK_EVERY_S:
            self._checked_at = now
            cancelled = self.board.cancelled.remote(self.job_ids).result(timeout_s=5)
            self._cancelled = len(cancelled) == len(self.job_ids)
        return self._cancelled


class BusyClock:
    """The scenes in a replica's model calls now, and the wall time during which there was at least one:
    calls that overlap count once. That time goes to the `animator_busy` metric, whose rate is the replica's
    duty cycle, at each call's start and end and at each `flush` (the health check's, every 10 s), so a
    minutes-long call shows while it runs."""

    def __init__(self) -> None:
        self.scenes = 0
        self._mark = time.monotonic()
        self._lock = threading.Lock()  # the health check may flush from another thread

    @contextmanager
    def animating(self, scenes: int) -> Iterator[None]:
        self.flush()
        self.scenes += scenes
        try:
            yield
        finally:
            self.flush()
            self.scenes -= scenes

    def flush(self) -> None:
        with self._lock:
            now, busy_since = time.monotonic(), self._mark
            self._mark = now
            if self.scenes and now > busy_since:
                metrics.get().animator_busy.inc(now - busy_since)


@serve.deployment(
    ray_actor_options={"num_cpus": 1, "num_gpus": 0},
    max_ongoing_requests=16,
    # A 25-step SVD-XT batch takes minutes; a shorter grace period would kill it mid-generation on scale-down.
    graceful_shutdown_timeout_s=900,
    graceful_shutdown_wait_loop_s=5,
    user_config=BatchSettings().model_dump(),
)
class VideoAnimator:
    """Animates keyframes with the configured video family (SVD, LTX-Video or Wan), or with title-card clips
    where the fallback policy says so.

    Args:
        config: the `video` section of the app config (the seed's VIDEO_CONFIG).
        fallback: the app's fallback policy; `always` never loads the model.
    """

    def __init__(
        self, config: SVDConfig | TransformerVideoConfig, fallback: FallbackPolicy, board: Any = None
    ) -> None:
        self.config = config
        self.fallback = fallback
        self.board = board
        self.batch_sizes: Counter[int] = Counter()
        self.cancelled_batches = 0
        self.busy = BusyClock()
        self.thread = ModelThread("animator")
        # Under `scheduling: step` the loop's memory budget is this replica's share of the GPU.
        gpu_share = float(ray.get_runtime_context().get_assigned_resources().get("GPU", 1.0))
        self.engine, self.unavailable = load_under_policy(
            lambda: build_video_engine(config, gpu_share), fallback, config.family
        )

    def reconfigure(self, user_config: dict) -> None:
        apply_batch_settings(self._animate_batch, user_config)

    async def animate(
        self, request: AnimateRequest, keyframe: KeyframeResult
    ) -> AsyncIterator[AnimationEvent]:
        """Animate one scene from its keyframe, streaming `KeyframeReady`, a `StepDone` per denoising step and
        `Animated`, whose frames stay in the object store for the encoder. Under `scheduling: call` scenes that
        arrive within the batch wait share one pipeline call; under `step` each joins the running loop.

        Args:
            request: the scene (see `AnimateRequest`).
            keyframe: its first frame; in the service, the painter's response, which Serve resolves here.
        """
        # Under `scheduling: step` every scene enters the engine's shared step loop on its own, which batches
        # at each denoising step; under `call`, scenes that arrive together share one pipeline call.
        submit = self._animate_batch if self.config.scheduling == "call" else self._animate_in_loop
        # The frames stay in the object store: the encoder takes them from there, not through the runner.
        async for event in animate_from_keyframe(request, keyframe, submit, lambda frames: [ray.put(frames)]):
            yield event

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.2)
    async def _animate_batch(self, items: list[SceneItem]) -> list[SceneResult | Exception]:
        self.batch_sizes[len(items)] += 1
        metrics.get().batch_size.observe(len(items))
        try:
            with self.busy.animating(len(items)):
                # One scene's bad input must not fail the others in its batch: on failure each runs alone.
                outcomes = await run_batch(
                    lambda batch: self.thread.run(self._run, batch), items, keep=(GenerationCancelled,)
                )
        except GenerationCancelled as exc:
            self.cancelled_batches += 1
            return [exc] * len(items)  # every job in the batch was cancelled
        self._record(outcomes)
        return outcomes

    async def _animate_in_loop(self, item: SceneItem) -> SceneResult:
        # A thread per waiting scene, not the model thread: the loop runs the model on its own thread, and
        # each caller only waits there for its scene (and asks the board about its cancel).
        self._record_loop(arriving=1)
        try:
            with self.busy.animating(1):
                [outcome] = await asyncio.to_thread(self._run, [item])
        finally:
            self._record_loop()
        self.batch_sizes[outcome.batch_size] += 1
        metrics.get().batch_size.observe(outcome.batch_size)
        self._record([outcome])
        return outcome

    @property
    def loop(self) -> StepScheduler | None:
        """The shared step loop the engine runs in under `scheduling: step` (`build_video_engine` puts it
        there); None under `call` or without a model."""
        if self.engine is None or self.config.scheduling != "step":
            return None
        return cast("StepScheduler", self.engine)

    def _record_loop(self, arriving: int = 0) -> None:
        if (loop := self.loop) is not None:
            scenes = metrics.get().step_scenes
            scenes.set(loop.active, tags={"state": "active"})
            scenes.set(loop.waiting + arriving, tags={"state": "waiting"})

    def _run(self, items: list[SceneItem]) -> list[SceneResult]:
        return run_scenes(self.engine, items, self.fallback, self.config, BoardCancel(self.board, items))

    def stats(self) -> dict[str, object]:
        """What this replica has seen: batch sizes (size -> count; under `scheduling: step`, the most scenes
        a scene's steps shared), whether the model is loaded, and the step loop's counts with the scenes in
        it and waiting for it now; which replica it is (Serve's replica id, as the Ray dashboard shows it)
        and how many scenes it is animating now."""
        loop = None
        if self.loop is not None:
            loop = self.loop.stats.as_dict() | {"active": self.loop.active, "waiting": self.loop.waiting}
        return {
            "replica": serve.get_replica_context().replica_tag,
            "animating": self.busy.scenes,
            "batch_sizes": dict(self.batch_sizes),
            "cancelled_batches": self.cancelled_batches,
            "model_loaded": self.engine is not None,
            "unavailable": self.unavailable,
            "step_loop": loop,
        }

    def check_health(self) -> None:
        self.busy.flush()
        if self.fallback == "never" and self.engine is None:
            raise RuntimeError(f"video model unusable: {self.unavailable}")

    def _record(self, outcomes: list[SceneResult | Exception]) -> None:
        """Count the scenes the title card made instead of the model, and the model's GPU memory."""
        made_by_fallback = sum(
            isinstance(outcome, SceneResult) and outcome.generator == Animator.FALLBACK
            for outcome in outcomes
        )
        if made_by_fallback:
            metrics.get().fell_back("animate", self.fallback, self.engine is not None, made_by_fallback)
        if self.engine is None:
            return  # no model, no GPU memory of its own to report (and torch may not be loaded)
        from engines.video.memory import peak_memory_allocated

        # Not torch's peak counter itself: the step loop resets it every step it measures.
        peak = peak_memory_allocated()
        if peak:
            metrics.get().gpu_memory.set(peak)

    def __del__(self) -> None:
        self.thread.shutdown()
        if self.engine is not None:
            self.engine.unload()
