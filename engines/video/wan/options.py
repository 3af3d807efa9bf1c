"""Wan's per-video options that depend on the checkpoint: Wan 2.2 A14B's two experts (`guidance_scale_2`,
`boundary_ratio`) and the shift of the flow-matching scheduler (`flow_shift`). The pipeline call
(`WanEngine`) and the step loop (`engines.video.wan.steps`) both take them from here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The scheduler's name for its shift: UniPC's (the released checkpoints'), then FlowMatchEuler's.
_SHIFT_KEYS = ("flow_shift", "shift")


@dataclass(frozen=True)
class WanOptions:
    """What a scene denoises with on one loaded checkpoint.

    Args:
        guidance_scale_2: the second expert's guidance; None: the first's (`guidance_scale`).
        boundary_ratio: where the second expert takes over (the request's, else the checkpoint's); None with
            one expert.
        scheduler: the pipeline's scheduler, or a new one with the asked-for shift (never set up yet).
        ignored: the fields asked for that this checkpoint has no use for.
    """

    guidance_scale_2: float | None
    boundary_ratio: float | None
    scheduler: Any
    ignored: tuple[str, ...]


def options_for(pipeline: Any, item: Any) -> WanOptions:
    """The options of ``item`` (a resolved request) on ``pipeline``, a loaded Wan pipeline."""
    ignored = []
    guidance_2 = ratio = None
    if (
        getattr(pipeline, "transformer_2", None) is not None
        and pipeline.config.get("boundary_ratio") is not None
    ):
        guidance_2 = item.guidance_scale_2
        ratio = item.boundary_ratio if item.boundary_ratio is not None else pipeline.config["boundary_ratio"]
    else:
        ignored += [
            name for name in ("guidance_scale_2", "boundary_ratio") if getattr(item, name) is not None
        ]
    scheduler = pipeline.scheduler
    if item.flow_shift is not None:
        key = next((key for key in _SHIFT_KEYS if key in scheduler.config), None)
        if key is None:
            ignored.append("flow_shift")
        else:
            scheduler = type(scheduler).from_config(scheduler.config, **{key: item.flow_shift})
    return WanOptions(guidance_2, ratio, scheduler, tuple(ignored))


__all__ = ["WanOptions", "options_for"]
