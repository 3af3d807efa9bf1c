"""The contract every video engine keeps, run once per family (SVD, LTX-Video, Wan) on tiny random models,
as diffusers' `PipelineTesterMixin` runs the same checks on each pipeline: the frames asked for, seeds that
replay, a batch equal to its singles, progress a step at a time, cancel at a step boundary, and requests
refused with the field named. What only one family does stays in its own module (`test_svd_engine.py`,
`test_transformer_video.py`)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from core.errors import GenerationCancelled, InvalidInput
from engines.video.base import SceneRequest, VideoEngine
from engines.video.config import LTXConfig, SVDConfig, WanConfig
from engines.video.families import video_engine
from tests.support.tiny_models import TINY_LTX_SETTINGS, TINY_SVD_SETTINGS, TINY_WAN_SETTINGS

pytestmark = pytest.mark.unit


@dataclass(frozen=True)
class Family:
    """What the contract needs to know of a family on its tiny model."""

    name: str
    config: type[Any]
    settings: dict[str, Any]
    frames: int  # what the tiny settings make
    # How far a batched video may be from the same one made alone, in grey levels: SVD's batched attention
    # rounds differently in the last bits; LTX's and Wan's batched matmuls in one grey level at most.
    batch_tolerance: int
    # How far, on average, two videos that should differ at least are, in grey levels: SVD's tiny UNet moves
    # every pixel; the tiny transformers only have to differ.
    min_difference: float


FAMILIES = [
    Family("svd", SVDConfig, TINY_SVD_SETTINGS, frames=8, batch_tolerance=2, min_difference=1.0),
    Family("ltx", LTXConfig, TINY_LTX_SETTINGS, frames=9, batch_tolerance=1, min_difference=0.0),
    Family("wan", WanConfig, TINY_WAN_SETTINGS, frames=9, batch_tolerance=1, min_difference=0.0),
]


@dataclass(frozen=True)
class Case:
    family: Family
    engine: VideoEngine


def keyframe(seed: int, size: tuple[int, int] = (64, 64)) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def scene(image: Image.Image, **fields: Any) -> SceneRequest:
    # Every request carries a prompt, as the recipe's do: the text families read it, SVD takes no text.
    return SceneRequest(image=image, **{"prompt": "a red fox", **fields})


def mean_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(int) - b.astype(int)).mean())


@pytest.fixture(scope="module", params=FAMILIES, ids=lambda family: family.name)
def case(request: pytest.FixtureRequest) -> Case:
    # One loaded engine per family for the read-only checks of this module.
    family: Family = request.param
    path: Path = request.getfixturevalue(f"tiny_{family.name}_path")
    engine = video_engine(family.config(model_path=str(path), **family.settings))
    engine.load()
    return Case(family, engine)


def test_frames_have_the_requested_shape_dtype_and_family(case: Case) -> None:
    [result] = case.engine.generate([scene(keyframe(0), seed=7)])

    assert result.frames.shape == (case.family.frames, 64, 64, 3)
    assert result.frames.dtype == np.uint8
    assert result.generator == case.family.name
    assert result.seed == 7
    assert result.seconds > 0
    # Random weights still give a varied picture, not a constant image.
    assert result.frames.std() > 5


def test_same_seed_gives_the_same_frames_and_another_seed_differs(case: Case) -> None:
    image = keyframe(1)
    first, again, other = (case.engine.generate([scene(image, seed=s)])[0] for s in (11, 11, 12))

    np.testing.assert_array_equal(first.frames, again.frames)
    assert not np.array_equal(first.frames, other.frames)
    assert mean_difference(first.frames, other.frames) > case.family.min_difference


def test_a_seed_is_chosen_and_recorded_when_none_is_given(case: Case) -> None:
    [result] = case.engine.generate([scene(keyframe(2))])
    [replay] = case.engine.generate([scene(keyframe(2), seed=result.seed)])

    np.testing.assert_array_equal(result.frames, replay.frames)


@pytest.mark.slow
def test_a_batch_with_its_own_keyframes_and_prompts_equals_its_singles(case: Case) -> None:
    requests = [
        scene(keyframe(10 + i), seed=100 + i, prompt=prompt)
        for i, prompt in enumerate(["a red fox", "the sea and the sky", "red sky"])
    ]
    steps: list[tuple[int, int]] = []

    batch = case.engine.generate(requests, progress=lambda step, total: steps.append((step, total)))
    singles = [case.engine.generate([request])[0] for request in requests]

    # One pipeline call for the whole batch: two denoising steps reported, not six.
    assert steps == [(1, 2), (2, 2)]
    assert [item.batch_size for item in batch] == [3, 3, 3]
    for together, alone in zip(batch, singles, strict=True):
        assert together.seed == alone.seed
        assert (
            np.abs(together.frames.astype(int) - alone.frames.astype(int)).max()
            <= case.family.batch_tolerance
        )
    # The three results really are different videos, in request order.
    assert mean_difference(batch[0].frames, batch[1].frames) > case.family.min_difference


def test_progress_is_reported_once_per_step(case: Case) -> None:
    steps: list[tuple[int, int]] = []

    case.engine.generate(
        [scene(keyframe(3), seed=1, num_inference_steps=3)],
        progress=lambda step, total: steps.append((step, total)),
    )

    assert steps == [(1, 3), (2, 3), (3, 3)]


def test_cancel_stops_at_the_next_step_and_the_engine_stays_usable(case: Case) -> None:
    cancel = threading.Event()
    steps: list[int] = []

    def on_progress(step: int, total: int) -> None:
        steps.append(step)
        cancel.set()  # as if the user cancelled during the first step

    with pytest.raises(GenerationCancelled, match="step 1 of 4"):
        case.engine.generate(
            [scene(keyframe(4), seed=1, num_inference_steps=4)], progress=on_progress, cancel=cancel
        )
    assert steps == [1]

    [result] = case.engine.generate([scene(keyframe(4), seed=1)])
    assert result.frames.shape == (case.family.frames, 64, 64, 3)


def test_a_cancel_set_before_the_call_runs_no_step(case: Case) -> None:
    cancel = threading.Event()
    cancel.set()
    steps: list[int] = []

    with pytest.raises(GenerationCancelled):
        case.engine.generate([scene(keyframe(5))], progress=lambda s, t: steps.append(s), cancel=cancel)
    assert steps == []


@pytest.mark.parametrize(
    ("change", "param", "shown", "message"),
    [
        # 60 is off every family's multiple (SVD 8, Wan 16, LTX 32).
        ({"width": 60}, "width", "60", "multiple of"),
        ({"num_frames": 0}, "num_frames", "0", "positive"),
        ({"seed": -1}, "seed", "-1", "from 0"),
    ],
)
def test_bad_request_values_name_the_field_and_value(
    case: Case, change: dict, param: str, shown: str, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message) as caught:
        case.engine.generate([scene(keyframe(6), **change)])
    assert caught.value.param == param
    assert shown in str(caught.value)


def test_a_keyframe_of_the_wrong_size_is_rejected(case: Case) -> None:
    with pytest.raises(InvalidInput, match="64x64") as caught:
        case.engine.generate([scene(keyframe(7, (80, 64)))])
    assert caught.value.param == "image"
    assert "80x64" in str(caught.value)
