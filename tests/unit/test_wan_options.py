"""Wan's per-video options on tiny random checkpoints: Wan 2.2 A14B's `guidance_scale_2` and `boundary_ratio`,
and the scheduler's `flow_shift`. Each takes effect in the pipeline call and in the step loop alike, the
checkpoint's own value changes nothing, a checkpoint with one expert ignores the experts' two and says so, and
LTX-Video takes none of them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engines.video.base import SceneFrames, SceneRequest
from engines.video.config import LTXConfig, WanConfig
from engines.video.families import build_video_engine
from engines.video.step_loop import StepScheduler
from engines.video.text import TransformerVideoEngine
from tests.support.tiny_models import TINY_LTX_SETTINGS, TINY_WAN_SETTINGS

pytestmark = pytest.mark.unit

# The tiny checkpoints' own values (tests/support/tiny_models.py): FlowMatchEuler's shift 5, A14B's boundary.
SHIFT, BOUNDARY = 5.0, 0.875
# Over two steps at shift 5 the timesteps are 1000 and 24.4: the second runs on A14B's second expert (below
# 875). Below a boundary of 0.02 (20) neither does; at shift 1 the timesteps are 1000 and 1.
OPTIONS = [{"guidance_scale_2": 1.5}, {"boundary_ratio": 0.02}, {"flow_shift": 1.0}]


def keyframe(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8))


def request(**options: float) -> SceneRequest:
    return SceneRequest(image=keyframe(5), seed=3, prompt="a red fox", **options)


def loaded(config: WanConfig | LTXConfig) -> TransformerVideoEngine:
    engine = build_video_engine(config)
    assert isinstance(engine, TransformerVideoEngine)
    engine.load()
    return engine


@pytest.fixture(scope="module")
def a14b(tiny_wan_a14b_path: Path) -> TransformerVideoEngine:
    return loaded(WanConfig(model_path=str(tiny_wan_a14b_path), **TINY_WAN_SETTINGS))


def made(engine: TransformerVideoEngine, **options: float) -> SceneFrames:
    [frames] = engine.generate([request(**options)])
    return frames


def differ(a: SceneFrames, b: SceneFrames) -> bool:
    # Beyond the batching tests' tolerance of 2: a bigger matmul may round differently in the last bit.
    return bool(np.abs(a.frames.astype(int) - b.frames.astype(int)).max() > 2)


def test_each_option_changes_an_a14b_video_and_the_checkpoints_own_value_changes_nothing(a14b):
    base = made(a14b)
    own = made(a14b, guidance_scale_2=a14b.config.guidance_scale, boundary_ratio=BOUNDARY, flow_shift=SHIFT)
    np.testing.assert_array_equal(own.frames, base.frames)
    for option in OPTIONS:
        assert differ(made(a14b, **option), base), option
    # What a call set for itself it put back: the default made again is the first one.
    again = made(a14b)
    np.testing.assert_array_equal(again.frames, base.frames)
    assert (base.ignored, again.ignored) == ((), ())


def test_scenes_with_other_options_in_one_generate_are_each_what_they_are_alone(a14b):
    requests = [request(), *(request(**option) for option in OPTIONS)]
    together = a14b.generate(requests)
    # Different options never share a pipeline call.
    assert [frames.batch_size for frames in together] == [1, 1, 1, 1]
    for alone, frames in zip(requests, together, strict=True):
        np.testing.assert_array_equal(frames.frames, a14b.generate([alone])[0].frames)


@pytest.mark.slow
def test_the_step_loop_gives_each_scene_its_own_options_as_the_call_does(a14b, tiny_wan_a14b_path):
    loop = build_video_engine(
        WanConfig(model_path=str(tiny_wan_a14b_path), **TINY_WAN_SETTINGS, scheduling="step")
    )
    assert isinstance(loop, StepScheduler)
    requests = [request(), *(request(**option) for option in OPTIONS)]
    try:
        stepped = loop.generate(requests)
    finally:
        loop.unload()
    for alone, frames in zip(requests, stepped, strict=True):
        [reference] = a14b.generate([alone])
        assert not differ(frames, reference), alone


def test_a_checkpoint_with_one_expert_ignores_the_experts_options_and_says_so(tiny_wan_path):
    engine = loaded(WanConfig(model_path=str(tiny_wan_path), **TINY_WAN_SETTINGS))
    base = made(engine)
    asked = made(engine, guidance_scale_2=1.5, boundary_ratio=0.02)
    np.testing.assert_array_equal(asked.frames, base.frames)
    assert asked.ignored == ("guidance_scale_2", "boundary_ratio") and base.ignored == ()
    shifted = made(engine, flow_shift=1.0)
    assert differ(shifted, base) and shifted.ignored == ()


def test_ltx_takes_none_of_them(tiny_ltx_path):
    engine = loaded(LTXConfig(model_path=str(tiny_ltx_path), **TINY_LTX_SETTINGS))
    base = made(engine)
    asked = made(engine, guidance_scale_2=1.5, boundary_ratio=0.02, flow_shift=1.0)
    np.testing.assert_array_equal(asked.frames, base.frames)
    # Told when the video is read (no LTX checkpoint takes them), not by the checkpoint.
    assert asked.ignored == ()


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("guidance_scale_2", 40.0, "from 1 to 20"),
        ("boundary_ratio", 1.5, "from 0 to 1"),
        ("flow_shift", 0.0, "above 0"),
        ("flow_shift", True, "above 0"),
    ],
)
def test_a_bad_option_names_the_field_and_value(a14b, field, value, says):
    from core.errors import InvalidInput

    with pytest.raises(InvalidInput) as caught:
        a14b.generate([request(**{field: value})])
    assert caught.value.param == field and says in str(caught.value)
