"""Stable Video Diffusion: one keyframe in, a few seconds of frames out.

SVD is image-to-video. It takes no text prompt and no single `guidance_scale`: guidance ramps from
`min_guidance_scale` on the first frame to `max_guidance_scale` on the last, and motion is steered by
`fps`, `motion_bucket_id` and `noise_aug_strength`. Text reaches the video through the keyframe.

The engine is plain Python (no Ray): `SVDGenerator` in `deployments/` wraps it, batches requests with
`@serve.batch` and calls `generate` from a worker thread.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal, Protocol

import numpy as np
import torch
from PIL import Image
from pydantic import Field

from core.errors import GenerationCancelled, InvalidInput, ModelUnavailable, check_seed, is_int
from engines.loading import (
    ModelSourceConfig,
    Placement,
    cpu_threads,
    is_out_of_memory,
    load_pipeline,
    release_memory,
    resolve_placement,
)

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]


class CancelToken(Protocol):
    """Anything with `is_set()`, e.g. a `threading.Event` the job runner sets on cancel."""

    def is_set(self) -> bool: ...


class SVDConfig(ModelSourceConfig):
    """Settings of the SVD engine: which model, where it runs, defaults of each scene and memory options."""

    model: str = Field(
        default="stabilityai/stable-video-diffusion-img2vid-xt",
        description="Hub id of the SVD checkpoint (SVD-XT makes 25 frames, SVD 14).",
    )
    num_inference_steps: int = Field(
        default=25,
        ge=1,
        description="Denoising steps; time grows linearly with them, quality saturates near 25.",
    )
    height: int = Field(
        default=576, ge=16, multiple_of=8, description="Frame height in pixels (multiple of 8)."
    )
    width: int = Field(
        default=1024, ge=16, multiple_of=8, description="Frame width in pixels (multiple of 8)."
    )
    num_frames: int = Field(
        default=25,
        ge=1,
        description="Frames per clip. Memory and time grow linearly; SVD-XT was trained on 25, SVD on 14.",
    )
    fps: int = Field(
        default=7, ge=1, description="Frame rate the model is conditioned on (it sees fps-1, as in training)."
    )
    motion_bucket_id: int = Field(
        default=127, ge=0, le=255, description="Amount of motion, 0-255: higher moves more and drifts more."
    )
    noise_aug_strength: float = Field(
        default=0.02,
        ge=0.0,
        le=1.0,
        description="Noise added to the keyframe: more gives more motion but a looser likeness to the keyframe.",
    )
    min_guidance_scale: float = Field(
        default=1.0, ge=0.0, description="Image guidance on the first frame (1.0 means none)."
    )
    max_guidance_scale: float = Field(
        default=3.0,
        ge=0.0,
        description="Image guidance on the last frame. Above 1.0 each step runs the UNet on a doubled batch "
        "(twice the activation memory); 1.0 disables guidance and halves the work.",
    )
    decode_chunk_size: int | None = Field(
        default=8,
        ge=1,
        description="Frames the VAE decodes at once. Smaller saves decoder memory (about 2 GB per 8 frames "
        "at 1024x576) at the cost of a little flicker between chunks; unset decodes all frames together.",
    )
    cpu_offload: bool = Field(
        default=False,
        description="Model CPU offload: keep each sub-model in host RAM and move it to the GPU only while it "
        "runs. Cuts peak GPU memory roughly in half; costs host-to-device copies (slower). CUDA only.",
    )
    unet_forward_chunking: bool = Field(
        default=False,
        description="Run the UNet feed-forward layers one chunk at a time: lower peak memory, somewhat slower.",
    )
    attention: Literal["sdpa", "xformers"] = Field(
        default="sdpa",
        description="Attention kernels: PyTorch scaled-dot-product attention (default, no extra package) or "
        "xformers (needs the `gpu` extra and CUDA; falls back to SDPA with a warning when unavailable).",
    )
    torch_compile: bool = Field(
        default=False,
        description="torch.compile the UNet: faster steps after a first call that compiles for minutes. "
        "CUDA only; ignored with a warning on CPU.",
    )
    oom_retries: int = Field(
        default=2,
        ge=0,
        le=2,
        description="On CUDA out-of-memory, free memory and retry: 1 = once with the batch split in halves, "
        "2 = then once more one request at a time. 0 fails at once. Retries cost the lost partial work.",
    )


@dataclass
class SceneRequest:
    """One scene to animate. Every `None` means "take the value from `SVDConfig`".

    Args:
        image: the keyframe, already `width` x `height` (see `engines.painter.prepare_reference`); None
            until the animator deployment fills it in from the keyframe it was handed.
        seed: random seed; `None` picks one, which the result records.
        width, height: frame size in pixels, multiples of 8.
        num_frames, num_inference_steps, fps, motion_bucket_id, noise_aug_strength, min_guidance_scale,
        max_guidance_scale, decode_chunk_size: as in `SVDConfig`.
    """

    image: Image.Image | None = None
    seed: int | None = None
    width: int | None = None
    height: int | None = None
    num_frames: int | None = None
    num_inference_steps: int | None = None
    fps: int | None = None
    motion_bucket_id: int | None = None
    noise_aug_strength: float | None = None
    min_guidance_scale: float | None = None
    max_guidance_scale: float | None = None
    decode_chunk_size: int | None = None


@dataclass
class SceneFrames:
    """Frames made by SVD for one request.

    Args:
        frames: uint8 array of shape (num_frames, height, width, 3).
        seed: the seed actually used.
        seconds: wall time of the pipeline call that made these frames (shared by a batch).
        batch_size: how many videos that pipeline call made.
        generator: always "svd"; fallbacks are labelled elsewhere and never with this class.
    """

    frames: np.ndarray
    seed: int
    seconds: float
    batch_size: int = 1
    generator: Literal["svd"] = "svd"


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
# The conditioning the pipeline takes per video (see engines/svd_pipeline.py); every other parameter is one
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


class SVDEngine:
    """Animates keyframes with `StableVideoDiffusionPipeline`; one pipeline call per compatible batch.

    Args:
        config: model source, scene defaults and memory options; default `SVDConfig()`.
    """

    def __init__(self, config: SVDConfig | None = None) -> None:
        self.config = config or SVDConfig()
        self._pipeline: Any = None
        self._placement: Placement | None = None
        self._runtime: RuntimeInfo | None = None
        # The pipeline's scheduler keeps per-call state, so calls from several threads must take turns.
        self._lock = threading.RLock()

    @property
    def loaded(self) -> bool:
        return self._pipeline is not None

    @property
    def runtime(self) -> RuntimeInfo | None:
        """The effective device, dtype and memory options; `None` until `load()`."""
        return self._runtime

    def load(self) -> None:
        """Load the pipeline (once) and apply the memory options.

        Raises:
            ModelUnavailable: weights missing, not cached with downloads off, unreadable, or no usable device.
        """
        from engines.svd_pipeline import PerVideoConditioningSVDPipeline

        with self._lock:
            if self._pipeline is not None:
                return
            placement = resolve_placement(self.config)
            pipeline = load_pipeline(PerVideoConditioningSVDPipeline, self.config, placement.dtype)
            pipeline.set_progress_bar_config(disable=True)
            self._runtime = self._apply_memory_options(pipeline, placement.device)
            self._pipeline, self._placement = pipeline, placement
            logger.info("SVD loaded from %s: %s", self.config.model_path or self.config.model, self._runtime)

    def unload(self) -> None:
        """Drop every reference to the models and return their memory (the CUDA cache is emptied)."""
        with self._lock:
            pipeline, placement = self._pipeline, self._placement
            self._pipeline = self._placement = self._runtime = None
            if pipeline is None:
                return
            # Offload hooks and compiled graphs hold references to the modules; remove them too.
            pipeline.remove_all_hooks()
            if self.config.torch_compile:
                torch._dynamo.reset()
            del pipeline
            release_memory(placement.device if placement else None)

    def generate(
        self,
        requests: Sequence[SceneRequest],
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> list[SceneFrames]:
        """Animate each request's keyframe; blocking, so call it from a worker thread, never an event loop.

        Requests whose size, frames, steps, guidance and decode chunk are equal run as one pipeline call, with
        one seeded generator and their own fps, motion and noise each, so a batched result equals the same
        request run alone. Others run in compatible sub-batches, in order of first appearance.

        Args:
            requests: the scenes to animate; `None` fields take the config's values.
            progress: called as `progress(step, total_steps)` after every denoising step of every pipeline
                call (a batch split after running out of memory reports its steps again).
            cancel: checked after every step; once set, generation stops and `GenerationCancelled` is raised.

        Returns:
            One `SceneFrames` per request, in request order.

        Raises:
            InvalidInput: a request parameter is out of range (the message names it and shows the value).
            ModelUnavailable: the model cannot load, or the GPU ran out of memory even after the retries.
            GenerationCancelled: `cancel` was set.
        """
        # 1. Check inputs
        resolved = [self._resolve(i, request) for i, request in enumerate(requests)]
        if not resolved:
            return []

        # 2. Group requests that can share one pipeline call, keeping the order they arrived in
        groups: dict[tuple[Any, ...], list[_Resolved]] = {}
        for item in resolved:
            groups.setdefault(item.batch_key, []).append(item)

        # 3. Run each group, halving the batch on out-of-memory
        results: dict[int, SceneFrames] = {}
        with self._lock:
            self.load()
            for group in groups.values():
                for item, frames in zip(group, self._run_with_retries(group, progress, cancel), strict=True):
                    results[item.index] = frames

        # 4. Return in request order
        return [results[i] for i in range(len(resolved))]

    # -- internals -------------------------------------------------------------------------------------

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

    def _run_with_retries(
        self, group: list[_Resolved], progress: ProgressCallback | None, cancel: CancelToken | None
    ) -> list[SceneFrames]:
        # The retry ladder: the whole group, then halves, then one at a time. Rungs may repeat for small
        # groups on purpose: after memory is freed, fragmentation alone may no longer cause the OOM.
        ladder = [len(group), math.ceil(len(group) / 2), 1][: self.config.oom_retries + 1]
        out: list[SceneFrames] = []
        rung = 0
        while len(out) < len(group):
            size = ladder[rung]
            chunk = group[len(out) : len(out) + size]
            failure: str | None = None
            try:
                out.extend(self._call_pipeline(chunk, progress, cancel))
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                failure = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            if failure is None:
                continue
            # Outside the except block, so the traceback (which pins the OOM'd tensors) is already gone.
            self._free_after_failure()
            rung += 1
            if rung >= len(ladder):
                raise ModelUnavailable(
                    f"SVD ran out of GPU memory for {len(chunk)} request(s) of "
                    f"{chunk[0].param('width')}x{chunk[0].param('height')}, "
                    f"{chunk[0].param('num_frames')} frames, after {_plural(len(ladder) - 1, 'retry', 'retries')} "
                    f"({failure}); "
                    "lower num_frames, decode_chunk_size or the size, or enable cpu_offload"
                )
            logger.warning("SVD out of memory with a batch of %d; retrying with %d", size, ladder[rung])
        return out

    def _call_pipeline(
        self, chunk: list[_Resolved], progress: ProgressCallback | None, cancel: CancelToken | None
    ) -> list[SceneFrames]:
        first = chunk[0]
        total = first.param("num_inference_steps")
        if cancel is not None and cancel.is_set():
            raise GenerationCancelled("cancelled before SVD started")

        def on_step_end(
            pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]
        ) -> dict[str, Any]:
            if progress is not None:
                progress(step + 1, total)
            if cancel is not None and cancel.is_set():
                raise _CancelSignal(step + 1)
            return callback_kwargs

        # One generator per request, on the execution device, so each request draws the same noise (both the
        # keyframe's noise augmentation and the initial latents) as it would alone.
        device = self._pipeline._execution_device
        generators = [torch.Generator(device=device).manual_seed(item.seed) for item in chunk]
        stopped_at: int | None = None
        started = time.perf_counter()
        try:
            with cpu_threads(self.config.cpu_threads, self._placement.device if self._placement else None):
                output = self._pipeline(
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
                )
        except _CancelSignal as signal:
            stopped_at = signal.step
        if stopped_at is not None:
            # Raised outside the except block so no traceback keeps the pipeline's tensors alive.
            self._free_after_failure()
            raise GenerationCancelled(f"cancelled after denoising step {stopped_at} of {total}")
        seconds = time.perf_counter() - started
        raw = np.asarray(output.frames)
        if not np.isfinite(raw).all():
            # float16 overflow shows up as NaN frames, which would otherwise be cast to garbage pixels.
            raise ModelUnavailable(
                f"SVD produced non-finite values in {self._runtime.dtype if self._runtime else '?'}; "
                "use dtype 'bfloat16' or 'float32'"
            )
        videos = np.clip(raw * 255.0, 0, 255).round().astype(np.uint8)
        return [
            SceneFrames(frames=video, seed=item.seed, seconds=seconds, batch_size=len(chunk))
            for item, video in zip(chunk, videos, strict=True)
        ]

    def _free_after_failure(self) -> None:
        # With CPU offload an interrupted call leaves its last model on the GPU; park it again.
        if self._runtime is not None and self._runtime.cpu_offload:
            self._pipeline.maybe_free_model_hooks()
        release_memory(self._placement.device if self._placement else None)


class _CancelSignal(Exception):
    """Raised inside the step callback to leave the pipeline's loop at a step boundary."""

    def __init__(self, step: int) -> None:
        super().__init__(step)
        self.step = step


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


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


__all__ = ["CancelToken", "RuntimeInfo", "SVDConfig", "SVDEngine", "SceneFrames", "SceneRequest"]
