"""Wan's engine: the shared text-video engine with Wan's pipelines and its step loop."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from engines.video.config import WanConfig
from engines.video.text import TransformerVideoEngine
from engines.video.wan.options import options_for

# The modules `WanPipeline` (text to video) takes from the image-to-video pipeline it is built over.
_TEXT_COMPONENTS = ("tokenizer", "text_encoder", "vae", "scheduler", "transformer", "transformer_2")


class WanEngine(TransformerVideoEngine):
    """Animates keyframes with Wan 2.1/2.2 through `WanImageToVideoPipeline` (scenes without a keyframe through
    `WanPipeline` on the same weights); under `scheduling: step`, through its loop cut into steps.

    Args:
        config: a `WanConfig` (model source, scene defaults, speed and memory options).
    """

    def __init__(self, config: WanConfig) -> None:
        super().__init__(config)
        self.config: WanConfig

    def stepper(self) -> Any:
        """Wan's loop cut into steps (`engines.video.wan.steps.WanStepper`) for `scheduling: step`; None for
        Wan 2.1 checkpoints with a CLIP image encoder, whose batches this engine does not stack either (their
        scenes then run call by call)."""
        self.load()
        if not self._batches_keyframes:
            return None
        from engines.video.wan.steps import WanStepper

        return WanStepper(
            self._pipeline,
            self._text_to_video,
            self.config.max_sequence_length,
            self._runtime.dtype if self._runtime else "?",
        )

    @contextlib.contextmanager
    def _options_set(self, pipeline: Any, first: Any) -> Iterator[tuple[dict[str, Any], tuple[str, ...]]]:
        # The pipeline reads its scheduler and `boundary_ratio` from itself: they are set for the call and
        # put back after it (calls run one at a time, under the engine's lock).
        options = options_for(pipeline, first)
        scheduler, ratio = pipeline.scheduler, pipeline.config.get("boundary_ratio")
        pipeline.scheduler = options.scheduler
        if options.boundary_ratio is not None:
            pipeline.register_to_config(boundary_ratio=options.boundary_ratio)
        try:
            second = (
                {} if options.guidance_scale_2 is None else {"guidance_scale_2": options.guidance_scale_2}
            )
            yield second, options.ignored
        finally:
            pipeline.scheduler = scheduler
            if options.boundary_ratio is not None:
                pipeline.register_to_config(boundary_ratio=ratio)

    def _pipeline_class(self) -> Any:
        from engines.video.wan.pipeline import PerVideoImageWanPipeline

        return PerVideoImageWanPipeline

    def _text_pipeline_over(self, pipeline: Any) -> Any:
        from diffusers import WanPipeline

        components = pipeline.components
        return WanPipeline(
            **{name: components.get(name) for name in _TEXT_COMPONENTS},
            boundary_ratio=pipeline.config.get("boundary_ratio"),
            expand_timesteps=pipeline.config.get("expand_timesteps", False),
        )

    def _can_batch_keyframes(self, pipeline: Any) -> bool:
        # Wan 2.2 and Wan 2.1 text-to-video checkpoints can (`engines.video.wan.pipeline`); Wan 2.1
        # image-to-video checkpoints with a CLIP image encoder repeat the image embeddings per prompt.
        return getattr(pipeline, "image_encoder", None) is None

    def _latent_pixels(self, pipeline: Any) -> int:
        return int(pipeline.vae_scale_factor_spatial * pipeline.transformer.config.patch_size[1])


__all__ = ["WanEngine"]
