"""KeyframePainter: text-to-image keyframes as a Ray Serve deployment, with the placeholder fallback."""

from __future__ import annotations

from collections import Counter

from ray import serve

from core import metrics
from core.status import KeyframeSource
from deployments.batching import BatchSettings, apply_batch_settings, run_batch
from deployments.model_thread import ModelThread
from engines.fallback import FallbackPolicy, KeyframeResult, load_under_policy, paint_keyframes
from engines.painter import PainterConfig, PainterEngine, PaintRequest

# A job asks for all its keyframes within milliseconds, and a turbo model paints one in well under a
# second: a short wait gathers a job's keyframes without delaying a lone request much.
PAINTER_BATCHING = BatchSettings(max_batch_size=4, batch_wait_timeout_s=0.05)


@serve.deployment(
    ray_actor_options={"num_cpus": 0.25},
    max_ongoing_requests=8,
    graceful_shutdown_timeout_s=120,
    user_config=PAINTER_BATCHING.model_dump(),
)
class KeyframePainter:
    """Paints a scene's first frame from its visual prompt.

    Args:
        config: the `painter` section of the app config.
        fallback: the app's fallback policy; `always` never loads the model.
        needed: False where the video model starts from text and nothing is painted (`video.keyframes:
            none`): the model is never loaded, and its absence is no ill health; default True.
    """

    def __init__(self, config: PainterConfig, fallback: FallbackPolicy, needed: bool = True) -> None:
        self.fallback = fallback
        self.needed = needed
        self.batch_sizes: Counter[int] = Counter()
        self.thread = ModelThread("painter")
        self.engine: PainterEngine | None = None
        self.unavailable: str | None = "not loaded: nothing is painted (video.keyframes: none)"
        if needed:
            self.engine, self.unavailable = load_under_policy(
                lambda: PainterEngine(config), fallback, "Keyframe painter"
            )

    def reconfigure(self, user_config: dict) -> None:
        apply_batch_settings(self._paint_batch, user_config)

    async def paint(self, request: PaintRequest) -> KeyframeResult:
        """Paint one keyframe; keyframes requested together share a pipeline call."""
        outcome = await self._paint_batch(request)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    @serve.batch(
        max_batch_size=PAINTER_BATCHING.max_batch_size,
        batch_wait_timeout_s=PAINTER_BATCHING.batch_wait_timeout_s,
    )
    async def _paint_batch(self, requests: list[PaintRequest]) -> list[KeyframeResult | Exception]:
        self.batch_sizes[len(requests)] += 1
        metrics.get().painter_batch_size.observe(len(requests))
        return await run_batch(self._paint, requests)

    async def _paint(self, requests: list[PaintRequest]) -> list[KeyframeResult]:
        results = await self.thread.run(paint_keyframes, self.engine, requests, self.fallback)
        if placeholders := sum(result.generator == KeyframeSource.PLACEHOLDER for result in results):
            metrics.get().fell_back("paint", self.fallback, self.engine is not None, placeholders)
        return results

    def stats(self) -> dict[str, object]:
        """What this replica has seen: batch sizes (size -> count) and whether the model is loaded."""
        return {"batch_sizes": dict(self.batch_sizes), "model_loaded": self.engine is not None}

    def check_health(self) -> None:
        if self.needed and self.fallback == "never" and (self.engine is None or not self.engine.loaded):
            raise RuntimeError(f"keyframe painter unusable: {self.unavailable}")

    def __del__(self) -> None:
        self.thread.shutdown()
        if self.engine is not None:
            self.engine.unload()
