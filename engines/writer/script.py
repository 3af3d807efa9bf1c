"""The script a writer produces, and the JSON schema a model is asked (and constrained) to follow.

``Script`` is what the rest of the service reads. A model never produces it directly: it produces a draft
(see :func:`draft_json_schema`), which :func:`engines.writer.validation.script_from_output` validates,
clamps and turns into a ``Script``.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, computed_field

from engines.writer.config import BackendName, WriterBounds


class Motion(str, Enum):  # noqa: UP042 (StrEnum needs Python 3.11; the project supports 3.10)
    """How much a scene moves; SVD reads it as ``motion_bucket_id``."""

    STILL = "still"
    GENTLE = "gentle"
    MODERATE = "moderate"
    DYNAMIC = "dynamic"


# SVD was trained with motion_bucket_id in [0, 255] and defaults to 127. The buckets are spaced so each
# step is a visible change; "moderate" is SVD's own default, so an unhinted scene looks as SVD intends.
MOTION_BUCKET_IDS: dict[Motion, int] = {
    Motion.STILL: 40,
    Motion.GENTLE: 90,
    Motion.MODERATE: 127,
    Motion.DYNAMIC: 180,
}


def motion_bucket_id(motion: Motion | str) -> int:
    """Map a motion hint to SVD's ``motion_bucket_id``.

    Args:
        motion: a :class:`Motion` or its value (``"still"``, ``"gentle"``, ``"moderate"``, ``"dynamic"``).

    Raises:
        ValueError: ``motion`` is not one of those values.
    """
    return MOTION_BUCKET_IDS[Motion(motion)]


class Scene(BaseModel):
    """One scene: a keyframe prompt, a caption, a duration and a motion hint."""

    model_config = ConfigDict(extra="forbid")

    visual_prompt: str = Field(
        min_length=1,
        description="English prompt for the keyframe (text-to-image) model, already improved with style and "
        "quality terms and cut to its token limit.",
    )
    caption: str = Field(min_length=1, description="Subtitle shown with the scene, in the user's language.")
    duration_s: float = Field(gt=0, description="How long the scene lasts, in seconds.")
    motion: Motion = Field(Motion.GENTLE, description="How much the scene moves.")

    @computed_field(description="SVD motion_bucket_id for this scene's motion hint.")  # type: ignore[prop-decorator]
    @property
    def motion_bucket_id(self) -> int:
        return MOTION_BUCKET_IDS[self.motion]


class Script(BaseModel):
    """A video script: a title and scenes, with a record of who wrote it."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, description="Title of the video, in the user's language.")
    language: str = Field(description="Language of the captions and title (BCP 47 tag, e.g. 'en', 'zh').")
    scenes: list[Scene] = Field(min_length=1, description="The scenes, in order.")
    backend: BackendName = Field(description="The backend that wrote this script.")
    fallback_reason: str | None = Field(
        None,
        description="Why the configured backend did not write it (model unavailable, invalid output, "
        "endpoint error); null when it did.",
    )

    @computed_field(description="Sum of the scenes' durations, in seconds.")  # type: ignore[prop-decorator]
    @property
    def total_seconds(self) -> float:
        return round(sum(scene.duration_s for scene in self.scenes), 3)


# Visual prompts are English for the keyframe model's CLIP encoder: the schema allows printable ASCII only,
# starting with a letter or digit, so even a weak model cannot emit control characters or another script.
_VISUAL_CHARS = r"[ -!#-\[\]-~]"  # printable ASCII except '"' and '\'
_TEXT_FIRST = r'[^\x00-\x20"\\]'  # any character but control, space, quote and backslash
_TEXT_REST = r'[^\x00-\x1f"\\]'


def draft_json_schema(bounds: WriterBounds, num_scenes: int | None = None) -> dict[str, Any]:
    """The JSON schema of the draft a model writes, with the bounds built in.

    Constrained decoders (xgrammar, or a server's ``response_format``) enforce it token by token; the
    same bounds are checked again afterwards because not every server enforces a schema.

    Args:
        bounds: the limits (scene count, text lengths, durations).
        num_scenes: an exact scene count to require; ``None`` allows ``bounds.min_scenes..max_scenes``.
    """
    lo, hi = (num_scenes, num_scenes) if num_scenes else (bounds.min_scenes, bounds.max_scenes)
    # Whole seconds keep the grammar finite (a float lets a weak model print digits forever); the
    # validator clamps the value into the configured range afterwards.
    seconds_lo = math.ceil(bounds.min_scene_seconds)
    scene = {
        "type": "object",
        "properties": {
            "visual_prompt": {
                "type": "string",
                "description": "English description of what the keyframe shows: subject, setting, shot.",
                "pattern": f"^[A-Za-z0-9]{_VISUAL_CHARS}{{0,{bounds.max_visual_prompt_chars - 1}}}$",
            },
            "caption": {
                "type": "string",
                "description": "Subtitle for the scene, in the language of the user's idea.",
                "pattern": f"^{_TEXT_FIRST}{_TEXT_REST}{{0,{bounds.max_caption_chars - 1}}}$",
            },
            "duration_s": {
                "type": "integer",
                "minimum": seconds_lo,
                "maximum": max(seconds_lo, math.floor(bounds.max_scene_seconds)),
            },
            "motion": {"type": "string", "enum": [m.value for m in Motion]},
        },
        "required": ["visual_prompt", "caption", "duration_s", "motion"],
        "additionalProperties": False,
    }
    return {
        "title": "ScriptDraft",
        "type": "object",
        "properties": {
            "title": {
                "type": "string",
                "description": "Short title in the language of the user's idea.",
                "pattern": f"^{_TEXT_FIRST}{_TEXT_REST}{{0,{bounds.max_title_chars - 1}}}$",
            },
            "scenes": {"type": "array", "items": scene, "minItems": lo, "maxItems": hi},
        },
        "required": ["title", "scenes"],
        "additionalProperties": False,
    }
