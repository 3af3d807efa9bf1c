"""Turn a model's raw answer into a :class:`Script`: parse, validate, clamp.

Problems a repair prompt can fix (not JSON, missing scenes, a caption in the wrong language) raise
:class:`DraftRejected` with a message that names the field and shows the value; the writer sends it back
to the model once. Values merely out of range (too many scenes, long text, a 90 s scene) are clamped.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

from core.errors import _short
from engines.writer.config import BackendName, WriterBounds
from engines.writer.prompting import TokenCounter, approx_clip_tokens, improve_visual_prompt
from engines.writer.script import Motion, Scene, Script
from engines.writer.text import (
    ascii_letter_share,
    clean_text,
    matches_language,
    shorten,
    speech_units,
    trim_to_budget,
    unit_name,
)

# How far over its speech budget a caption may go before it is sent back.
BUDGET_SLACK = 1.15
_FENCE = re.compile(r"^```[a-zA-Z]*\s*|\s*```$")


class DraftRejected(ValueError):
    """A model's answer cannot become a script; the message says why, for the repair prompt."""


def parse_json_object(text: str) -> dict[str, Any]:
    """Parse the JSON object in a model's answer, tolerating code fences and prose around it.

    Raises:
        DraftRejected: the answer is not text or not a JSON object, whatever the parser's reason.
    """
    if not isinstance(text, str):  # a backend may answer None or bytes despite its signature
        raise DraftRejected(f"the answer is not text: {type(text).__name__}")
    body = _FENCE.sub("", text.strip())
    start, end = body.find("{"), body.rfind("}")
    if start < 0 or end <= start:
        raise DraftRejected(f"the answer is not a JSON object: {_short(text)}")
    try:
        # strict=False: raw control characters inside strings are cleaned below rather than rejected.
        data = json.loads(body[start : end + 1], strict=False)
    except json.JSONDecodeError as exc:
        raise DraftRejected(f"the answer is not valid JSON ({exc.msg} at char {exc.pos})") from None
    # Valid JSON that Python cannot hold is still an answer the model can fix.
    except RecursionError:
        raise DraftRejected("the answer is not usable JSON: too deeply nested") from None
    except ValueError:  # an integer over sys.get_int_max_str_digits()
        raise DraftRejected("the answer is not usable JSON: an integer too long") from None
    if not isinstance(data, dict):
        raise DraftRejected(f"the answer is JSON but not an object: {_short(data)}")
    return data


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise DraftRejected(f"{field}={_short(value)}: must be a string")
    text = clean_text(value)
    if not text:
        raise DraftRejected(f"{field}={_short(value)}: must not be empty")
    return text


def _seconds(value: Any, bounds: WriterBounds) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = bounds.default_scene_seconds
    if not math.isfinite(seconds):
        seconds = bounds.default_scene_seconds
    return round(min(max(seconds, bounds.min_scene_seconds), bounds.max_scene_seconds), 3)


def _motion(value: Any) -> Motion:
    try:
        return Motion(str(value).strip().lower())
    except ValueError:
        return Motion.GENTLE


def script_from_output(
    text: str,
    *,
    bounds: WriterBounds,
    language: str,
    backend: BackendName,
    num_scenes: int | None = None,
    terms: Sequence[str] = (),
    count: TokenCounter = approx_clip_tokens,
    budget: int | None = None,
    trim: bool = False,
) -> Script:
    """Validate and clamp a model's answer into a :class:`Script`.

    Args:
        text: the model's raw answer.
        bounds: the limits to enforce.
        language: the captions' expected language (BCP 47); script-specific languages are checked.
        backend: recorded as the script's author.
        num_scenes: an exact scene count to require; ``None`` means ``bounds.min_scenes..max_scenes``.
        terms: style and quality terms for :func:`improve_visual_prompt`.
        count: the keyframe model's token counter.
        budget: the most a caption may say (``speech_units``) to be spoken within its scene; ``None``: no
            limit. A caption a little over it passes (a model counts loosely; the narrator speaks faster).
        trim: cut captions over ``budget`` at a phrase boundary instead of rejecting them (the last
            attempt: a shortened caption beats the template's).

    Raises:
        DraftRejected: the answer cannot become a valid script (the message is for the repair prompt).
    """
    data = parse_json_object(text)
    raw_scenes = data.get("scenes")
    if not isinstance(raw_scenes, list):
        raise DraftRejected(f"scenes={_short(raw_scenes)}: must be a list of scene objects")
    fewest = num_scenes or bounds.min_scenes
    most = num_scenes or bounds.max_scenes
    if len(raw_scenes) < fewest:
        raise DraftRejected(f"scenes has {len(raw_scenes)} items: at least {fewest} are required")
    scenes: list[Scene] = []
    # Extra scenes are dropped, never honoured: the bound holds whatever the prompt asked for.
    for i, raw in enumerate(raw_scenes[:most]):
        if not isinstance(raw, dict):
            raise DraftRejected(f"scenes[{i}]={_short(raw)}: must be an object")
        visual = _text(raw.get("visual_prompt"), f"scenes[{i}].visual_prompt")
        if ascii_letter_share(visual) < 0.9:
            raise DraftRejected(f"scenes[{i}].visual_prompt={_short(visual)}: must be written in English")
        caption = _text(raw.get("caption"), f"scenes[{i}].caption")
        if not matches_language(caption, language):
            raise DraftRejected(f"scenes[{i}].caption={_short(caption)}: must be written in '{language}'")
        if budget is not None and speech_units(caption) > math.ceil(budget * BUDGET_SLACK):
            if not trim:
                raise DraftRejected(
                    f"scenes[{i}].caption={_short(caption)}: says {speech_units(caption)} "
                    f"{unit_name(language)}, more than the {budget} its scene has time to speak"
                )
            caption = trim_to_budget(caption, budget)
        scenes.append(
            Scene(
                visual_prompt=improve_visual_prompt(
                    shorten(visual, bounds.max_visual_prompt_chars),
                    terms,
                    token_limit=bounds.clip_token_limit,
                    count=count,
                ),
                caption=shorten(caption, bounds.max_caption_chars),
                duration_s=_seconds(raw.get("duration_s"), bounds),
                motion=_motion(raw.get("motion")),
            )
        )
    title_value = data.get("title")
    title = clean_text(title_value) if isinstance(title_value, str) else ""
    return Script(
        # A missing title is not worth a repair round: the first caption stands in.
        title=shorten(title or scenes[0].caption, bounds.max_title_chars),
        language=language,
        scenes=scenes,
        backend=backend,
    )
