"""LTX-Video's engine: the shared text-video engine with LTX-Video's pipelines and call arguments."""

from __future__ import annotations

from typing import Any

from engines.video.base import Resolved
from engines.video.config import LTXConfig
from engines.video.text import TransformerVideoEngine


class LTXEngine(TransformerVideoEngine):
    """Animates keyframes with LTX-Video through `LTXImageToVideoPipeline` (scenes without a keyframe through
    `LTXPipeline` on the same weights).

    Args:
        config: an `LTXConfig` (model source, scene defaults, speed and memory options).
    """

    def __init__(self, config: LTXConfig) -> None:
        super().__init__(config)
        self.config: LTXConfig

    def _pipeline_class(self) -> Any:
        from engines.video.ltx.pipeline import PerVideoNoiseLTXImageToVideoPipeline

        return PerVideoNoiseLTXImageToVideoPipeline

    def _text_pipeline_over(self, pipeline: Any) -> Any:
        from engines.video.ltx.pipeline import PerVideoNoiseLTXPipeline

        return PerVideoNoiseLTXPipeline(**pipeline.components)

    def _can_batch_keyframes(self, pipeline: Any) -> bool:
        # `engines.video.ltx.pipeline` draws the decode noise per video, so any checkpoint batches.
        return True

    def _latent_pixels(self, pipeline: Any) -> int:
        return int(pipeline.vae_spatial_compression_ratio * pipeline.transformer_spatial_patch_size)

    def _call_kwargs(self, first: Resolved) -> dict[str, Any]:
        # LTX-Video conditions on the frame rate; 0.9.1+ decoders on a timestep and a little noise.
        return {
            "frame_rate": first.param("fps"),
            "decode_timestep": self.config.decode_timestep,
            "decode_noise_scale": self.config.decode_noise_scale,
        }


__all__ = ["LTXEngine"]
