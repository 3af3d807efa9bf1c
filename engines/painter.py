"""The keyframe painter: a scene's visual prompt becomes the first image that SVD animates.

Any text-to-image checkpoint that `AutoPipelineForText2Image` knows works; the default is an SD-Turbo-class
model, which paints a usable keyframe in one step without classifier-free guidance. A request's own
`input_reference` image skips painting and only goes through `prepare_reference`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageOps
from pydantic import Field

from core.errors import InvalidInput, check_seed, is_int
from engines.loading import (
    ModelSourceConfig,
    Placement,
    cpu_threads,
    load_placed,
    release_memory,
)

logger = logging.getLogger(__name__)


class PainterConfig(ModelSourceConfig):
    """Settings of the keyframe painter."""

    model: str = Field(
        default="stabilityai/sd-turbo",
        description="Hub id of a text-to-image model. Turbo-class models need 1-4 steps and no guidance.",
    )
    num_inference_steps: int = Field(
        default=1, ge=1, description="Denoising steps: 1 for turbo models, 20-30 for ordinary ones (slower)."
    )
    guidance_scale: float = Field(
        default=0.0,
        ge=0.0,
        description="Classifier-free guidance. Turbo models are trained without it (0.0); above 1.0 every step "
        "runs the UNet twice and `negative_prompt` takes effect.",
    )
    width: int = Field(
        default=512,
        ge=64,
        multiple_of=8,
        description="Generation width. With `height` it sets the pixel budget: the painter keeps that area "
        "but takes the aspect ratio of the requested keyframe, then resizes to the exact size.",
    )
    height: int = Field(default=512, ge=64, multiple_of=8, description="Generation height; see `width`.")
    negative_prompt: str | None = Field(
        default=None, description="What to steer away from; only used when guidance_scale > 1."
    )
    style_suffix: str = Field(
        default="",
        description="Appended to every prompt (e.g. ', cinematic lighting, 35mm film') for a consistent look.",
    )


@dataclass(frozen=True)
class PaintRequest:
    """One keyframe to paint.

    Args:
        prompt: the scene's visual description; the config's `style_suffix` is appended.
        width, height: the size of the returned image (the SVD input size), in pixels.
        seed: random seed; the same prompt, size and seed give the same image.
    """

    prompt: str
    width: int
    height: int
    seed: int


def prepare_reference(image: Image.Image, width: int, height: int) -> Image.Image:
    """Fit an image to exactly `width` x `height`: scale to cover, then crop the centre.

    Used for the painter's own output and for a request's `input_reference`. Honours the EXIF orientation of
    uploaded photos and returns an RGB image.

    Args:
        image: any PIL image.
        width, height: the target size in pixels (the SVD input size).
    """
    if not isinstance(image, Image.Image):
        raise InvalidInput("input_reference", type(image).__name__, "must be an image")
    for name, value in (("width", width), ("height", height)):
        if not is_int(value) or value < 1:
            raise InvalidInput(name, value, "must be a positive integer")
    upright = ImageOps.exif_transpose(image).convert("RGB")
    if upright.size == (width, height):
        return upright
    return ImageOps.fit(upright, (width, height), Image.Resampling.LANCZOS, centering=(0.5, 0.5))


class PainterEngine:
    """Paints keyframes with a diffusers text-to-image pipeline.

    Args:
        config: model source, steps, guidance, generation size and prompt additions; default `PainterConfig()`.
    """

    def __init__(self, config: PainterConfig | None = None) -> None:
        self.config = config or PainterConfig()
        self._pipeline: Any = None
        self._placement: Placement | None = None
        self._lock = threading.RLock()

    @property
    def loaded(self) -> bool:
        return self._pipeline is not None

    def load(self) -> None:
        """Load the pipeline once.

        Raises:
            ModelUnavailable: weights missing, not cached with downloads off, unreadable, or no usable device.
        """
        from diffusers import AutoPipelineForText2Image

        with self._lock:
            if self._pipeline is not None:
                return
            pipeline, placement = load_placed(AutoPipelineForText2Image, self.config)
            self._pipeline, self._placement = pipeline.to(placement.device), placement

    def unload(self) -> None:
        """Drop the models and return their memory."""
        with self._lock:
            placement = self._placement
            self._pipeline = self._placement = None
            release_memory(placement.device if placement else None)

    def paint(self, prompt: str, width: int, height: int, seed: int) -> Image.Image:
        """Paint one keyframe: `paint_batch` with a single request (same arguments, see `PaintRequest`)."""
        return self.paint_batch([PaintRequest(prompt, width, height, seed)])[0]

    def paint_batch(self, requests: Sequence[PaintRequest]) -> list[Image.Image]:
        """Paint a keyframe for each request; blocking, so call it from a worker thread.

        Requests whose generation size is equal (same keyframe aspect ratio) share one pipeline call, with one
        seeded generator each, so a batched keyframe equals the same request painted alone.

        Returns:
            One RGB image of exactly the requested size per request, in request order.

        Raises:
            InvalidInput: a request's prompt, size or seed is unusable (the message names it).
            ModelUnavailable: the model cannot load.
        """
        # 1. Check inputs
        for index, request in enumerate(requests):
            _check_request(request, f" (request {index})" if len(requests) > 1 else "")

        # 2. Group by generation size: the config's pixel budget at each keyframe's aspect ratio
        budget = self.config.width * self.config.height
        groups: dict[tuple[int, int], list[int]] = {}
        for index, request in enumerate(requests):
            size = _generation_size(budget, request.width / request.height)
            groups.setdefault(size, []).append(index)

        # 3. Paint each group in one call
        images: dict[int, Image.Image] = {}
        with self._lock:
            self.load()
            for (gen_width, gen_height), indices in groups.items():
                chunk = [requests[i] for i in indices]
                for index, image in zip(
                    indices, self._call_pipeline(chunk, gen_width, gen_height), strict=True
                ):
                    images[index] = image

        # 4. Fit each to its exact keyframe size
        return [prepare_reference(images[i], r.width, r.height) for i, r in enumerate(requests)]

    def _call_pipeline(self, chunk: list[PaintRequest], width: int, height: int) -> list[Image.Image]:
        import torch  # here, not at the top: the configs above are read where no model runs

        cfg = self.config
        device = self._pipeline._execution_device
        generators = [torch.Generator(device=device).manual_seed(request.seed) for request in chunk]
        with cpu_threads(cfg.cpu_threads, self._placement.device if self._placement else None):
            return self._pipeline(
                prompt=[request.prompt.strip() + cfg.style_suffix for request in chunk],
                negative_prompt=[cfg.negative_prompt] * len(chunk)
                if cfg.guidance_scale > 1.0 and cfg.negative_prompt
                else None,
                width=width,
                height=height,
                num_inference_steps=cfg.num_inference_steps,
                guidance_scale=cfg.guidance_scale,
                generator=generators,
            ).images


def _check_request(request: PaintRequest, where: str) -> None:
    if not isinstance(request, PaintRequest):
        raise InvalidInput("requests", type(request).__name__, f"each item must be a PaintRequest{where}")
    if not isinstance(request.prompt, str) or not request.prompt.strip():
        raise InvalidInput("prompt", request.prompt, f"must be a non-empty string{where}")
    for name, value in (("width", request.width), ("height", request.height)):
        if not is_int(value) or value < 16:
            raise InvalidInput(name, value, f"must be an integer of at least 16 pixels{where}")
    check_seed(request.seed, where)


def _generation_size(area: int, aspect: float) -> tuple[int, int]:
    # Text-to-image models need sides divisible by 8 (their VAE's downscale).
    width = max(64, round((area * aspect) ** 0.5 / 8) * 8)
    height = max(64, round((area / aspect) ** 0.5 / 8) * 8)
    return width, height


__all__ = ["PaintRequest", "PainterConfig", "PainterEngine", "prepare_reference"]
