"""SceneWriter: the scene writer engine as a Ray Serve deployment, under the app's fallback policy."""

from __future__ import annotations

import asyncio
import logging

from ray import serve

from core.errors import ModelUnavailable
from deployments.model_thread import ModelThread
from engines.fallback import FallbackPolicy
from engines.writer import Script, ScriptWriter, WriterConfig

logger = logging.getLogger("ray.serve")


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=8)
class SceneWriter:
    """Writes a Script from a prompt.

    Args:
        config: the `writer` section of the app config.
        fallback: the app's fallback policy. `always` writes with the template (no model); `auto` lets the
            template take over from a model that cannot load or answer validly, recording why; `never`
            fails instead (at start if the model cannot load, else the job).
    """

    def __init__(self, config: WriterConfig, fallback: FallbackPolicy = "auto") -> None:
        self.fallback = fallback
        if fallback == "always":
            config = config.model_copy(update={"backend": "template"})
        self.writer = ScriptWriter(config)
        # A local model computes: its calls share one thread (see deployments/model_thread.py). The
        # template and a remote endpoint only wait, so their calls run side by side.
        self.thread = ModelThread("writer") if config.backend == "transformers" else None
        try:
            self.writer.load()
        except ModelUnavailable as exc:
            if fallback == "never":
                raise
            logger.warning("Scene writer model unavailable, scripts come from the template writer: %s", exc)

    async def write(
        self, prompt: str, num_scenes: int | None, language: str | None, style: str | None
    ) -> Script:
        # A local LLM generates for seconds: keep the replica's event loop free.
        args = (prompt, num_scenes, language, style)
        if self.thread is not None:
            script = await self.thread.run(self.writer.write, *args)
        else:
            script = await asyncio.to_thread(self.writer.write, *args)
        if self.fallback == "never" and script.fallback_reason:
            raise ModelUnavailable(f"the scene writer fell back to the template: {script.fallback_reason}")
        return script
