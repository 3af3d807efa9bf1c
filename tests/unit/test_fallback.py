"""The fallback policy: auto, always and never, for animation and for keyframes."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.errors import GenerationCancelled, InvalidInput, ModelUnavailable
from engines.fallback import (
    animate_scene,
    animate_scenes,
    load_under_policy,
    paint_keyframe,
    paint_keyframes,
)
from engines.media.cards import placeholder_image, title_card_frames
from engines.painter import PainterConfig, PainterEngine, PaintRequest
from engines.video.config import SVDConfig
from engines.video.svd.engine import SceneRequest, SVDEngine

pytestmark = pytest.mark.unit


class RefusingEngine:
    """An engine the "always" policy must never call."""

    def __init__(self, config: SVDConfig | None = None) -> None:
        self.config = config or SVDConfig()

    def generate(self, *args, **kwargs):
        raise AssertionError("generate must not be called with fallback='always'")

    def paint(self, *args, **kwargs):
        raise AssertionError("paint must not be called with fallback='always'")


def request(seed: int = 3) -> SceneRequest:
    return SceneRequest(image=Image.new("RGB", (64, 64), (90, 120, 40)), seed=seed)


@pytest.fixture(scope="module")
def svd(tiny_svd_path: Path) -> SVDEngine:
    config = SVDConfig(
        model_path=str(tiny_svd_path), device="cpu", width=64, height=64, num_frames=8, num_inference_steps=2
    )
    return SVDEngine(config)


@pytest.fixture
def missing_svd(tmp_path: Path) -> SVDEngine:
    return SVDEngine(
        SVDConfig(model_path=str(tmp_path / "gone"), device="cpu", width=64, height=64, num_frames=6)
    )


def test_always_makes_a_title_card_clip_without_touching_the_engine() -> None:
    engine = RefusingEngine(SVDConfig(width=64, height=48, num_frames=5))

    result = animate_scene(engine, request(), "A quiet harbour at dawn", "always")  # type: ignore[arg-type]

    assert result.generator == "fallback"
    assert result.fallback_reason == "fallback policy is 'always'"
    np.testing.assert_array_equal(result.frames, title_card_frames("A quiet harbour at dawn", 5, 64, 48))


def test_auto_uses_svd_when_the_model_runs(svd: SVDEngine) -> None:
    result = animate_scene(svd, request(seed=4), "scene text", "auto")

    assert result.generator == "svd"
    assert result.fallback_reason is None
    assert result.seed == 4
    assert result.frames.shape == (8, 64, 64, 3)


def test_auto_falls_back_with_the_reason_when_the_model_is_missing(missing_svd: SVDEngine) -> None:
    [first, second] = animate_scenes(missing_svd, [request(1), request(2)], ["One", "Two"], "auto")

    for result, text in ((first, "One"), (second, "Two")):
        assert result.generator == "fallback"
        assert "gone" in result.fallback_reason and "model_index.json" in result.fallback_reason
        np.testing.assert_array_equal(result.frames, title_card_frames(text, 6, 64, 64))


def test_auto_falls_back_when_no_engine_is_configured() -> None:
    result = animate_scene(
        None, request(), "Text", "auto", config=SVDConfig(width=32, height=32, num_frames=3)
    )

    assert result.generator == "fallback"
    assert result.fallback_reason == "no SVD engine is configured"
    assert result.frames.shape == (3, 32, 32, 3)


@pytest.mark.slow
def test_auto_falls_back_when_the_gpu_runs_out_of_memory_after_retries(
    svd: SVDEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The pipeline call itself runs out of memory, every time: the engine's retry ladder, not this test,
    # must turn that into the reason the fallback records.
    calls = []

    def out_of_memory(chunk, progress, cancel):
        calls.append(len(chunk))
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(svd, "_call_pipeline", out_of_memory)

    result = animate_scene(svd, request(), "Text", "auto")

    assert result.generator == "fallback"
    assert len(calls) == svd.config.oom_retries + 1  # the first try and each retry
    assert result.fallback_reason.startswith("SVD ran out of GPU memory for 1 request(s) of 64x64, 8 frames")
    assert "OutOfMemoryError: CUDA out of memory" in result.fallback_reason
    assert svd.oom_hint in result.fallback_reason
    np.testing.assert_array_equal(result.frames, title_card_frames("Text", 8, 64, 64))


def test_never_fails_the_scene_with_the_reason(missing_svd: SVDEngine) -> None:
    with pytest.raises(ModelUnavailable, match="gone"):
        animate_scene(missing_svd, request(), "Text", "never")
    with pytest.raises(ModelUnavailable, match="no SVD engine"):
        animate_scene(None, request(), "Text", "never")


def test_never_still_returns_svd_frames_when_the_model_runs(svd: SVDEngine) -> None:
    assert animate_scene(svd, request(), "Text", "never").generator == "svd"


def test_auto_does_not_hide_bad_input_or_a_cancel(svd: SVDEngine) -> None:
    with pytest.raises(InvalidInput):
        animate_scene(svd, SceneRequest(image=Image.new("RGB", (64, 64)), width=63), "Text", "auto")
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(GenerationCancelled):
        animate_scene(svd, request(), "Text", "auto", cancel=cancel)


def test_an_unknown_policy_is_rejected_by_name() -> None:
    with pytest.raises(InvalidInput) as caught:
        animate_scene(None, request(), "Text", "sometimes")  # type: ignore[arg-type]
    assert caught.value.param == "fallback"
    assert "'sometimes'" in str(caught.value)


def test_keyframe_always_is_the_placeholder_card() -> None:
    result = paint_keyframe(RefusingEngine(), "A lighthouse", 64, 48, seed=1, policy="always")  # type: ignore[arg-type]

    assert result.generator == "placeholder"
    np.testing.assert_array_equal(
        np.asarray(result.image), np.asarray(placeholder_image("A lighthouse", 64, 48))
    )


def test_keyframe_auto_paints_with_the_model(tiny_painter_path: Path) -> None:
    painter = PainterEngine(
        PainterConfig(model_path=str(tiny_painter_path), device="cpu", width=64, height=64)
    )

    result = paint_keyframe(painter, "a red fox", 64, 48, seed=1, policy="auto")

    assert result.generator == "painter" and result.fallback_reason is None
    assert result.image.size == (64, 48)


def test_keyframe_auto_falls_back_and_never_raises(tmp_path: Path) -> None:
    painter = PainterEngine(PainterConfig(model_path=str(tmp_path / "nothing"), device="cpu"))

    result = paint_keyframe(painter, "A lighthouse", 64, 48, seed=1, policy="auto")

    assert result.generator == "placeholder"
    assert "nothing" in result.fallback_reason
    assert result.image.size == (64, 48)
    with pytest.raises(ModelUnavailable, match="nothing"):
        paint_keyframe(painter, "A lighthouse", 64, 48, seed=1, policy="never")
    with pytest.raises(ModelUnavailable, match="no keyframe painter"):
        paint_keyframe(None, "A lighthouse", 64, 48, seed=1, policy="never")


def test_keyframes_fall_back_one_card_per_request_with_its_own_prompt() -> None:
    requests = [PaintRequest("A lighthouse", 64, 48, 1), PaintRequest("A harbour", 32, 32, 2)]

    results = paint_keyframes(None, requests, policy="auto")

    assert [r.generator for r in results] == ["placeholder", "placeholder"]
    assert [r.image.size for r in results] == [(64, 48), (32, 32)]
    assert all("no keyframe painter" in r.fallback_reason for r in results)
    for request, result in zip(requests, results, strict=True):
        expected = placeholder_image(request.prompt, request.width, request.height)
        np.testing.assert_array_equal(np.asarray(result.image), np.asarray(expected))


class _Engine:
    def __init__(self, fails: bool) -> None:
        self.fails = fails
        self.loaded = False

    def load(self) -> None:
        if self.fails:
            raise ModelUnavailable("weights not found at /models/none")
        self.loaded = True


def test_load_under_policy_in_all_three_modes():
    built = []

    def build(fails: bool):
        def make() -> _Engine:
            built.append(fails)
            return _Engine(fails)

        return make

    assert load_under_policy(build(False), "always", "SVD") == (None, "fallback policy is 'always'")
    assert built == []  # `always` never builds, let alone loads, the model
    engine, reason = load_under_policy(build(False), "auto", "SVD")
    assert engine is not None and engine.loaded and reason is None
    engine, reason = load_under_policy(build(True), "auto", "SVD")
    assert engine is None and "/models/none" in reason
    with pytest.raises(ModelUnavailable, match="/models/none"):
        load_under_policy(build(True), "never", "SVD")
