"""Narrator: the narrator engine as a Ray Serve deployment, under the app's fallback policy."""

from __future__ import annotations

import asyncio

from ray import serve

from core import metrics
from core.storage import Storage
from deployments.model_thread import ModelThread
from engines.fallback import FallbackPolicy
from engines.narrator import NarrateRequest, Narration, NarrationConfig, NarratorEngine


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=16)
class Narrator:
    """Speaks each scene's text into the job's folder and says how long it took and who spoke.

    Args:
        config: the `narration` section of the app config.
        storage: where the job files are kept.
        fallback: the app's fallback policy.
    """

    def __init__(self, config: NarrationConfig, storage: Storage, fallback: FallbackPolicy = "auto") -> None:
        self.engine = NarratorEngine(config, storage, fallback)
        self.engine.load()
        # A neural voice computes: its calls share one thread. eSpeak NG takes milliseconds per sentence.
        self.thread = ModelThread("narrator") if self.engine.neural is not None else None

    async def narrate(self, request: NarrateRequest) -> Narration:
        if self.thread is not None:
            narration = await self.thread.run(self.engine.narrate, request)
        else:
            narration = await asyncio.to_thread(self.engine.narrate, request)
        if narration.fallback_reason:
            metrics.get().fell_back("narrate", self.engine.policy, self.engine.neural is not None)
        return narration
