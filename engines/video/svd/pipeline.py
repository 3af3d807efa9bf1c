"""`StableVideoDiffusionPipeline` with per-video motion conditioning, so scenes of one job share a batch.

The stock pipeline takes `fps`, `motion_bucket_id` and `noise_aug_strength` as one scalar for the whole
batch, yet the UNet embeds them per video (one row of "added time ids" each). A story's scenes ask for
different amounts of motion, so with scalars they could never share a pipeline call. This subclass also
accepts a 1-D tensor with one value per video; a scalar still means "the same for all".

For that, only `_get_add_time_ids` changes: the pipeline computes `fps - 1` and
`image + noise_aug_strength * noise` itself, which a tensor does as well as a scalar, provided
`noise_aug_strength` is shaped to broadcast over the image batch: shape (batch, 1, 1, 1).

`decode_latents` also decodes each video on its own. The stock method flattens batch x frames and decodes
`decode_chunk_size` frames at a time across video boundaries, and the temporal decoder treats each chunk as
one clip: with 25 frames in chunks of 8, one video's last frame would be decoded with the next video's first
seven, and every chunk of the videos after it shifted. A test of one video, or of 8 frames in chunks of 8,
never sees it.

And a call puts the VAE back in its own dtype on the way out, failed or not (`vae_dtype_kept`): the stock
`__call__` upcasts a float16 VAE with `force_upcast` to float32 to encode the keyframe, and casts it back only
once the encoding succeeded.

`max_unet_rows` says how many UNet rows one call may hold before an attention call's batch passes what CUDA
kernels accept (`CUDA_ATTENTION_BATCH_LIMIT`); the engine and the step loop split their batches by it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from diffusers import StableVideoDiffusionPipeline

# CUDA launches a kernel on a grid whose y and z sides hold at most 65,535 blocks, and attention kernels put
# the batch on one of them (FlashAttention-2 on y; PyTorch's memory-efficient SDPA and xformers on z); cuDNN's
# attention refuses a larger batch outright. Past it a call fails with "invalid configuration argument",
# which is no out-of-memory error, so no retry would split the batch: it must be split before.
CUDA_ATTENTION_BATCH_LIMIT = 65_535


def attention_batch_per_row(
    unet_config: Any, vae_scale_factor: int, width: int, height: int, frames: int
) -> int:
    """The largest attention batch one UNet row (a video, or either half of a guided one) brings at a shape.

    Each transformer block of the spatio-temporal UNet attends over a frame's positions (batch: rows x
    frames) and over a position's frames (batch: rows x positions). The second is the larger at video sizes:
    at 1024x576 the latent has 128 x 72 = 9,216 positions at the first level, where SVD already attends, so
    8 rows (4 guided scenes) would make 73,728.

    Args:
        unet_config: the UNet's config (`down_block_types`, `up_block_types`).
        vae_scale_factor: pixels per latent position along a side (8 for SVD's VAE).
        width, height, frames: the videos' shape.
    """
    down, up = unet_config["down_block_types"], unet_config["up_block_types"]
    levels = len(down)
    # Down block i and up block levels-1-i work at level i (halved i times), the mid block at the last.
    attending = {i for i, kind in enumerate(down) if "CrossAttn" in kind}
    attending |= {levels - 1 - i for i, kind in enumerate(up) if "CrossAttn" in kind}
    attending.add(levels - 1)
    latent_height, latent_width = height // vae_scale_factor, width // vae_scale_factor
    for _ in range(min(attending)):  # each downsampling convolution (stride 2, padding 1) rounds up
        latent_height, latent_width = -(-latent_height // 2), -(-latent_width // 2)
    return max(latent_height * latent_width, frames)


class PerVideoConditioningSVDPipeline(StableVideoDiffusionPipeline):
    """The stock pipeline, except that `fps`, `motion_bucket_id` and `noise_aug_strength` may be per video,
    each video is decoded apart from the others, and a failed call leaves the VAE in its own dtype."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self.vae_dtype_kept():
            return super().__call__(*args, **kwargs)  # type: ignore[misc]

    @contextmanager
    def vae_dtype_kept(self) -> Iterator[None]:
        """Run the block, then put the VAE back in the dtype it had before, whether the block failed or not.

        An out-of-memory error while the VAE was upcast to float32 would otherwise leave it there for good:
        every later decode would feed it float16 latents and fail with a dtype mismatch, which is no
        out-of-memory error, so no retry would catch it and every scene on the replica would fall back.
        """
        vae: Any = self.vae  # type: ignore[attr-defined]  # set by DiffusionPipeline.register_modules
        dtype = vae.dtype
        try:
            yield
        finally:
            if vae.dtype != dtype:
                vae.to(dtype=dtype)

    def max_unet_rows(self, width: int, height: int, frames: int) -> int:
        """The most UNet rows one call may hold at this shape with every attention batch within
        `CUDA_ATTENTION_BATCH_LIMIT` (at least 1: a single row past it cannot be split here)."""
        pipe: Any = self  # its modules and vae_scale_factor are set at run time (register_modules)
        per_row = attention_batch_per_row(pipe.unet.config, pipe.vae_scale_factor, width, height, frames)
        return max(1, CUDA_ATTENTION_BATCH_LIMIT // per_row)

    def decode_latents(
        self, latents: torch.Tensor, num_frames: int, decode_chunk_size: int = 14
    ) -> torch.Tensor:
        # One video at a time, so no chunk of the temporal decoder ever holds frames of two videos: a video
        # in a batch is decoded in the same chunks as alone.
        decode = super().decode_latents  # type: ignore[misc]  # diffusers ships no type information
        return torch.cat([decode(video, num_frames, decode_chunk_size) for video in latents.split(1)])

    def _get_add_time_ids(
        self,
        fps: int | torch.Tensor,
        motion_bucket_id: int | torch.Tensor,
        noise_aug_strength: float | torch.Tensor,
        dtype: torch.dtype,
        batch_size: int,
        num_videos_per_prompt: int,
        do_classifier_free_guidance: bool,
    ) -> torch.Tensor:
        conditions = (fps, motion_bucket_id, noise_aug_strength)
        unet: Any = self.unet  # type: ignore[attr-defined]  # set by DiffusionPipeline.register_modules
        passed_dim = unet.config.addition_time_embed_dim * len(conditions)
        expected_dim = unet.add_embedding.linear_1.in_features
        if passed_dim != expected_dim:
            raise ValueError(
                f"the UNet expects added time ids of width {expected_dim}, not {passed_dim}: "
                "its config does not match this pipeline"
            )
        # 1. One column per condition, one row per video (a scalar is repeated down its column)
        columns = [
            torch.as_tensor(value, dtype=dtype, device="cpu").reshape(-1).expand(batch_size)
            for value in conditions
        ]
        add_time_ids = torch.stack(columns, dim=1)
        # 2. Repeat each row for the video's extra samples, then for the unconditional half
        add_time_ids = add_time_ids.repeat_interleave(num_videos_per_prompt, dim=0)
        if do_classifier_free_guidance:
            add_time_ids = torch.cat([add_time_ids, add_time_ids])
        return add_time_ids


__all__ = ["CUDA_ATTENTION_BATCH_LIMIT", "PerVideoConditioningSVDPipeline", "attention_batch_per_row"]
