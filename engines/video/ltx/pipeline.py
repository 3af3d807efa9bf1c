"""LTX-Video pipelines whose decode noise is drawn per video, so scenes share a batch with any VAE.

LTX-Video VAEs from 0.9.1 on condition the decoder on a timestep and add a little noise to the latents first.
The stock pipelines draw that noise with one `torch.randn` over the whole batch and the generator argument,
which torch refuses when the generator is a list, one per video, as batching scenes needs. These subclasses
run the stock denoising (to latents) and then decode as the stock pipeline does, except that each video's
decode noise comes from its own generator: a batch equals its videos made alone. With a VAE without timestep
conditioning, or a single generator, they are the stock pipelines.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import LTXImageToVideoPipeline, LTXPipeline
from diffusers.pipelines.ltx.pipeline_output import LTXPipelineOutput


class _PerVideoDecodeNoise:
    """`__call__` for an LTX pipeline class that decodes with per-video noise (see the module docstring)."""

    @torch.no_grad()
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        pipe: Any = self
        generator = kwargs.get("generator")
        output_type = kwargs.get("output_type", "pil")
        if (
            not (isinstance(generator, list) and pipe.vae.config.timestep_conditioning)
            or output_type == "latent"
        ):
            return super().__call__(*args, **kwargs)  # type: ignore[misc]
        # 1. Denoise as the stock pipeline does, stopping at the packed latents
        decode_timestep = kwargs.pop("decode_timestep", 0.0)
        decode_noise_scale = kwargs.pop("decode_noise_scale", None)
        return_dict = kwargs.pop("return_dict", True)
        kwargs.update(output_type="latent", return_dict=False)
        latents = super().__call__(*args, **kwargs)[0]  # type: ignore[misc]
        # 2. Unpack and denormalise them, as the stock decode does
        frames = (kwargs.get("num_frames", 161) - 1) // pipe.vae_temporal_compression_ratio + 1
        height = kwargs.get("height", 512) // pipe.vae_spatial_compression_ratio
        width = kwargs.get("width", 704) // pipe.vae_spatial_compression_ratio
        latents = pipe._unpack_latents(
            latents,
            frames,
            height,
            width,
            pipe.transformer_spatial_patch_size,
            pipe.transformer_temporal_patch_size,
        )
        latents = pipe._denormalize_latents(
            latents, pipe.vae.latents_mean, pipe.vae.latents_std, pipe.vae.config.scaling_factor
        ).to(pipe.text_encoder.dtype)
        # 3. Each video's decode noise from its own generator (the stock code's one randn refuses a list)
        batch = latents.shape[0]
        noise = torch.cat(
            [
                torch.randn(latents[i : i + 1].shape, generator=g, device=latents.device, dtype=latents.dtype)
                for i, g in enumerate(generator)
            ]
        )
        timesteps = decode_timestep if isinstance(decode_timestep, list) else [decode_timestep] * batch
        scales = decode_noise_scale if decode_noise_scale is not None else timesteps
        scales = scales if isinstance(scales, list) else [scales] * batch
        timestep = torch.tensor(timesteps, device=latents.device, dtype=latents.dtype)
        scale = torch.tensor(scales, device=latents.device, dtype=latents.dtype)[:, None, None, None, None]
        latents = (1 - scale) * latents + scale * noise
        # 4. Decode and hand the frames back in the stock output
        video = pipe.vae.decode(latents, timestep, return_dict=False)[0]
        video = pipe.video_processor.postprocess_video(video, output_type=output_type)
        pipe.maybe_free_model_hooks()
        return LTXPipelineOutput(frames=video) if return_dict else (video,)


class PerVideoNoiseLTXImageToVideoPipeline(_PerVideoDecodeNoise, LTXImageToVideoPipeline):
    """`LTXImageToVideoPipeline` with per-video decode noise."""


class PerVideoNoiseLTXPipeline(_PerVideoDecodeNoise, LTXPipeline):
    """`LTXPipeline` (text to video) with per-video decode noise."""


__all__ = ["PerVideoNoiseLTXImageToVideoPipeline", "PerVideoNoiseLTXPipeline"]
