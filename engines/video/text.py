"""Text-conditioned video transformers beside SVD: LTX-Video and Wan 2.2, image + text to video.

Both families take the scene's visual prompt and a negative prompt as well as the keyframe, denoise with a
flow-matching transformer, and agree on everything this engine does; they differ in their pipeline class
and their shape rules (`FAMILY_RULES`): LTX-Video's VAE compresses 8 frames and 32 pixels into one latent,
so it makes 8k+1 frames of sizes in multiples of 32; Wan 2.1/2.2's compresses 4 frames and its transformer
patches 16 pixels, so 4k+1 frames in multiples of 16.

A request may ask for any number of frames: the engine runs the family's next valid count and returns the
first ones asked for, so the recipe's scene lengths (seconds x fps) need not know the family.

The engine is plain Python (no Ray); `VideoAnimator` in `deployments/` wraps it as it wraps `SVDEngine`.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from core.errors import InvalidInput, check_seed, is_int
from engines.loading import Placement
from engines.video.base import (
    CancelToken,
    ProgressCallback,
    Resolved,
    SceneFrames,
    SceneRequest,
    VideoEngine,
    to_uint8,
)
from engines.video.config import TransformerVideoConfig

logger = logging.getLogger(__name__)

# The pipeline's denoisers. Wan 2.2 A14B has two experts, the second (`transformer_2`, as large as the first)
# for the low-noise steps; every other checkpoint leaves it None. Each transformer option applies to both.
_EXPERTS = ("transformer", "transformer_2")


# Per-request parameters with a config default, in one order; prompts are per video and never in the key.
_PARAMS = ("width", "height", "num_frames", "num_inference_steps", "fps", "guidance_scale")
# Per-request options without a config default, kept where the family takes them (`FamilyRules.request_fields`).
_OPTIONS = ("guidance_scale_2", "boundary_ratio", "flow_shift")


def _number_within(value: Any, low: float, high: float) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high


@dataclass(frozen=True)
class _Resolved:
    index: int
    image: Image.Image | None  # None: from text alone
    seed: int
    prompt: str
    negative_prompt: str
    params: tuple[Any, ...]
    run_frames: int  # the family's valid count the pipeline makes; `num_frames` of them are kept
    # Options only some checkpoints use (`SceneRequest`), None where not asked for or the family takes none.
    guidance_scale_2: float | None = None
    boundary_ratio: float | None = None
    flow_shift: float | None = None

    def param(self, name: str) -> Any:
        return self.params[_PARAMS.index(name)]

    @property
    def batch_key(self) -> tuple[Any, ...]:
        shape = tuple(v for n, v in zip(_PARAMS, self.params, strict=True) if n != "num_frames")
        return (*shape, self.run_frames, self.image is None, *self.options)

    @property
    def options(self) -> tuple[float | None, float | None, float | None]:
        return (self.guidance_scale_2, self.boundary_ratio, self.flow_shift)


@dataclass(frozen=True)
class TransformerRuntime:
    """What the loaded engine actually runs with, after `auto` and unavailable options were resolved."""

    device: str
    dtype: str
    cpu_offload: bool
    group_offload: bool
    vae_tiling: bool
    fp8_weights: bool
    step_cache: str
    torch_compile: bool


class TransformerVideoEngine(VideoEngine):
    """What the LTX-Video and Wan engines share: requests with text, the speed and memory options, one
    pipeline call per compatible batch. Each family's engine (`engines.video.ltx.engine.LTXEngine`,
    `engines.video.wan.engine.WanEngine`) says which pipelines it runs and how its checkpoints batch.

    Args:
        config: an `LTXConfig` or `WanConfig` (model source, scene defaults, speed and memory options).
    """

    def __init__(self, config: TransformerVideoConfig) -> None:
        super().__init__(config)
        self.config: TransformerVideoConfig
        self.rules = config.rules
        self.label = self.rules.label
        self.oom_hint = "lower num_frames or the size, or enable cpu_offload, group_offload or vae_tiling"
        self._batches_keyframes = True
        self._size_multiple = self.rules.size_multiple  # the loaded checkpoint's, once loaded
        self._text_pipeline: Any = None  # text-to-video on the same modules, made on first use

    def unload(self) -> None:
        """Drop the models, the text-to-video pipeline over them included, and return their memory."""
        with self._lock:
            self._text_pipeline = None
            super().unload()

    # -- what each family provides --------------------------------------------------------------------

    @abc.abstractmethod
    def _text_pipeline_over(self, pipeline: Any) -> Any:
        """The family's text-to-video pipeline built over the loaded ``pipeline``'s modules."""

    @abc.abstractmethod
    def _can_batch_keyframes(self, pipeline: Any) -> bool:
        """Whether one call of the loaded ``pipeline`` can animate several keyframes, each with its own
        generator; where it cannot, each request runs in a call of its own (still correct)."""

    @abc.abstractmethod
    def _latent_pixels(self, pipeline: Any) -> int:
        """Pixels per latent token of the loaded checkpoint: VAE downscale times transformer patch."""

    def _call_kwargs(self, first: Resolved) -> dict[str, Any]:
        """Pipeline arguments only this family takes, for a call whose requests are like ``first``."""
        return {}

    @contextlib.contextmanager
    def _options_set(self, pipeline: Any, first: Any) -> Iterator[tuple[dict[str, Any], tuple[str, ...]]]:
        """Around one call of ``pipeline`` whose requests are like ``first``: the options of `_OPTIONS` that
        the family takes, as pipeline arguments (and whatever the pipeline must hold for the call), with the
        names of those asked for that this checkpoint has no use for."""
        yield {}, ()

    # -- internals -------------------------------------------------------------------------------------

    def _prepare(self, pipeline: Any, placement: Placement) -> TransformerRuntime:
        self._warn_if_made_for_another_pipeline(pipeline)
        runtime = self._runtime_on(placement)
        self._apply_options(pipeline, placement, runtime)
        self._batches_keyframes = self._can_batch_keyframes(pipeline)
        self._size_multiple = self._checkpoint_size_multiple(pipeline)
        return runtime

    def _checkpoint_size_multiple(self, pipeline: Any) -> int:
        try:
            return self._latent_pixels(pipeline)
        except (AttributeError, TypeError, IndexError):
            return self.rules.size_multiple  # a pipeline without the attributes: the family's rule

    def _runtime_on(self, placement: Placement) -> TransformerRuntime:
        """The options that take effect at ``placement``: the CUDA-only ones are dropped on the CPU."""
        cfg, on_cuda = self.config, placement.device.type == "cuda"
        for name in ("cpu_offload", "group_offload", "torch_compile"):
            if getattr(cfg, name) and not on_cuda:
                logger.warning("%s=True is only used on CUDA; ignored", name)
        return TransformerRuntime(
            device=str(placement.device),
            dtype=str(placement.dtype).removeprefix("torch."),
            cpu_offload=cfg.cpu_offload and on_cuda,
            group_offload=cfg.group_offload and on_cuda and not cfg.cpu_offload,
            vae_tiling=cfg.vae_tiling,
            fp8_weights=cfg.fp8_weights,
            step_cache=cfg.step_cache,
            torch_compile=cfg.torch_compile and on_cuda,
        )

    def _apply_options(self, pipeline: Any, placement: Placement, runtime: TransformerRuntime) -> None:
        """Apply ``runtime``'s options to ``pipeline`` and place it; each transformer option reaches every
        expert (`_EXPERTS`)."""
        device = placement.device
        experts = [name for name in _EXPERTS if getattr(pipeline, name, None) is not None]
        for name in experts:
            expert = getattr(pipeline, name)
            if runtime.fp8_weights:
                expert.enable_layerwise_casting(
                    storage_dtype=torch.float8_e4m3fn, compute_dtype=placement.dtype
                )
            if runtime.step_cache != "off":
                expert.enable_cache(_cache_config(self.config))
        if runtime.vae_tiling:
            pipeline.vae.enable_tiling()
        if runtime.cpu_offload:
            pipeline.enable_model_cpu_offload(device=device)  # its sequence holds both experts
        elif runtime.group_offload:
            for name in experts:
                getattr(pipeline, name).enable_group_offload(
                    onload_device=device,
                    offload_type="block_level",
                    num_blocks_per_group=1,
                    use_stream=device.type == "cuda",  # a copy stream beside the compute, where one exists
                )
            # Everything else goes to the device whole; an expert moved there would undo its offload.
            for name, module in pipeline.components.items():
                if name not in experts and isinstance(module, torch.nn.Module):
                    module.to(device)
        else:
            pipeline.to(device)
        if runtime.torch_compile:
            for name in experts:
                setattr(
                    pipeline, name, torch.compile(getattr(pipeline, name), mode="max-autotune-no-cudagraphs")
                )

    def _free_after_failure(self) -> None:
        # A call that stopped early (a cancel, an out-of-memory) never reached the pipeline's end, where the
        # step caches' state is reset; TaylorSeer would otherwise extrapolate the next call from this one's.
        pipeline = self._pipeline
        for name in _EXPERTS:
            expert = getattr(pipeline, name, None)
            if expert is not None and getattr(expert, "is_cache_enabled", False):
                expert._reset_stateful_cache()
        super()._free_after_failure()

    def _warn_if_made_for_another_pipeline(self, pipeline: Any) -> None:
        # A checkpoint names the pipeline it was made for; diffusers pairs LTX-Video 0.9.5 and later with
        # LTXConditionPipeline (conditioning frames), whose frames LTXImageToVideoPipeline does not reproduce.
        declared = _declared_pipeline(pipeline)
        if declared is not None and declared not in self.rules.pipelines:
            logger.warning(
                "%s: the checkpoint %s was made for %s, which this engine does not run; it runs %s's "
                "checkpoints, so expect lower quality than the checkpoint's own pipeline gives",
                self.label,
                self.config.model_path or self.config.model,
                declared,
                " and ".join(self.rules.pipelines),
            )

    def _resolve(self, index: int, request: SceneRequest) -> _Resolved:
        where = f" (request {index})"
        if not isinstance(request, SceneRequest):
            raise InvalidInput("requests", request, f"each item must be a SceneRequest{where}")
        values = {name: getattr(request, name) for name in _PARAMS}
        for name in _PARAMS:
            if values[name] is None:
                values[name] = getattr(self.config, name)
        image = request.image
        if image is not None and not isinstance(image, Image.Image):
            raise InvalidInput("image", type(image).__name__, f"must be a PIL image or None{where}")
        if request.seed is not None:
            check_seed(request.seed, where)
        for name in ("width", "height"):
            if not is_int(values[name]):
                raise InvalidInput(name, values[name], f"must be an integer{where}")
            self.rules.check_size(name, values[name], where)
        for name in ("num_frames", "num_inference_steps", "fps"):
            if not is_int(values[name]) or values[name] < 1:
                raise InvalidInput(name, values[name], f"must be a positive integer{where}")
        rules = self.rules
        self._check_guidance("guidance_scale", values["guidance_scale"], where)
        options = {name: getattr(request, name) for name in _OPTIONS if name in rules.request_fields}
        if options.get("guidance_scale_2") is not None:
            self._check_guidance("guidance_scale_2", options["guidance_scale_2"], where)
        if (ratio := options.get("boundary_ratio")) is not None and not _number_within(ratio, 0.0, 1.0):
            raise InvalidInput("boundary_ratio", ratio, f"must be from 0 to 1{where}")
        if (shift := options.get("flow_shift")) is not None and not _number_within(shift, 1e-6, 100.0):
            raise InvalidInput("flow_shift", shift, f"must be a number above 0 and at most 100{where}")
        if image is not None and (image.width, image.height) != (values["width"], values["height"]):
            raise InvalidInput(
                "image",
                f"{image.width}x{image.height}",
                f"must be width x height = {values['width']}x{values['height']}{where}; "
                "resize it with engines.painter.prepare_reference",
            )
        prompt = request.prompt if request.prompt is not None else ""
        negative = (
            request.negative_prompt if request.negative_prompt is not None else self.config.negative_prompt
        )
        return _Resolved(
            index=index,
            image=image.convert("RGB") if image is not None else None,
            seed=request.seed if request.seed is not None else secrets.randbelow(2**31),
            prompt=prompt,
            negative_prompt=negative,
            params=tuple(values[name] for name in _PARAMS),
            run_frames=rules.valid_frames(values["num_frames"]),
            **options,
        )

    def _check_guidance(self, name: str, value: Any, where: str) -> None:
        rules = self.rules
        if not _number_within(value, rules.min_guidance, rules.max_guidance):
            raise InvalidInput(
                name,
                value,
                f"must be from {rules.min_guidance:g} to {rules.max_guidance:g} for {rules.label}{where}",
            )

    def resolve(self, index: int, request: SceneRequest) -> Any:
        item = self._resolve(index, request)
        if self.loaded:
            self._check_checkpoint_size(item)
        return item

    def _check_checkpoint_size(self, item: _Resolved) -> None:
        for name in ("width", "height"):
            # Wan 2.2 TI2V-5B's VAE is 16x (32-pixel multiples) where the family's is 8x: the pipeline would
            # quietly change the size, and the frames would not fit the scene.
            if item.param(name) % self._size_multiple:
                raise InvalidInput(
                    name,
                    item.param(name),
                    f"this {self.label} checkpoint needs a multiple of {self._size_multiple}",
                )

    def _text_to_video(self) -> Any:
        """The family's text-to-video pipeline over the loaded modules (no second copy of any weights)."""
        if self._text_pipeline is None:
            text = self._text_pipeline_over(self._pipeline)
            text.set_progress_bar_config(disable=True)
            self._text_pipeline = text
        return self._text_pipeline

    def _batch_key(self, item: _Resolved) -> tuple[Any, ...]:
        # A pipeline that cannot batch different keyframes runs one request per call.
        return item.batch_key if self._batches_keyframes else (*item.batch_key, id(item))

    def _call_pipeline(
        self, chunk: list[_Resolved], progress: ProgressCallback | None, cancel: CancelToken | None
    ) -> list[SceneFrames]:
        first = chunk[0]
        total = first.param("num_inference_steps")
        self._check_checkpoint_size(first)
        # One generator per request so each draws the noise it would alone; a pipeline that cannot take a
        # list (see `_batches_keyframes`) runs one request per call with a plain generator.
        device = self._pipeline._execution_device
        generators = [torch.Generator(device=device).manual_seed(item.seed) for item in chunk]
        kwargs = self._call_kwargs(first)
        pipeline = self._pipeline
        if first.image is None:
            pipeline = self._text_to_video()
        else:
            kwargs["image"] = [item.image for item in chunk]
        started = time.perf_counter()
        with self._options_set(pipeline, first) as (options, ignored):
            output = self._denoise(
                lambda on_step_end: pipeline(
                    prompt=[item.prompt for item in chunk],
                    negative_prompt=[item.negative_prompt for item in chunk],
                    height=first.param("height"),
                    width=first.param("width"),
                    num_frames=first.run_frames,
                    num_inference_steps=total,
                    guidance_scale=first.param("guidance_scale"),
                    num_videos_per_prompt=1,
                    generator=generators if len(chunk) > 1 or self._batches_keyframes else generators[0],
                    max_sequence_length=self.config.max_sequence_length,
                    output_type="np",
                    callback_on_step_end=on_step_end,
                    **kwargs,
                    **options,
                ),
                total,
                progress,
                cancel,
            )
        seconds = time.perf_counter() - started
        videos = to_uint8(output.frames, self.label, self._runtime.dtype if self._runtime else "?")
        return [
            SceneFrames(
                frames=video[: item.param("num_frames")],
                seed=item.seed,
                seconds=seconds,
                batch_size=len(chunk),
                generator=self.config.family,
                ignored=ignored,
            )
            for item, video in zip(chunk, videos, strict=True)
        ]


def _declared_pipeline(pipeline: Any) -> str | None:
    """The pipeline class the loaded checkpoint's model_index.json names (None when it cannot be read)."""
    try:
        index = type(pipeline).load_config(pipeline.name_or_path, local_files_only=True)
    except Exception:  # noqa: BLE001 - a missing or odd index only costs the warning
        return None
    name = index.get("_class_name")
    return name if isinstance(name, str) else None


def _cache_config(config: TransformerVideoConfig) -> Any:
    if config.step_cache == "first_block":
        from diffusers import FirstBlockCacheConfig

        return FirstBlockCacheConfig(threshold=config.step_cache_threshold)
    from diffusers import TaylorSeerCacheConfig

    # diffusers' default patterns end at "attn" and are fullmatched, so they miss LTX's and Wan's attention
    # modules (`blocks.0.attn1`, `transformer_blocks.0.attn2`) and hook nothing: name them.
    return TaylorSeerCacheConfig(cache_identifiers=[r"(transformer_)?blocks\.\d+\.attn\d"])


__all__ = [
    "TransformerRuntime",
    "TransformerVideoEngine",
]
