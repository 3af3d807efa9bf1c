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
import logging
import math
import secrets
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from PIL import Image
from pydantic import Field, model_validator

from core.errors import InvalidInput, check_seed, is_int
from engines.loading import ModelSourceConfig, Placement
from engines.video.base import (
    CancelToken,
    ProgressCallback,
    Resolved,
    SceneFrames,
    SceneRequest,
    SchedulingConfig,
    VideoEngine,
    to_uint8,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FamilyRules:
    """What one family's pipeline accepts: frames of `frame_step`k+1, sides in multiples of `size_multiple`,
    guidance from `min_guidance` to `max_guidance`, whether it takes text, and which checkpoints it runs."""

    family: str
    label: str
    frame_step: int
    size_multiple: int
    min_guidance: float
    max_guidance: float
    takes_text: bool
    pipelines: tuple[str, ...]  # the pipelines (model_index.json `_class_name`) whose checkpoints it runs

    def valid_frames(self, frames: int) -> int:
        """The smallest frame count of this family's shape (step k + 1) that holds ``frames``."""
        return math.ceil(max(frames - 1, 0) / self.frame_step) * self.frame_step + 1

    def check_frames(self, name: str, frames: int, where: str = "") -> None:
        if (frames - 1) % self.frame_step:
            below = (frames - 1) // self.frame_step * self.frame_step + 1
            raise InvalidInput(
                name,
                frames,
                f"{self.label} makes {self.frame_step}k+1 frames; use {below} or {below + self.frame_step}{where}",
            )

    def check_size(self, name: str, value: int, where: str = "") -> None:
        if value < self.size_multiple or value % self.size_multiple:
            raise InvalidInput(name, value, f"{self.label} needs a multiple of {self.size_multiple}{where}")


FAMILY_RULES: dict[str, FamilyRules] = {
    # SVD's UNet takes any length (it was trained on 14 or 25) at multiples of 8; guidance is its min/max ramp.
    "svd": FamilyRules(
        "svd", "SVD", 1, 8, 0.0, 20.0, takes_text=False, pipelines=("StableVideoDiffusionPipeline",)
    ),
    # pipeline_ltx_image2video: height and width divisible by 32; latent frames (n - 1) // 8 + 1.
    # LTX-Video 0.9.5 and later name LTXConditionPipeline, which this engine does not run.
    "ltx": FamilyRules(
        "ltx",
        "LTX-Video",
        8,
        32,
        1.0,
        20.0,
        takes_text=True,
        pipelines=("LTXPipeline", "LTXImageToVideoPipeline"),
    ),
    # pipeline_wan_i2v: height and width divisible by 16; num_frames - 1 divisible by 4 (else rounded).
    "wan": FamilyRules(
        "wan", "Wan", 4, 16, 1.0, 20.0, takes_text=True, pipelines=("WanPipeline", "WanImageToVideoPipeline")
    ),
}

StepCache = Literal["off", "first_block", "taylorseer"]
# The pipeline's denoisers. Wan 2.2 A14B has two experts, the second (`transformer_2`, as large as the first)
# for the low-noise steps; every other checkpoint leaves it None. Each transformer option applies to both.
_EXPERTS = ("transformer", "transformer_2")


class TransformerVideoConfig(ModelSourceConfig, SchedulingConfig):
    """Settings shared by LTX-Video and Wan: scene defaults, text, and diffusers' speed and memory options."""

    family: Literal["ltx", "wan"]
    # T5 (LTX-Video) and UMT5 (Wan) overflow in float16: NaN embeddings, and every scene a title card.
    cuda_auto_dtype: ClassVar[torch.dtype] = torch.bfloat16

    dtype: Literal["auto", "float16", "bfloat16", "float32"] = Field(
        default="auto",
        description="Weights and activations dtype. `auto` is bfloat16 on CUDA, as both families were "
        "trained (their T5/UMT5 text encoders overflow in float16: NaN, and the scene would become a title "
        "card), float32 on a GPU without bfloat16 and on the CPU. Wan's VAE stays in float32 whatever "
        "this says, as diffusers' Wan examples load it.",
    )
    num_inference_steps: int = Field(default=40, ge=1, description="Denoising steps; time grows linearly.")
    height: int = Field(default=480, ge=16, description="Frame height in pixels (the family's multiple).")
    width: int = Field(default=704, ge=16, description="Frame width in pixels (the family's multiple).")
    num_frames: int = Field(default=121, ge=1, description="Frames per clip: 8k+1 for LTX, 4k+1 for Wan.")
    fps: int = Field(default=24, ge=1, description="Frame rate clips play at (LTX also conditions on it).")
    guidance_scale: float = Field(
        default=3.0,
        description="Text guidance. Above 1.0 each step runs the transformer twice (with and without the "
        "prompt): twice the compute; 1.0 turns guidance off, as distilled checkpoints expect.",
    )
    negative_prompt: str = Field(
        default="worst quality, inconsistent motion, blurry, jittery, distorted",
        description="What every scene should not look like (used when guidance_scale > 1).",
    )
    keyframes: Literal["painted", "none"] = Field(
        default="painted",
        description="`painted`: each scene starts from a painted keyframe (or the caller's reference, or with "
        "`continuity` the previous scene's last frame). `none`: no painter call; a scene without a reference "
        "or a previous frame is made from its text alone (the text-to-video pipeline on the same weights), "
        "which saves the keyframe's time and GPU share but leaves composition to the video model.",
    )
    max_sequence_length: int = Field(
        default=128,
        ge=1,
        description="Prompt tokens the text encoder reads (longer prompts are cut); LTX-Video's pipelines "
        "read 128.",
    )
    oom_retries: int = Field(
        default=2,
        ge=0,
        le=2,
        description="On CUDA out-of-memory, free memory and retry: 1 = once with the batch split in halves, "
        "2 = then once more one request at a time. 0 fails at once.",
    )
    cpu_offload: bool = Field(
        default=False,
        description="Model CPU offload: each sub-model (text encoder, transformer, VAE) moves to the GPU only "
        "while it runs. Peak memory is the largest sub-model's; costs copies every call. CUDA only.",
    )
    group_offload: bool = Field(
        default=False,
        description="Group offload of the transformer (diffusers `enable_group_offload`, block level, streamed): "
        "blocks come to the GPU one group at a time, for the lowest peak memory at a few times the step time. "
        "CUDA only; not together with cpu_offload.",
    )
    vae_tiling: bool = Field(
        default=False,
        description="Decode the video in overlapping tiles (`vae.enable_tiling`): far less decoder memory at "
        "large sizes, slightly slower, with faint seams possible.",
    )
    fp8_weights: bool = Field(
        default=False,
        description="Store the transformer's weights in float8 (e4m3) and upcast each layer as it runs "
        "(`enable_layerwise_casting`): about half the weight memory of bf16, a little slower, slightly lower "
        "quality. Norms and embeddings stay in the compute dtype.",
    )
    step_cache: StepCache = Field(
        default="off",
        description="Reuse transformer work between steps through the model's `enable_cache`: `first_block` "
        "(FirstBlockCache: skip the rest of the blocks when the first block's output barely changed) or "
        "`taylorseer` (TaylorSeer: predict features from earlier steps). Faster, at some loss of detail; the "
        "frames are no longer those of the plain pipeline.",
    )
    step_cache_threshold: float = Field(
        default=0.05, gt=0, description="FirstBlockCache's threshold: higher skips more steps and loses more."
    )
    torch_compile: bool = Field(
        default=False,
        description="torch.compile the transformer: faster steps after a first call that compiles for "
        "minutes (and again for every new shape). CUDA only; ignored with a warning on CPU.",
    )

    @property
    def rules(self) -> FamilyRules:
        return FAMILY_RULES[self.family]

    @model_validator(mode="after")
    def _follows_the_family_rules(self) -> TransformerVideoConfig:
        rules = self.rules
        try:
            rules.check_frames("video.num_frames", self.num_frames)
            rules.check_size("video.width", self.width)
            rules.check_size("video.height", self.height)
        except InvalidInput as exc:
            raise ValueError(str(exc)) from None
        if not rules.min_guidance <= self.guidance_scale <= rules.max_guidance:
            raise ValueError(
                f"video.guidance_scale={self.guidance_scale} must be from {rules.min_guidance:g} to "
                f"{rules.max_guidance:g} for {rules.label}"
            )
        if self.cpu_offload and self.group_offload:
            raise ValueError("video.cpu_offload and video.group_offload exclude each other; choose one")
        if self.scheduling == "step" and self.step_cache != "off":
            raise ValueError(
                f"video.step_cache={self.step_cache!r} needs scheduling 'call': its cache holds one batch's "
                "features from step to step, and under 'step' scenes join and leave between steps"
            )
        return self


class LTXConfig(TransformerVideoConfig):
    """LTX-Video (Lightricks) through `LTXImageToVideoPipeline`: keyframe + visual prompt to video."""

    family: Literal["ltx"] = Field(default="ltx", description="The animator family: LTX-Video.")
    model: str = Field(
        default="Lightricks/LTX-Video",
        description="Hub id of an LTX-Video checkpoint in diffusers format that diffusers runs with "
        "`LTXImageToVideoPipeline`: 0.9.0 (this default) or 0.9.1. Checkpoints from 0.9.5 on are made for "
        "`LTXConditionPipeline`, which this engine does not run; it warns when a checkpoint says so.",
    )
    decode_timestep: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="Timestep the VAE decodes at, for checkpoints whose decoder is timestep-conditioned "
        "(0.9.1 and later; 0.9.0 ignores it). LTX recommends 0.05: a touch of denoising in the decoder "
        "sharpens detail.",
    )
    decode_noise_scale: float = Field(
        default=0.025,
        ge=0.0,
        le=1.0,
        description="Noise mixed into the latents before such a decode (LTX recommends 0.025).",
    )


class WanConfig(TransformerVideoConfig):
    """Wan 2.1/2.2 through `WanImageToVideoPipeline`: keyframe + visual prompt to video."""

    family: Literal["wan"] = Field(default="wan", description="The animator family: Wan.")
    model: str = Field(
        default="Wan-AI/Wan2.2-TI2V-5B-Diffusers",
        description="Hub id of a Wan image-to-video checkpoint in diffusers format (Wan 2.2 TI2V-5B, A14B).",
    )
    height: int = Field(
        default=704, ge=16, description="Frame height in pixels (multiple of 16; 32 for TI2V-5B)."
    )
    width: int = Field(
        default=1280, ge=16, description="Frame width in pixels (multiple of 16; 32 for TI2V-5B)."
    )
    num_inference_steps: int = Field(default=50, ge=1, description="Denoising steps; time grows linearly.")
    guidance_scale: float = Field(
        default=5.0,
        description="Text guidance. Above 1.0 each step runs the transformer twice (with and without the "
        "prompt): twice the compute; 1.0 turns guidance off.",
    )
    max_sequence_length: int = Field(
        default=512,
        ge=1,
        description="Prompt tokens UMT5 reads (longer prompts are cut). Wan was trained on prompts padded to "
        "512 and its pipelines read 512; fewer changes what the cross-attention sees.",
    )

    # diffusers' Wan examples load the VAE in float32 beside a bfloat16 transformer; it is a small share of
    # the weights.
    component_dtypes: ClassVar[dict[str, torch.dtype]] = {"vae": torch.float32}


# Per-request parameters with a config default, in one order; prompts are per video and never in the key.
_PARAMS = ("width", "height", "num_frames", "num_inference_steps", "fps", "guidance_scale")


@dataclass(frozen=True)
class _Resolved:
    index: int
    image: Image.Image | None  # None: from text alone
    seed: int
    prompt: str
    negative_prompt: str
    params: tuple[Any, ...]
    run_frames: int  # the family's valid count the pipeline makes; `num_frames` of them are kept

    def param(self, name: str) -> Any:
        return self.params[_PARAMS.index(name)]

    @property
    def batch_key(self) -> tuple[Any, ...]:
        shape = tuple(v for n, v in zip(_PARAMS, self.params, strict=True) if n != "num_frames")
        return (*shape, self.run_frames, self.image is None)


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
        guidance = values["guidance_scale"]
        rules = self.rules
        if (
            not isinstance(guidance, (int, float))
            or isinstance(guidance, bool)
            or not rules.min_guidance <= guidance <= rules.max_guidance
        ):
            raise InvalidInput(
                "guidance_scale",
                guidance,
                f"must be from {rules.min_guidance:g} to {rules.max_guidance:g} for {rules.label}{where}",
            )
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

    return TaylorSeerCacheConfig()


__all__ = [
    "FAMILY_RULES",
    "FamilyRules",
    "LTXConfig",
    "TransformerRuntime",
    "TransformerVideoConfig",
    "TransformerVideoEngine",
    "WanConfig",
]
