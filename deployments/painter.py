"""KeyframePainter: text-to-image keyframes as a Ray Serve deployment, with the placeholder fallback."""

from __future__ import annotations

from ray import serve

from deployments.model_thread import ModelThread
from engines.fallback import FallbackPolicy, KeyframeResult, load_under_policy, paint_keyframe
from engines.painter import PainterConfig, PainterEngine


@serve.deployment(
    ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=4, graceful_shutdown_timeout_s=120
)
class KeyframePainter:
    """Paints a scene's first frame from its visual prompt.

    Args:
        config: the `painter` section of the app config.
        fallback: the app's fallback policy; `always` never loads the model.
    """

    def __init__(self, config: PainterConfig, fallback: FallbackPolicy) -> None:
        self.fallback = fallback
        self.thread = ModelThread("painter")
        self.engine, self.unavailable = load_under_policy(
            lambda: PainterEngine(config), fallback, "Keyframe painter"
        )

    async def paint(self, prompt: str, width: int, height: int, seed: int) -> KeyframeResult:
        return await self.thread.run(paint_keyframe, self.engine, prompt, width, height, seed, self.fallback)

    def check_health(self) -> None:
        if self.fallback == "never" and (self.engine is None or not self.engine.loaded):
            raise RuntimeError(f"keyframe painter unusable: {self.unavailable}")

    def __del__(self) -> None:
        self.thread.shutdown()
        if self.engine is not None:
            self.engine.unload()
