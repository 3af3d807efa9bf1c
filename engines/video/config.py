"""The animator's settings, one config per model family, and the rules each family's shapes follow.

`video.family` picks the family: `svd` (Stable Video Diffusion, the default: no text, motion controls),
`ltx` (LTX-Video) or `wan` (Wan 2.1/2.2), which also take the scene's visual prompt. A config without
`family` is SVD, so every existing config reads as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, Discriminator, Field, Tag, model_validator

from core.errors import InvalidInput
from engines.loading import DTypeName, ModelSourceConfig


class SchedulingConfig(BaseModel):
    """How the animator shares the model between scenes; every family's config has these fields."""

    scheduling: Literal["call", "step"] = Field(
        default="call",
        description="`call`: scenes that arrive within the batch wait share one pipeline call, which runs "
        "to its end (`@serve.batch`). `step`: the animator owns the denoising loop; a scene joins the "
        "running scenes at the next step and leaves, decoded, as soon as its own steps are done, so a scene "
        "never waits for a whole batch that started before it (see `engines/video/step_loop.py`). SVD and Wan 2.2 "
        "have a step loop; LTX-Video and Wan 2.1 image-to-video have none yet and run call by call over "
        "the queued scenes under `step`.",
    )
    max_active_scenes: int = Field(
        default=8,
        ge=1,
        le=64,
        description="Under `scheduling: step`, most scenes in the loop at once per replica; later ones wait "
        "in arrival order. Each holds its latents and conditioning; every step's activations grow with them.",
    )
    step_memory_fraction: float = Field(
        default=0.9,
        gt=0.0,
        le=1.0,
        description="Under `scheduling: step` on CUDA, a scene is admitted only while the step peak measured "
        "per scene at its shape, times the scenes of that shape, fits in this share of the replica's part "
        "of the device's memory (its `num_gpus` of the whole: two replicas at 0.5 get 0.45 of it each), and "
        "in what the driver reports free (every process on the device counted) less a margin.",
    )


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
    # The request fields only some families take (`serve_app.protocol.FAMILY_FIELDS`) that this one uses.
    request_fields: tuple[str, ...] = ()

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
        "svd",
        "SVD",
        1,
        8,
        0.0,
        20.0,
        takes_text=False,
        pipelines=("StableVideoDiffusionPipeline",),
        request_fields=("motion_bucket_id", "noise_aug_strength"),
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
        request_fields=("negative_prompt", "guidance_scale"),
    ),
    # pipeline_wan_i2v: height and width divisible by 16; num_frames - 1 divisible by 4 (else rounded).
    "wan": FamilyRules(
        "wan",
        "Wan",
        4,
        16,
        1.0,
        20.0,
        takes_text=True,
        pipelines=("WanPipeline", "WanImageToVideoPipeline"),
        # The experts' two on Wan 2.2 A14B only: a checkpoint with one expert says so in the video's notices.
        request_fields=(
            "negative_prompt",
            "guidance_scale",
            "guidance_scale_2",
            "boundary_ratio",
            "flow_shift",
        ),
    ),
}


class SVDConfig(ModelSourceConfig, SchedulingConfig):
    """Settings of the SVD engine: which model, where it runs, defaults of each scene and memory options."""

    family: Literal["svd"] = Field(
        default="svd",
        description="The animator family: `svd` (this, the default), `ltx` (LTX-Video) or `wan` (Wan 2.2). "
        "The fields below from `fps` to `decode_chunk_size`, `unet_forward_chunking` and `attention` are "
        "SVD's own; LTX and Wan take `guidance_scale`, `negative_prompt` and their speed options instead.",
    )

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
        "runs. Cuts peak GPU memory roughly in half; costs host-to-device copies (slower). CUDA only; not "
        "together with torch_compile.",
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
        "CUDA only; ignored with a warning on CPU. Not together with cpu_offload.",
    )
    oom_retries: int = Field(
        default=2,
        ge=0,
        le=2,
        description="On CUDA out-of-memory, free memory and retry: 1 = once with the batch split in halves, "
        "2 = then once more one request at a time. 0 fails at once. Retries cost the lost partial work.",
    )

    @model_validator(mode="after")
    def _offload_or_compile(self) -> SVDConfig:
        # Offload wraps the UNet's forward in accelerate's hook, which is marked not compilable: the UNet's
        # whole-graph compile fails on its first call, so a replica would load and then fail every scene.
        # Compiling without fullgraph would break the graph at the hook, and offload moves the weights every
        # call under CUDA graphs recorded at fixed addresses (README, Performance, says more).
        if self.cpu_offload and self.torch_compile:
            raise ValueError(
                "video.cpu_offload and video.torch_compile exclude each other: offload's hook on the UNet "
                "cannot be compiled; choose cpu_offload for memory or torch_compile for speed"
            )
        return self


StepCache = Literal["off", "first_block", "taylorseer"]


class TransformerVideoConfig(ModelSourceConfig, SchedulingConfig):
    """Settings shared by LTX-Video and Wan: scene defaults, text, and diffusers' speed and memory options."""

    family: Literal["ltx", "wan"]
    # T5 (LTX-Video) and UMT5 (Wan) overflow in float16: NaN embeddings, and every scene a title card.
    cuda_auto_dtype: ClassVar[DTypeName] = "bfloat16"

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
    component_dtypes: ClassVar[dict[str, DTypeName]] = {"vae": "float32"}


def _family_of(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("family", "svd"))
    return str(getattr(value, "family", "svd"))


VideoConfig = Annotated[
    Annotated[SVDConfig, Tag("svd")] | Annotated[LTXConfig, Tag("ltx")] | Annotated[WanConfig, Tag("wan")],
    Discriminator(_family_of),
]
"""`SVDConfig`, `LTXConfig` or `WanConfig`, by `family` (default `svd`)."""


def rules_of(config: SVDConfig | TransformerVideoConfig) -> FamilyRules:
    """The shape and guidance rules of the configured family."""
    return FAMILY_RULES[config.family]


__all__ = [
    "FAMILY_RULES",
    "FamilyRules",
    "LTXConfig",
    "SVDConfig",
    "SchedulingConfig",
    "TransformerVideoConfig",
    "VideoConfig",
    "WanConfig",
    "rules_of",
]
