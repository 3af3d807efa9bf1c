"""The fallback policy: when a model cannot load or run, a stage degrades instead of failing the job.

`fallback: auto | always | never`, applied here and nowhere else, for the writer, the painter and the
animator:
- `auto`: use the model; if it is unavailable (no weights, no device, out of memory after the retries), use
  the title card instead and record why.
- `always`: never touch the model (the CPU demo profile).
- `never`: a model that cannot run fails the scene with its reason.

Every result records the generator that made it; a fallback is never labelled `svd` or `painter`. Bad input
(`InvalidInput`) and cancels (`GenerationCancelled`) are never swallowed: they are not the model's fault.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar, get_args

import numpy as np
from PIL import Image

from core.errors import InvalidInput, ModelUnavailable
from core.status import Animator, KeyframeSource
from engines.media.cards import placeholder_image, title_card_frames
from engines.painter import PainterEngine, PaintRequest
from engines.video.base import CancelToken, ProgressCallback, SceneRequest, VideoModel
from engines.video.config import FAMILY_RULES, SVDConfig, TransformerVideoConfig
from engines.writer import Script, ScriptWriter, WriterConfig, WriteRequest

logger = logging.getLogger(__name__)

FallbackPolicy = Literal["auto", "always", "never"]


class Loadable(Protocol):
    def load(self) -> None: ...


E = TypeVar("E", bound=Loadable)


@dataclass
class SceneResult:
    """A scene's frames and who made them.

    Args:
        frames: uint8 array (num_frames, height, width, 3).
        generator: the model family that made them ("svd", "ltx", "wan"), "fallback" for the title card.
        seed: the seed SVD used; for a fallback, the requested seed (the card does not depend on it).
        seconds: generation wall time (0.0 for a fallback).
        fallback_reason: why the fallback was used; None for SVD frames.
        batch_size: how many scenes shared the call that made these frames: the SVD pipeline call, or for
            title cards the `animate_scenes` call.
        peak_memory_bytes: the most CUDA memory the model's process held for that call (see
            `engines.video.memory.peak_reader`); None without a model on a CUDA device.
        ignored_fields: the request's fields the loaded checkpoint had no use for (`SceneFrames.ignored`).
    """

    frames: np.ndarray
    generator: Animator
    seed: int | None
    seconds: float
    fallback_reason: str | None = None
    batch_size: int = 1
    peak_memory_bytes: int | None = None
    ignored_fields: tuple[str, ...] = ()


@dataclass
class KeyframeResult:
    """A scene's keyframe and what made it: the painter, its placeholder (a title card), the caller's
    reference image or the previous scene's last frame; or no image (`KeyframeSource.TEXT`) where a
    text-conditioned model starts from the prompt alone."""

    image: Image.Image | None
    generator: KeyframeSource
    fallback_reason: str | None = None


def animate_scenes(
    engine: VideoModel | None,
    requests: Sequence[SceneRequest],
    texts: Sequence[str],
    policy: FallbackPolicy,
    config: SVDConfig | TransformerVideoConfig | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> list[SceneResult]:
    """Animate several scenes with the video model (one batched call), or fall back to title-card clips per
    the policy.

    Args:
        engine: the video engine (SVD, LTX-Video or Wan), or None where none is configured.
        requests: one `SceneRequest` per scene.
        texts: each scene's text, shown on its title card if the fallback is used.
        policy: "auto", "always" or "never" (see the module docstring).
        config: defaults for the fallback clip's size and length when a request leaves them None; default the
            engine's config, else `SVDConfig()`.
        progress, cancel: passed to `VideoEngine.generate`.

    Raises:
        ModelUnavailable: the model cannot run and the policy is "never".
        InvalidInput: a bad policy or request; GenerationCancelled: `cancel` was set.
    """
    _check_policy(policy)
    if len(texts) != len(requests):
        raise InvalidInput("texts", len(texts), f"must have one text per request ({len(requests)})")
    if policy == "always":
        return _fallback_clips(requests, texts, config or _config_of(engine), "fallback policy is 'always'")
    try:
        if engine is None:
            family = (config or SVDConfig()).family
            raise ModelUnavailable(f"no {FAMILY_RULES[family].label} engine is configured")
        made = engine.generate(requests, progress=progress, cancel=cancel)
    except ModelUnavailable as exc:
        if policy == "never":
            raise
        reason = str(exc)
    else:
        return [
            SceneResult(
                frames=item.frames,
                generator=Animator(item.generator),
                seed=item.seed,
                seconds=item.seconds,
                batch_size=item.batch_size,
                ignored_fields=item.ignored,
            )
            for item in made
        ]
    logger.warning(
        "Video model unavailable, using title-card clips for %d scene(s): %s", len(requests), reason
    )
    return _fallback_clips(requests, texts, config or _config_of(engine), reason)


def animate_scene(
    engine: VideoModel | None,
    request: SceneRequest,
    text: str,
    policy: FallbackPolicy,
    config: SVDConfig | TransformerVideoConfig | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> SceneResult:
    """One scene: `animate_scenes` with a single request (same arguments, singular)."""
    return animate_scenes(engine, [request], [text], policy, config, progress, cancel)[0]


def paint_keyframes(
    painter: PainterEngine | None, requests: Sequence[PaintRequest], policy: FallbackPolicy
) -> list[KeyframeResult]:
    """Paint keyframes (one batched call), or fall back to placeholder cards showing the prompts, per the policy.

    Args:
        painter: the keyframe painter, or None where none is configured.
        requests: one `PaintRequest` per scene; its prompt is also the placeholder's text.
        policy: "auto", "always" or "never".

    Raises:
        ModelUnavailable: the painter cannot run and the policy is "never".
        InvalidInput: a bad policy or request.
    """
    _check_policy(policy)
    if policy == "always":
        return _placeholders(requests, "fallback policy is 'always'")
    try:
        if painter is None:
            raise ModelUnavailable("no keyframe painter is configured")
        images = painter.paint_batch(requests)
    except ModelUnavailable as exc:
        if policy == "never":
            raise
        logger.warning("painter unavailable, using placeholder keyframes: %s", exc)
        return _placeholders(requests, str(exc))
    return [KeyframeResult(image=image, generator=KeyframeSource.PAINTER) for image in images]


def paint_keyframe(
    painter: PainterEngine | None,
    prompt: str,
    width: int,
    height: int,
    seed: int,
    policy: FallbackPolicy,
) -> KeyframeResult:
    """One keyframe: `paint_keyframes` with a single request (the fields of `PaintRequest` as arguments)."""
    return paint_keyframes(painter, [PaintRequest(prompt, width, height, seed)], policy)[0]


def scene_writer(config: WriterConfig, policy: FallbackPolicy) -> ScriptWriter:
    """The scene writer the policy allows, loaded: `always` writes with the template (no model).

    Raises:
        ModelUnavailable: the model cannot load and the policy is "never" (with "auto" the template
            takes over from it at each write, recording why).
    """
    _check_policy(policy)
    if policy == "always":
        config = config.model_copy(update={"backend": "template"})
    writer = ScriptWriter(config)
    try:
        writer.load()
    except ModelUnavailable as exc:
        if policy == "never":
            raise
        logger.warning("Scene writer model unavailable, scripts come from the template writer: %s", exc)
    return writer


def write_script(writer: ScriptWriter, request: WriteRequest, policy: FallbackPolicy) -> Script:
    """Write the script of ``request``; under "never", a script the template wrote instead of the model
    fails with the model's reason.

    Raises:
        ModelUnavailable: the model fell back to the template and the policy is "never".
        InvalidInput: a bad request.
    """
    _check_policy(policy)
    script = writer.write(
        request.prompt, request.num_scenes, request.language, request.style, request.scene_seconds
    )
    if policy == "never" and script.fallback_reason:
        raise ModelUnavailable(f"the scene writer fell back to the template: {script.fallback_reason}")
    return script


def load_under_policy(
    build: Callable[[], E], policy: FallbackPolicy, what: str
) -> tuple[E | None, str | None]:
    """Build and load a model engine as the policy allows.

    Args:
        build: makes the engine (not yet loaded).
        policy: "always" never builds it; "auto" returns None and the reason when it cannot load; "never"
            lets ModelUnavailable through.
        what: the engine's name for the log.

    Returns:
        (the loaded engine, None), or (None, why it is not there).
    """
    _check_policy(policy)
    if policy == "always":
        return None, "fallback policy is 'always'"
    engine = build()
    try:
        engine.load()
    except ModelUnavailable as exc:
        if policy == "never":
            raise
        logger.warning("%s unavailable, its fallback stands in: %s", what, exc)
        return None, str(exc)
    return engine, None


def _fallback_clips(
    requests: Sequence[SceneRequest],
    texts: Sequence[str],
    config: SVDConfig | TransformerVideoConfig,
    reason: str,
) -> list[SceneResult]:
    results = []
    for request, text in zip(requests, texts, strict=True):
        frames = title_card_frames(
            text,
            num_frames=request.num_frames or config.num_frames,
            width=request.width or config.width,
            height=request.height or config.height,
        )
        results.append(
            SceneResult(
                frames=frames,
                generator=Animator.FALLBACK,
                seed=request.seed,
                seconds=0.0,
                fallback_reason=reason,
                batch_size=len(requests),
            )
        )
    return results


def _placeholders(requests: Sequence[PaintRequest], reason: str) -> list[KeyframeResult]:
    return [
        KeyframeResult(
            image=placeholder_image(request.prompt, request.width, request.height),
            generator=KeyframeSource.PLACEHOLDER,
            fallback_reason=reason,
        )
        for request in requests
    ]


def _config_of(engine: VideoModel | None) -> SVDConfig | TransformerVideoConfig:
    return engine.config if engine is not None else SVDConfig()


def _check_policy(policy: str) -> None:
    if policy not in get_args(FallbackPolicy):
        raise InvalidInput("fallback", policy, f"must be one of {', '.join(get_args(FallbackPolicy))}")


__all__ = [
    "FallbackPolicy",
    "KeyframeResult",
    "SceneResult",
    "animate_scene",
    "animate_scenes",
    "load_under_policy",
    "paint_keyframe",
    "paint_keyframes",
    "scene_writer",
    "write_script",
]
