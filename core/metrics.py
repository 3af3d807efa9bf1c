"""Ray Serve custom metrics, shown in the Ray dashboard and exported to Prometheus.

Created lazily inside replicas (metrics need a running Ray worker), one set per process.
"""

from __future__ import annotations

import functools

from ray.serve import metrics


class Metrics:
    def __init__(self) -> None:
        self.jobs = metrics.Gauge("storyreel_jobs", description="Jobs by status.", tag_keys=("status",))
        self.jobs_finished = metrics.Counter(
            "storyreel_jobs_finished", description="Jobs that reached a final status.", tag_keys=("status",)
        )
        self.stage_seconds = metrics.Histogram(
            "storyreel_stage_seconds",
            description="Wall time of one stage of one scene (write and stitch: of one job).",
            boundaries=[0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600],
            tag_keys=("stage",),
        )
        self.scenes = metrics.Counter(
            "storyreel_scenes", description="Scenes finished, by what made them.", tag_keys=("generator",)
        )
        self.stage_retries = metrics.Counter(
            "storyreel_stage_retries",
            description="Stage calls made again because their replica died or was overloaded, by stage.",
            tag_keys=("stage",),
        )
        self.batch_size = metrics.Histogram(
            "storyreel_animator_batch_size",
            description="Scenes per VideoAnimator batch (one pipeline call unless sizes or frame counts differ).",
            boundaries=[1, 2, 3, 4, 6, 8],
        )
        self.painter_batch_size = metrics.Histogram(
            "storyreel_painter_batch_size",
            description="Keyframes per painter batch (one pipeline call unless aspect ratios differ).",
            boundaries=[1, 2, 3, 4, 6, 8],
        )
        self.queue_depth = metrics.Gauge("storyreel_queue_depth", description="Jobs waiting to start.")
        self.step_scenes = metrics.Gauge(
            "storyreel_step_scenes",
            description="Under scheduling: step, scenes in a VideoAnimator replica's loop (state=active) and "
            "queued for it (state=waiting), as of the last scene that entered or left.",
            tag_keys=("state",),
        )
        self.gpu_memory = metrics.Gauge(
            "storyreel_gpu_memory_bytes",
            description="Peak GPU memory allocated by the VideoAnimator replica.",
        )
        self.queue_wait = metrics.Histogram(
            "storyreel_queue_wait_seconds",
            description="From a job's create to its first start by a runner (to the second).",
            boundaries=[1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600],
        )
        self.animator_busy = metrics.Counter(
            "storyreel_animator_busy_seconds",
            description="Seconds a VideoAnimator replica spent making frames, by model or fallback; its rate "
            "is the replica's duty cycle.",
        )
        self.fallbacks = metrics.Counter(
            "storyreel_fallbacks",
            description="Results a fallback made instead of the model, by stage (write, paint, animate, "
            "narrate) and reason (policy: fallback is 'always'; unavailable: the model did not load; "
            "failed: the loaded model failed the call).",
            tag_keys=("stage", "reason"),  # type: ignore[arg-type]  # Ray annotates it as a 1-tuple
        )
        self.webhook_deliveries = metrics.Counter(
            "storyreel_webhook_deliveries",
            description="Webhook delivery attempts by outcome (delivered; retrying: failed, another attempt "
            "is due; abandoned: failed for the last time).",
            tag_keys=("outcome",),
        )

    def fell_back(self, stage: str, policy: str, loaded: bool, count: int = 1) -> None:
        """Count ``count`` results of ``stage`` made by its fallback, under the fallback ``policy``, by a
        replica whose model is ``loaded`` or not."""
        reason = "policy" if policy == "always" else "failed" if loaded else "unavailable"
        self.fallbacks.inc(count, tags={"stage": stage, "reason": reason})


@functools.cache
def get() -> Metrics:
    return Metrics()
