"""Script and config models: the motion table, the draft schema with its bounds, config validation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.errors import InvalidInput
from engines.writer import (
    MOTION_BUCKET_IDS,
    Motion,
    Scene,
    ScriptWriter,
    WriterBounds,
    WriterConfig,
    draft_json_schema,
    motion_bucket_id,
)

pytestmark = pytest.mark.unit


def test_motion_table_is_increasing_within_svd_range_and_moderate_is_svd_default() -> None:
    ids = [MOTION_BUCKET_IDS[m] for m in (Motion.STILL, Motion.GENTLE, Motion.MODERATE, Motion.DYNAMIC)]
    assert ids == sorted(ids) and len(set(ids)) == 4
    assert all(0 <= i <= 255 for i in ids)
    assert motion_bucket_id("moderate") == 127
    with pytest.raises(ValueError):
        motion_bucket_id("wild")


def test_scene_serialises_its_motion_bucket_id() -> None:
    scene = Scene(visual_prompt="a cat", caption="A cat.", duration_s=3, motion="still")
    assert scene.model_dump()["motion_bucket_id"] == 40


def test_draft_schema_carries_the_bounds() -> None:
    bounds = WriterBounds(max_scenes=5, max_caption_chars=50, min_scene_seconds=2.5, max_scene_seconds=5)
    schema = draft_json_schema(bounds)
    scenes = schema["properties"]["scenes"]
    assert (scenes["minItems"], scenes["maxItems"]) == (1, 5)
    props = scenes["items"]["properties"]
    assert props["caption"]["pattern"].endswith("{0,49}$")
    assert (props["duration_s"]["minimum"], props["duration_s"]["maximum"]) == (3, 5)
    assert props["motion"]["enum"] == ["still", "gentle", "moderate", "dynamic"]
    exact = draft_json_schema(bounds, num_scenes=3)["properties"]["scenes"]
    assert (exact["minItems"], exact["maxItems"]) == (3, 3)


def test_bounds_reject_inverted_ranges_and_unknown_fields() -> None:
    with pytest.raises(ValidationError, match="min_scenes=5"):
        WriterBounds(min_scenes=5, max_scenes=2)
    with pytest.raises(ValidationError, match="min_scene_seconds"):
        WriterBounds(min_scene_seconds=5, max_scene_seconds=3, default_scene_seconds=4)
    with pytest.raises(ValidationError):
        WriterConfig(backend="template", temperature=0.5)
    with pytest.raises(ValidationError):
        WriterConfig(backend="gpt")


def test_every_config_field_is_described() -> None:
    from engines.writer import OpenAIWriterConfig, TransformersWriterConfig

    for model in (WriterBounds, WriterConfig, TransformersWriterConfig, OpenAIWriterConfig):
        undocumented = [name for name, f in model.model_fields.items() if not f.description]
        assert undocumented == [], model.__name__


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "A cat.", "num_scenes": 0}, "num_scenes"),
        ({"prompt": "A cat.", "num_scenes": 99}, "num_scenes"),
        ({"prompt": "A cat.", "num_scenes": True}, "num_scenes"),
        ({"prompt": "A cat.", "language": "x"}, "language"),
        ({"prompt": "A cat.", "style": [1, 2]}, "style"),
    ],
)
def test_caller_mistakes_raise_invalid_input_naming_the_parameter(kwargs: dict, param: str) -> None:
    with pytest.raises(InvalidInput) as info:
        ScriptWriter().write(**kwargs)
    assert info.value.param == param
    assert str(info.value).startswith(f"{param}=")
