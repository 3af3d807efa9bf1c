"""SceneWriter: the scene writer engine as a Ray Serve deployment."""

from __future__ import annotations

import asyncio
import logging

from ray import serve

from engines.errors import ModelUnavailable
from engines.writer import Script, ScriptWriter, WriterConfig

logger = logging.getLogger("ray.serve")


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=8)
class SceneWriter:
    """Writes a Script from a prompt. A model that cannot load leaves the template writer in charge.

    Args:
        config: the `writer` section of the app config.
    """

    def __init__(self, config: WriterConfig) -> None:
        self.writer = ScriptWriter(config)
        try:
            self.writer.load()
        except ModelUnavailable as exc:
            logger.warning("Scene writer model unavailable, scripts come from the template writer: %s", exc)

    async def write(
        self, prompt: str, num_scenes: int | None, language: str | None, style: str | None
    ) -> Script:
        # A local LLM generates for seconds: keep the replica's event loop free.
        return await asyncio.to_thread(self.writer.write, prompt, num_scenes, language, style)
