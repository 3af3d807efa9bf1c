"""`WanImageToVideoPipeline` that animates a different first frame per video, so scenes share a batch.

The stock pipeline accepts one image only, and encodes the whole image batch once per generator (or repeats it batch-size times), which
for B keyframes and B prompts makes B x B conditions: it is built for one image and several prompts. Scenes
of a story each bring their own keyframe, so this subclass prepares each video's latents from its own image
and generator, exactly as that video alone would, and stacks them. Everything else is the stock pipeline.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import WanImageToVideoPipeline


class PerVideoImageWanPipeline(WanImageToVideoPipeline):
    """The stock pipeline, except that a batch of images with one generator each gives one video per image."""

    def check_inputs(self, prompt: Any, negative_prompt: Any, image: Any, *args: Any, **kwargs: Any) -> None:
        # The stock check takes one image; a list is checked image by image (preprocessing takes lists).
        for each in image if isinstance(image, list) else [image]:
            super().check_inputs(prompt, negative_prompt, each, *args, **kwargs)  # type: ignore[misc]

    def prepare_latents(
        self,
        image: torch.Tensor,
        batch_size: int,
        num_channels_latents: int = 16,
        height: int = 480,
        width: int = 832,
        num_frames: int = 81,
        dtype: torch.dtype | None = None,
        device: torch.device | None = None,
        generator: Any = None,
        latents: torch.Tensor | None = None,
        last_image: torch.Tensor | None = None,
    ) -> Any:
        images = image.shape[0]
        if images == 1 or latents is not None or not isinstance(generator, list) or len(generator) != images:
            return super().prepare_latents(  # type: ignore[misc]
                image, batch_size, num_channels_latents, height, width, num_frames, dtype, device, generator,
                latents, last_image,
            )  # fmt: skip
        # 1. Each video from its own image and generator, as it would be made alone
        parts = [
            super(PerVideoImageWanPipeline, self).prepare_latents(  # type: ignore[misc]
                image[i : i + 1],
                1,
                num_channels_latents,
                height,
                width,
                num_frames,
                dtype,
                device,
                [generator[i]],
                None,
                None if last_image is None else last_image[i : i + 1],
            )  # fmt: skip
            for i in range(images)
        ]
        # 2. Stacked into one batch; the first-frame mask of Wan 2.2 (expand_timesteps) is the same for all
        latents_out = torch.cat([part[0] for part in parts])
        condition = torch.cat([part[1] for part in parts])
        if self.config.expand_timesteps:  # type: ignore[attr-defined]
            return latents_out, condition, parts[0][2]
        return latents_out, condition


__all__ = ["PerVideoImageWanPipeline"]
