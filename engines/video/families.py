"""The animator's model families behind one config field and one engine interface.

`video.family` picks the family: `svd` (Stable Video Diffusion, the default: no text, motion controls),
`ltx` (LTX-Video) or `wan` (Wan 2.1/2.2), which also take the scene's visual prompt. A config without
`family` is SVD, so every existing config reads as before. Every engine has the same `load`, `generate`
(batching, progress, cancel, out-of-memory retries) and `unload`, so the fallback, the deployment and the
in-process stages take any of them.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Discriminator, Tag

from engines.video.base import VideoEngine
from engines.video.ltx.engine import LTXEngine
from engines.video.step_loop import StepScheduler
from engines.video.svd.engine import SVDConfig, SVDEngine
from engines.video.text import FAMILY_RULES, FamilyRules, LTXConfig, TransformerVideoConfig, WanConfig
from engines.video.wan.engine import WanEngine


def _family_of(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("family", "svd"))
    return str(getattr(value, "family", "svd"))


VideoConfig = Annotated[
    Annotated[SVDConfig, Tag("svd")] | Annotated[LTXConfig, Tag("ltx")] | Annotated[WanConfig, Tag("wan")],
    Discriminator(_family_of),
]
"""`SVDConfig`, `LTXConfig` or `WanConfig`, by `family` (default `svd`)."""


def rules_of(config: SVDConfig | TransformerVideoConfig) -> FamilyRules:
    """The shape and guidance rules of the configured family."""
    return FAMILY_RULES[config.family]


# Each family's config type and its engine.
_ENGINES: tuple[tuple[type[Any], type[VideoEngine]], ...] = (
    (SVDConfig, SVDEngine),
    (LTXConfig, LTXEngine),
    (WanConfig, WanEngine),
)


def video_engine(config: SVDConfig | TransformerVideoConfig) -> VideoEngine:
    """The bare engine of the configured family (not yet loaded), picked by the config's type.

    Raises:
        TypeError: ``config`` is no family's config.
    """
    for config_type, engine_type in _ENGINES:
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
    engine = video_engine(config)
    if config.scheduling == "step":
        share = min(max(gpu_share, 0.0), 1.0) or 1.0  # no GPU assigned: the fraction of a whole device
        return StepScheduler(engine, config.max_active_scenes, config.step_memory_fraction * share)
    return engine


__all__ = ["VideoConfig", "build_video_engine", "rules_of", "video_engine"]
