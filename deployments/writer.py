"""SceneWriter: the scene writer engine as a Ray Serve deployment, under the app's fallback policy."""

from __future__ import annotations

import asyncio

from ray import serve

from core import metrics
from deployments.model_thread import ModelThread
from engines.fallback import FallbackPolicy, scene_writer, write_script
from engines.writer import Script, WriterConfig, WriteRequest


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=8)
class SceneWriter:
    """Writes a Script from a prompt.

    Args:
        config: the `writer` section of the app config.
        fallback: the app's fallback policy (see `engines.fallback.scene_writer` and `write_script`).
    """

    def __init__(self, config: WriterConfig, fallback: FallbackPolicy = "auto") -> None:
        self.fallback = fallback
        self.writer = scene_writer(config, fallback)
        # A local model computes: its calls share one thread (see deployments/model_thread.py). The
        # template and a remote endpoint only wait, so their calls run side by side.
        self.thread = ModelThread("writer") if self.writer.config.backend == "transformers" else None

    async def write(self, request: WriteRequest) -> Script:
        # A local LLM generates for seconds: keep the replica's event loop free.
        if self.thread is not None:
            script = await self.thread.run(write_script, self.writer, request, self.fallback)
        else:
            script = await asyncio.to_thread(write_script, self.writer, request, self.fallback)
        if script.fallback_reason:
            # A remote endpoint has nothing to load: its failures count as the model's.
            loaded = getattr(self.writer.backend, "loaded", True)
            metrics.get().fell_back("write", self.fallback, loaded)
        return script
