"""Stable Video Diffusion: one keyframe in, a few seconds of frames out.

SVD is image-to-video. It takes no text prompt and no single `guidance_scale`: guidance ramps from
`min_guidance_scale` on the first frame to `max_guidance_scale` on the last, and motion is steered by
`fps`, `motion_bucket_id` and `noise_aug_strength`. Text reaches the video through the keyframe.

The engine is plain Python (no Ray): `VideoAnimator` in `deployments/` wraps it, batches requests with
`@serve.batch` and calls `generate` from a worker thread.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
from PIL import Image

from core.errors import InvalidInput, check_seed, is_int
from engines.loading import Placement
from engines.video.base import (
    CancelToken,
    ProgressCallback,
    SceneFrames,
    SceneRequest,
    VideoEngine,
    to_uint8,
)
from engines.video.config import SVDConfig

logger = logging.getLogger(__name__)


# Every per-request parameter that has a config default, in one order.
_PARAMS = (
    "width",
    "height",
    "num_frames",
    "num_inference_steps",
    "fps",
    "motion_bucket_id",
    "noise_aug_strength",
    "min_guidance_scale",
    "max_guidance_scale",
    "decode_chunk_size",
)
# The conditioning the pipeline takes per video (see engines/video/svd/pipeline.py); every other parameter is one
# scalar for the whole call, so requests share a call only where those are equal.
_PER_VIDEO = ("fps", "motion_bucket_id", "noise_aug_strength")


@dataclass(frozen=True)
class _Resolved:
    """A request with every default filled in and checked."""

    index: int
    image: Image.Image
    seed: int
    params: tuple[Any, ...]

    def param(self, name: str) -> Any:
        return self.params[_PARAMS.index(name)]

    @property
    def batch_key(self) -> tuple[Any, ...]:
        """Equal for requests that can share one pipeline call."""
        return tuple(
            value for name, value in zip(_PARAMS, self.params, strict=True) if name not in _PER_VIDEO
        )


@dataclass(frozen=True)
class RuntimeInfo:
    """What the loaded engine actually runs with, after `auto` and unavailable options were resolved."""

    device: str
    dtype: str
    attention: str
    cpu_offload: bool
    unet_forward_chunking: bool
    torch_compile: bool


class SVDEngine(VideoEngine):
    """Animates keyframes with `StableVideoDiffusionPipeline`; one pipeline call per compatible batch.

    Args:
        config: model source, scene defaults and memory options; default `SVDConfig()`.
    """

    label = "SVD"
    oom_hint = "lower num_frames, decode_chunk_size or the size, or enable cpu_offload"

    def __init__(self, config: SVDConfig | None = None) -> None:
        super().__init__(config or SVDConfig())
        self.config: SVDConfig
        self._vae_dtype: torch.dtype | None = None  # as loaded; a call may upcast it for a while

    def stepper(self) -> Any:
        """The pipeline's loop cut into steps (`engines.video.svd.steps.SVDStepper`), for `scheduling: step`."""
        from engines.video.svd.steps import SVDStepper

        self.load()
        return SVDStepper(self._pipeline, self._runtime.dtype if self._runtime else "?")

    # -- internals -------------------------------------------------------------------------------------

    def _pipeline_class(self) -> Any:
        from engines.video.svd.pipeline import PerVideoConditioningSVDPipeline

        return PerVideoConditioningSVDPipeline

    def _prepare(self, pipeline: Any, placement: Placement) -> RuntimeInfo:
        runtime = self._apply_memory_options(pipeline, placement.device)
        self._vae_dtype = pipeline.vae.dtype
        return runtime

    def _free_after_failure(self) -> None:
        # The pipeline restores its VAE's dtype after every call (`vae_dtype_kept`); this is the backstop,
        # since a VAE left in float32 would fail every later decode with a dtype mismatch, not an OOM.
        pipeline = self._pipeline
        if pipeline is not None and self._vae_dtype is not None and pipeline.vae.dtype != self._vae_dtype:
            logger.warning(
                "SVD's VAE was left in %s after a failure; back to %s", pipeline.vae.dtype, self._vae_dtype
            )
            pipeline.vae.to(dtype=self._vae_dtype)
        super()._free_after_failure()

    def _max_call_batch(self, item: _Resolved) -> int:
        # Requests share a call only at one guidance, so each brings the same rows: two with guidance (the
        # unconditional and the conditional half), one without. See `CUDA_ATTENTION_BATCH_LIMIT`.
        rows = 2 if item.param("max_guidance_scale") > 1 else 1
        size = (item.param("width"), item.param("height"), item.param("num_frames"))
        return max(1, self._pipeline.max_unet_rows(*size) // rows)

    def _apply_memory_options(self, pipeline: Any, device: torch.device) -> RuntimeInfo:
        cfg, on_cuda = self.config, device.type == "cuda"
        attention = cfg.attention
        if attention == "xformers":
            from diffusers.utils import is_xformers_available

            if on_cuda and is_xformers_available():
                pipeline.enable_xformers_memory_efficient_attention()
            else:
                logger.warning("attention='xformers' needs CUDA and the xformers package; using SDPA instead")
                attention = "sdpa"
        if cfg.unet_forward_chunking:
            pipeline.unet.enable_forward_chunking()
        offload = cfg.cpu_offload and on_cuda
        if cfg.cpu_offload and not on_cuda:
            logger.warning("cpu_offload=True has no effect on CPU; ignored")
        if offload:
            pipeline.enable_model_cpu_offload(device=device)
        else:
            pipeline.to(device)
        compiled = cfg.torch_compile and on_cuda
        if cfg.torch_compile and not on_cuda:
            logger.warning("torch_compile=True is only used on CUDA; ignored")
        if compiled:
            pipeline.unet = torch.compile(pipeline.unet, mode="reduce-overhead", fullgraph=True)
        return RuntimeInfo(
            device=str(device),
            dtype=str(pipeline.unet.dtype).removeprefix("torch."),
            attention=attention,
            cpu_offload=offload,
            unet_forward_chunking=cfg.unet_forward_chunking,
            torch_compile=compiled,
        )

    def _resolve(self, index: int, request: SceneRequest) -> _Resolved:
        where = f" (request {index})"
        if not isinstance(request, SceneRequest):
            raise InvalidInput("requests", request, f"each item must be a SceneRequest{where}")
        values = {f.name: getattr(request, f.name) for f in fields(SceneRequest)}
        for name in _PARAMS:
            if values[name] is None:
                values[name] = getattr(self.config, name)
        if values["decode_chunk_size"] is None:  # unset in the config too: decode every frame at once
            values["decode_chunk_size"] = values["num_frames"]
        _check_request(values, where)
        image = values["image"]
        if (image.width, image.height) != (values["width"], values["height"]):
            raise InvalidInput(
                "image",
                f"{image.width}x{image.height}",
                f"must be width x height = {values['width']}x{values['height']}{where}; "
                "resize it with engines.painter.prepare_reference",
            )
        seed = values["seed"] if values["seed"] is not None else secrets.randbelow(2**31)
        return _Resolved(
            index=index,
            image=image.convert("RGB"),
            seed=seed,
            params=tuple(values[name] for name in _PARAMS),
        )

    def _call_pipeline(
        self, chunk: list[_Resolved], progress: ProgressCallback | None, cancel: CancelToken | None
    ) -> list[SceneFrames]:
        first = chunk[0]
        total = first.param("num_inference_steps")
        # One generator per request, on the execution device, so each request draws the same noise (both the
        # keyframe's noise augmentation and the initial latents) as it would alone.
        device = self._pipeline._execution_device
        generators = [torch.Generator(device=device).manual_seed(item.seed) for item in chunk]
        started = time.perf_counter()
        output = self._denoise(
            lambda on_step_end: self._pipeline(
                image=[item.image for item in chunk],
                height=first.param("height"),
                width=first.param("width"),
                num_frames=first.param("num_frames"),
                num_inference_steps=total,
                min_guidance_scale=first.param("min_guidance_scale"),
                max_guidance_scale=first.param("max_guidance_scale"),
                fps=_per_video([item.param("fps") for item in chunk], device),
                motion_bucket_id=_per_video([item.param("motion_bucket_id") for item in chunk], device),
                noise_aug_strength=_per_video(
                    [item.param("noise_aug_strength") for item in chunk], device, image_dims=True
                ),
                decode_chunk_size=first.param("decode_chunk_size"),
                # More than one video per image orders embeddings and latents differently; batching is done
                # with a list of images instead.
                num_videos_per_prompt=1,
                generator=generators,
                output_type="np",
                callback_on_step_end=on_step_end,
            ),
            total,
            progress,
            cancel,
        )
        seconds = time.perf_counter() - started
        videos = to_uint8(output.frames, "SVD", self._runtime.dtype if self._runtime else "?")
        return [
            SceneFrames(frames=video, seed=item.seed, seconds=seconds, batch_size=len(chunk), generator="svd")
            for item, video in zip(chunk, videos, strict=True)
        ]


def _check_request(values: dict[str, Any], where: str) -> None:
    image = values["image"]
    if not isinstance(image, Image.Image):
        raise InvalidInput("image", type(image).__name__, f"must be a PIL image{where}")
    if values["seed"] is not None:
        check_seed(values["seed"], where)
    for name in ("width", "height"):
        value = values[name]
        if not is_int(value) or value < 16 or value % 8:
            raise InvalidInput(name, value, f"must be a multiple of 8 of at least 16{where}")
    for name in ("num_frames", "num_inference_steps", "fps", "decode_chunk_size"):
        value = values[name]
        if not is_int(value) or value < 1:
            raise InvalidInput(name, value, f"must be a positive integer{where}")
    motion = values["motion_bucket_id"]
    if not is_int(motion) or not 0 <= motion <= 255:
        raise InvalidInput("motion_bucket_id", motion, f"must be an integer from 0 to 255{where}")
    noise = values["noise_aug_strength"]
    if not _is_number(noise) or not 0.0 <= noise <= 1.0:
        raise InvalidInput("noise_aug_strength", noise, f"must be a number from 0 to 1{where}")
    low, high = values["min_guidance_scale"], values["max_guidance_scale"]
    for name, value in (("min_guidance_scale", low), ("max_guidance_scale", high)):
        if not _is_number(value) or value < 0:
            raise InvalidInput(name, value, f"must be a number of at least 0{where}")
    if low > high:
        raise InvalidInput("min_guidance_scale", low, f"must not exceed max_guidance_scale={high}{where}")


def _per_video(values: Sequence[float], device: torch.device, image_dims: bool = False) -> torch.Tensor:
    """One conditioning value per video, for `PerVideoConditioningSVDPipeline`; ``image_dims`` shapes it
    (batch, 1, 1, 1) to scale a batch of images, as `noise_aug_strength` does."""
    tensor = torch.tensor(list(values), dtype=torch.float32, device=device)
    return tensor.reshape(-1, 1, 1, 1) if image_dims else tensor


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


__all__ = [
    "CancelToken",
    "ProgressCallback",
    "RuntimeInfo",
    "SVDEngine",
    "SceneFrames",
    "SceneRequest",
]
