"""The animator's model families behind one engine interface: the engine of the configured `video.family`.

Every engine has the same `load`, `generate` (batching, progress, cancel, out-of-memory retries) and
`unload`, so the fallback, the deployment and the in-process stages take any of them. The families'
settings live in `engines.video.config`, which imports no model code, so replicas that only read a config
(the ingress, the runner) load none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engines.video.config import LTXConfig, SVDConfig, TransformerVideoConfig, WanConfig

if TYPE_CHECKING:
    from engines.video.base import VideoEngine
    from engines.video.step_loop import StepScheduler


def video_engine(config: SVDConfig | TransformerVideoConfig) -> VideoEngine:
    """The bare engine of the configured family (not yet loaded), picked by the config's type.

    Raises:
        TypeError: ``config`` is no family's config.
    """
    # Imported when an engine is built, not with this module: the engines bring torch and diffusers, and
    # the job runner and the animator under `fallback: always` import this module without building one.
    from engines.video.ltx.engine import LTXEngine
    from engines.video.svd.engine import SVDEngine
    from engines.video.wan.engine import WanEngine

    engines: tuple[tuple[type[Any], type[VideoEngine]], ...] = (
        (SVDConfig, SVDEngine),
        (LTXConfig, LTXEngine),
        (WanConfig, WanEngine),
    )
    for config_type, engine_type in engines:
        if isinstance(config, config_type):
            return engine_type(config)
    raise TypeError(f"no video engine takes a {type(config).__name__}")


def build_video_engine(
    config: SVDConfig | TransformerVideoConfig, gpu_share: float = 1.0
) -> VideoEngine | StepScheduler:
    """The engine of the configured family (not yet loaded); under `scheduling: step`, inside the shared step
    loop (`engines.video.step_loop.StepScheduler`, which has the engine's `load`, `generate` and `unload`).

    Args:
        config: the `video` section.
        gpu_share: the share of the GPU this replica was given (its `num_gpus`, at most 1): under `step`
            the loop admits scenes within `step_memory_fraction` of that share of the device's memory.
    """
    from engines.video.step_loop import StepScheduler

    engine = video_engine(config)
    if config.scheduling == "step":
        share = min(max(gpu_share, 0.0), 1.0) or 1.0  # no GPU assigned: the fraction of a whole device
        return StepScheduler(engine, config.max_active_scenes, config.step_memory_fraction * share)
    return engine


__all__ = ["build_video_engine", "video_engine"]
