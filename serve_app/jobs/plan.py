"""From a request and the config to a plan: every default resolved, every limit checked.

The plan is computed when a job is created (to refuse bad requests with a 400) and again when it runs,
so a resumed job makes the same video.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from core.errors import bad_value
from engines.video.config import rules_of
from serve_app.config import AppConfig
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
        transition_s: the length of each cross-fade between clips (0 for cuts).
        extra_joins: cross-fades the scenes make beyond those between them (an extension's first scene
            joins the video it extends).
    """

    seconds: float
    size: tuple[int, int]
    generation_size: tuple[int, int]
    fps: int
    num_scenes: int
    steps: int
    seed: int
    transition_s: float = 0.0
    extra_joins: int = 0

    @property
    def scene_seconds(self) -> float:
        return self.seconds / self.num_scenes

    @property
    def overlap(self) -> float:
        """Seconds each clip is lengthened by so the cross-fades do not shorten the video: N clips joined by
        N-1 fades lose N-1 fades, spread over the N clips."""
        return self.transition_s * (self.num_scenes - 1 + self.extra_joins) / self.num_scenes

    def with_scenes(self, count: int) -> JobPlan:
        """This plan for the ``count`` scenes a writer made (fewer than asked when the prompt has fewer
        phrases): the same length, the cross-fades shared among them."""
        return dataclasses.replace(self, num_scenes=count)

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


# Segment k of a scene uses seed + k * this: far from the seeds of the scenes after it.
SEGMENT_SEED_STRIDE = 1_000_003


def seed_of(plan: JobPlan, index: int, segment: int = 0) -> int:
    """The seed of a scene's segment: scene i starts at ``seed + i``; its later segments have seeds of their own."""
    return (plan.seed + index + segment * SEGMENT_SEED_STRIDE) % 2**32


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

    fps = request.fps or config.video.fps
    seconds = request.seconds if request.seconds is not None else config.jobs.default_seconds
    if request.num_frames is not None:
        # vLLM-Omni's way to give the length: frames at the video's rate.
        if request.seconds is not None and abs(request.seconds * fps - request.num_frames) >= 0.5:
            raise bad_value(
                "num_frames",
                request.num_frames,
                f"disagrees with seconds={request.seconds:g} at {fps} fps ({request.seconds * fps:g} frames); "
                "give one",
            )
        seconds = request.num_frames / fps
        if seconds > limits.max_seconds:
            raise bad_value(
                "num_frames", request.num_frames, f"at most {limits.max_seconds:g} s at {fps} fps"
            )
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
    for name in ("guidance_scale", "guidance_scale_2"):
        guidance = getattr(request, name)
        taken = name in rules.request_fields
        if taken and guidance is not None and not rules.min_guidance <= guidance <= rules.max_guidance:
            raise bad_value(
                name, guidance, f"{rules.label} takes {rules.min_guidance:g} to {rules.max_guidance:g}"
            )

    steps = request.num_inference_steps or config.video.num_inference_steps
    if steps > limits.max_inference_steps:
        raise bad_value("num_inference_steps", steps, f"at most {limits.max_inference_steps}")

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
        transition_s=transition_seconds(config),
        extra_joins=extra_joins,
    )


def transition_seconds(config: AppConfig) -> float:
    """The length of each join between clips: a cross-fade's, or 0 for cuts."""
    processing = config.video_processing
    return processing.transition_seconds if processing.transition == "crossfade" else 0.0


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


@dataclass(frozen=True)
class Fit:
    """How a job's narration is fitted to its scenes.

    Args:
        pause: silence each narrated scene keeps around its voice where there is room.
        explicit: the caller's scenes, each keeping its own length where its narration fits; written
            scenes share the video's length, one with more to say taking time from the others.
        asked: the request set the length (`seconds`, or explicit scenes' own): the narration is spoken
            faster to fit it.
        fixed: seconds of scenes taken over (an extension's), which count towards `limits.max_seconds`.
    """

    pause: float
    explicit: bool
    asked: bool
    fixed: float = 0.0

    def goals(self, planned: list[float], needs: list[float], limit: float) -> list[tuple[list[int], float]]:
        """The groups of scenes whose narration must fit a length, each with that length (none: it fits)."""
        scenes = list(range(len(planned)))
        if self.asked and self.explicit:
            return [([i], length) for i, length in enumerate(planned)]
        if self.asked:
            return [(scenes, sum(planned))]
        if sum(fit_narration(planned, needs, self.explicit)) > limit:
            return [(scenes, limit)]
        return []


# A rate a little faster than the arithmetic asks: pauses inside a sentence do not shorten with the pace.
PACE_MARGIN = 1.03


def fit_pauses(
    spoken: list[float], goals: list[tuple[list[int], float]], pause: float, shortest: float
) -> list[float]:
    """The silence each scene keeps around its voice: ``pause``, or less (down to ``shortest``) where a
    group of scenes in ``goals`` would not fit its length otherwise. Pauses give way before the voice
    speeds up.

    Args:
        spoken: seconds each scene's narration lasts (its sentences and the gaps between them).
        goals: groups of scene indexes, each with the length its scenes must fit together.
        pause: the pause a scene keeps when there is room.
        shortest: the least pause (the gap between two sentences: the voice keeps its rhythm).
    """
    pauses = [pause] * len(spoken)
    for scenes, length in goals:
        room = (length - sum(spoken[i] for i in scenes)) / len(scenes)
        for i in scenes:
            pauses[i] = min(pause, max(shortest, room))
    return pauses


def faster_rates(
    speech: list[float],
    needs: list[float],
    rates: list[float],
    goals: list[tuple[list[int], float]],
    fastest: float,
) -> list[float]:
    """The rates to speak each scene at next so that each group of scenes in ``goals`` fits its length.

    Args:
        speech: seconds each scene's voice speaks at its current rate (its gaps excluded).
        needs: seconds each scene needs now: its narration and its pause.
        rates: each scene's current rate.
        goals: groups of scene indexes, each with the length its scenes must fit together. A group shares
            one rate, so its voice keeps one pace.
        fastest: the highest rate allowed.

    A group that fits, or is already spoken at ``fastest``, keeps its rates.
    """
    faster = list(rates)
    for scenes, length in goals:
        over = sum(needs[i] for i in scenes) - length
        talking = sum(speech[i] for i in scenes)
        rate = max(rates[i] for i in scenes)
        if over <= 1e-3 or talking <= 0 or rate >= fastest:
            continue
        room = talking - over  # what the voices may take once the rest (pauses, gaps) is counted
        wanted = rate * talking / room * PACE_MARGIN if room > 0 else fastest
        for i in scenes:
            faster[i] = round(min(fastest, wanted), 3)
    return faster
