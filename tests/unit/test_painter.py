"""The keyframe painter on a tiny random text-to-image model, and the reference-image crop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.errors import InvalidInput, ModelUnavailable
from engines.painter import PainterConfig, PainterEngine, PaintRequest, prepare_reference

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def painter(tiny_painter_path: Path) -> PainterEngine:
    engine = PainterEngine(
        PainterConfig(model_path=str(tiny_painter_path), device="cpu", width=64, height=64)
    )
    engine.load()
    return engine


@pytest.mark.parametrize("size", [(64, 64), (96, 64), (48, 80)])
def test_paint_returns_an_rgb_image_of_the_requested_size(
    painter: PainterEngine, size: tuple[int, int]
) -> None:
    image = painter.paint("a red fox by the sea", width=size[0], height=size[1], seed=1)

    assert image.size == size
    assert image.mode == "RGB"
    assert np.asarray(image).std() > 1


def test_the_same_seed_paints_the_same_image_and_another_seed_differs(painter: PainterEngine) -> None:
    first, again, other = (painter.paint("the sky", 64, 64, seed) for seed in (5, 5, 6))

    np.testing.assert_array_equal(np.asarray(first), np.asarray(again))
    assert np.abs(np.asarray(first, dtype=int) - np.asarray(other, dtype=int)).mean() > 1


def test_the_style_suffix_reaches_the_model(tiny_painter_path: Path, painter: PainterEngine) -> None:
    styled = PainterEngine(
        PainterConfig(
            model_path=str(tiny_painter_path), device="cpu", width=64, height=64, style_suffix=" red sea"
        )
    )

    plain, with_style = painter.paint("fox", 64, 64, seed=3), styled.paint("fox", 64, 64, seed=3)

    assert np.abs(np.asarray(plain, dtype=int) - np.asarray(with_style, dtype=int)).mean() > 0.5


def test_a_batch_equals_single_paints_and_keeps_request_order(
    painter: PainterEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    requests = [
        PaintRequest("a fox in the snow", 64, 64, seed=1),
        PaintRequest("a wide valley at dawn", 96, 64, seed=2),  # another aspect ratio: its own call
        PaintRequest("a lantern in the dark", 64, 64, seed=3),
    ]
    calls: list[int] = []
    pipeline_class = type(painter._pipeline)
    real_call = pipeline_class.__call__

    def counting_call(self, *args, **kwargs):
        calls.append(len(kwargs["prompt"]))
        return real_call(self, *args, **kwargs)

    monkeypatch.setattr(pipeline_class, "__call__", counting_call)
    batch = painter.paint_batch(requests)
    monkeypatch.undo()
    singles = [painter.paint(r.prompt, r.width, r.height, r.seed) for r in requests]

    assert calls == [2, 1]  # the two square keyframes shared one call
    assert [image.size for image in batch] == [(64, 64), (96, 64), (64, 64)]
    for batched, single in zip(batch, singles, strict=True):
        assert np.abs(np.asarray(batched, dtype=int) - np.asarray(single, dtype=int)).max() <= 2
    assert np.abs(np.asarray(batch[0], dtype=int) - np.asarray(batch[2], dtype=int)).mean() > 1


def test_a_bad_request_in_a_batch_is_named_with_its_index(painter: PainterEngine) -> None:
    with pytest.raises(InvalidInput) as caught:
        painter.paint_batch([PaintRequest("a fox", 64, 64, 1), PaintRequest("a fox", 64, 64, -1)])

    assert caught.value.param == "seed"
    assert "request 1" in str(caught.value)


def test_an_empty_prompt_is_rejected_by_name(painter: PainterEngine) -> None:
    with pytest.raises(InvalidInput) as caught:
        painter.paint("   ", 64, 64, seed=1)
    assert caught.value.param == "prompt"


def test_a_missing_folder_makes_the_painter_unavailable(tmp_path: Path) -> None:
    engine = PainterEngine(PainterConfig(model_path=str(tmp_path / "absent"), device="cpu"))

    with pytest.raises(ModelUnavailable, match="absent.*no model_index.json"):
        engine.paint("a fox", 64, 64, seed=1)


def test_unload_then_paint_loads_again(tiny_painter_path: Path) -> None:
    engine = PainterEngine(
        PainterConfig(model_path=str(tiny_painter_path), device="cpu", width=64, height=64)
    )
    before = engine.paint("fox", 64, 64, seed=2)

    engine.unload()
    assert not engine.loaded
    after = engine.paint("fox", 64, 64, seed=2)

    np.testing.assert_array_equal(np.asarray(before), np.asarray(after))


def striped(width: int, height: int) -> Image.Image:
    """Red left third, green middle third, blue right third."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    third = width // 3
    pixels[:, :third, 0] = 255
    pixels[:, third : 2 * third, 1] = 255
    pixels[:, 2 * third :, 2] = 255
    return Image.fromarray(pixels)


def test_prepare_reference_scales_to_cover_and_keeps_the_centre() -> None:
    fitted = prepare_reference(striped(300, 100), 64, 64)

    assert fitted.size == (64, 64)
    pixels = np.asarray(fitted)
    # A wide image cropped to a square keeps its middle: green, with no red or blue left over.
    assert pixels[:, :, 1].mean() > 200
    assert pixels[:, :, 0].max() < 60 and pixels[:, :, 2].max() < 60


def test_prepare_reference_converts_to_rgb_and_keeps_an_exact_size_image() -> None:
    rgba = Image.new("RGBA", (80, 48), (10, 20, 30, 128))

    fitted = prepare_reference(rgba, 80, 48)

    assert fitted.mode == "RGB" and fitted.size == (80, 48)
    assert fitted.getpixel((0, 0)) == (10, 20, 30)


def test_prepare_reference_rejects_a_non_image() -> None:
    with pytest.raises(InvalidInput) as caught:
        prepare_reference(b"not an image", 64, 64)  # type: ignore[arg-type]
    assert caught.value.param == "input_reference"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_paints_on_cuda_in_float16_and_a_batch_equals_each_alone(tiny_painter_path: Path) -> None:
    engine = PainterEngine(
        PainterConfig(model_path=str(tiny_painter_path), device="cuda", dtype="float16", width=64, height=64)
    )
    requests = [PaintRequest("a red fox by the sea", 64, 64, seed) for seed in (1, 2)]

    batch = engine.paint_batch(requests)
    alone = [engine.paint(r.prompt, r.width, r.height, r.seed) for r in requests]

    assert all(image.size == (64, 64) and np.asarray(image).std() > 1 for image in batch)
    for batched, single in zip(batch, alone, strict=True):  # batched fp16 kernels may round differently
        assert np.abs(np.asarray(batched, dtype=int) - np.asarray(single, dtype=int)).max() <= 8
    assert np.abs(np.asarray(batch[0], dtype=int) - np.asarray(batch[1], dtype=int)).max() > 8
    allocated = torch.cuda.memory_allocated()
    engine.unload()
    assert torch.cuda.memory_allocated() < allocated
