"""From a request and the config to a plan: every default resolved, every limit checked.

The plan is computed when a job is created (to refuse bad requests with a 400) and again when it runs,
so a resumed job makes the same video.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from engines.video import rules_of
from serve_app.config import AppConfig
from serve_app.errors import bad_value
from serve_app.protocol import CreateVideoRequest


@dataclass(frozen=True)
class JobPlan:
    """What a job makes.

    Args:
        seconds: total length asked for.
        size: (width, height) of the final video (even).
        generation_size: (width, height) at which keyframes are painted and SVD runs.
        fps: frame rate SVD is conditioned on and clips play at (before interpolation).
        num_scenes: scenes to make (explicit scenes fix it; else asked or derived from `seconds`).
        steps: SVD denoising steps.
        seed: base seed; scene i uses seed + i.
        overlap: seconds each clip is lengthened by so the cross-fades do not shorten the video.
    """

    seconds: float
    size: tuple[int, int]
    generation_size: tuple[int, int]
    fps: int
    num_scenes: int
    steps: int
    seed: int
    overlap: float = 0.0

    @property
    def scene_seconds(self) -> float:
        return self.seconds / self.num_scenes

    def scene_frames(self, durations: list[float]) -> list[int]:
        """Frames for scenes of ``durations`` seconds, each with its share of the cross-fades (at least 2).

        Rounded where each scene ends on the whole timeline, not scene by scene, so the video is off what
        was asked by under a frame however many scenes it has.
        """
        frames, end = [], 0.0
        for duration in durations:
            start = round(end * self.fps)
            end += duration + self.overlap
            frames.append(max(2, round(end * self.fps) - start))
        return frames


def segment_frames(frames: int, max_frames: int) -> list[int]:
    """How a scene of ``frames`` frames splits into model calls of at most ``max_frames`` frames each.

    Each segment after the first starts from the previous one's last frame, which it repeats as its own
    first frame (dropped when the segments are joined), so k segments of n_1..n_k frames make
    1 + sum(n_i - 1) frames. The segments are as equal as the count allows, so they batch together.
    """
    if frames <= max_frames:
        return [frames]
    count = math.ceil((frames - 1) / (max_frames - 1))
    base, extra = divmod(frames - 1, count)
    return [base + 1 + (1 if i < extra else 0) for i in range(count)]


def plan_job(request: CreateVideoRequest, config: AppConfig, seed: int, extra_joins: int = 0) -> JobPlan:
    """Resolve ``request`` against ``config``. Raises BadRequest naming the field and value it refuses.

    The text and list bounds were checked when the request was parsed (``protocol.parse_create``).
    ``extra_joins``: transitions the scenes make beyond those between them (an extension's first scene
    joins the video it extends), which their clips are lengthened for.
    """
    limits = config.limits
    if request.model is not None and request.model not in (config.served_model_name, config.video.model):
        raise bad_value("model", request.model, f"this service serves {config.served_model_name!r}")

    seconds = request.seconds if request.seconds is not None else config.jobs.default_seconds
    if seconds > limits.max_seconds:
        raise bad_value("seconds", request.seconds, f"at most {limits.max_seconds:g}")

    width, height = request.dimensions() or (config.video.width, config.video.height)
    if width > limits.max_width or height > limits.max_height or min(width, height) < 64:
        raise bad_value(
            "size",
            request.size,
            f"each side 64 or more, width at most {limits.max_width}, height at most {limits.max_height}",
        )

    rules = rules_of(config.video)
    if rules.takes_text:
        # SVD's motion controls mean nothing to a text-conditioned family: refuse them rather than ignore them.
        for name in ("motion_bucket_id", "noise_aug_strength"):
            if getattr(request, name) is not None:
                raise bad_value(
                    name, getattr(request, name), f"is SVD's; this service animates with {rules.label}"
                )

    steps = request.num_inference_steps or config.video.num_inference_steps
    if steps > limits.max_inference_steps:
        raise bad_value("num_inference_steps", steps, f"at most {limits.max_inference_steps}")
    fps = request.fps or config.video.fps

    if request.scenes is not None:
        num_scenes = len(request.scenes)
        param, value = "scenes", f"<{num_scenes} scenes>"
    else:
        num_scenes = request.num_scenes or max(1, math.ceil(seconds / config.scene_seconds - 0.05))
        param, value = "num_scenes", str(num_scenes)
    if num_scenes > limits.max_scenes:
        raise bad_value(param, value, f"at most {limits.max_scenes} scenes")
    if request.num_scenes is not None and request.num_scenes > config.writer.bounds.max_scenes:
        raise bad_value(
            "num_scenes", request.num_scenes, f"the writer makes at most {config.writer.bounds.max_scenes}"
        )
    if request.scenes is not None:
        # Scenes longer than one model call are made of several: what bounds the work is the total length.
        total = sum(spec.duration_s or seconds / num_scenes for spec in request.scenes)
        if total > limits.max_seconds:
            raise bad_value("scenes", f"<{total:g} s in all>", f"at most {limits.max_seconds:g} s in all")
    if seconds / num_scenes * fps < 2:
        raise bad_value("seconds", seconds, f"too short for {num_scenes} scenes at {fps} fps (2 frames each)")

    # The model runs at a size derived from the one asked for; it must follow the family's rules (LTX: sides
    # in 32s, Wan: 16s), which the config's own size does and the derived multiples of 64 do.
    generation = generation_size(width, height, config.video.width, config.video.height)
    if any(side % rules.size_multiple for side in generation):
        raise bad_value(
            "size",
            request.size,
            f"{rules.label} runs at {generation[0]}x{generation[1]} for it, which is not in multiples of "
            f"{rules.size_multiple}",
        )

    return JobPlan(
        seconds=seconds,
        size=(width // 2 * 2, height // 2 * 2),
        generation_size=generation,
        fps=fps,
        num_scenes=num_scenes,
        steps=steps,
        seed=seed,
        overlap=_overlap(config, num_scenes, extra_joins),
    )


def _overlap(config: AppConfig, num_scenes: int, extra_joins: int) -> float:
    # N clips joined by N-1 cross-fades lose (N-1) fades; spreading that over the N clips keeps the total.
    processing = config.video_processing
    if processing.transition != "crossfade":
        return 0.0
    return processing.transition_seconds * (num_scenes - 1 + extra_joins) / num_scenes


def generation_size(width: int, height: int, base_width: int, base_height: int) -> tuple[int, int]:
    """Size SVD runs at for an output of ``width`` x ``height``.

    SVD is trained at ``base_width`` x ``base_height`` (1024x576): an output of that aspect, either way up,
    runs at exactly that size; other aspects keep its pixel count, in multiples of 64.
    """
    aspect = width / height
    for w, h in ((base_width, base_height), (base_height, base_width)):
        if abs(aspect / (w / h) - 1) < 0.02:
            return w, h
    area = base_width * base_height
    return max(64, round(math.sqrt(area * aspect) / 64) * 64), max(
        64, round(math.sqrt(area / aspect) / 64) * 64
    )


def fit_narration(planned: list[float], needs: list[float], explicit: bool) -> list[float]:
    """Each scene's length once narrated: at least what its narration ``needs``.

    Explicit scenes keep their own lengths where their narration fits. Written scenes share the video's
    length (the sum of ``planned``) out so that it still lasts that long when all the narration fits; the
    time one scene's narration needs beyond its share comes out of the others'.
    """
    if explicit:
        return [max(length, need) for length, need in zip(planned, needs, strict=True)]
    total, needed = sum(planned), sum(needs)
    if needed >= total:
        return list(needs)
    return [need + (total - needed) * length / total for length, need in zip(planned, needs, strict=True)]
