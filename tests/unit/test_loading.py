"""cpu_threads: the torch thread count a CPU model runs with, set around each call and restored after; and
the dtype each model gets, `auto` resolved per family as it is on CUDA."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from engines.loading import cpu_threads, placement_for

pytestmark = pytest.mark.unit


@pytest.fixture
def one_thread():
    # As in a Ray replica with a fraction of a CPU (OMP_NUM_THREADS=1).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_the_count_holds_inside_the_block_and_is_restored_after(one_thread) -> None:
    with cpu_threads(2, torch.device("cpu")):
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == 1


def test_it_is_restored_when_the_call_fails(one_thread) -> None:
    with pytest.raises(RuntimeError), cpu_threads(2, torch.device("cpu")):
        raise RuntimeError("the pipeline failed")
    assert torch.get_num_threads() == 1


@pytest.mark.parametrize(("count", "device"), [(None, "cpu"), (2, "cuda"), (2, None)])
def test_no_count_or_no_cpu_leaves_the_threads_alone(one_thread, count, device) -> None:
    with cpu_threads(count, torch.device(device) if device else None):
        assert torch.get_num_threads() == 1


# -- dtype: auto, per family -------------------------------------------------------------------------------

CUDA, CPU = torch.device("cuda"), torch.device("cpu")


def _configs() -> dict[str, Any]:
    from engines.painter import PainterConfig
    from engines.video.config import LTXConfig, SVDConfig, WanConfig

    return {"svd": SVDConfig(), "ltx": LTXConfig(), "wan": WanConfig(), "painter": PainterConfig()}


@pytest.mark.parametrize(
    ("model", "dtype", "components"),
    [
        # SVD's published fp16 variant; the painter's (SD-Turbo) too.
        ("svd", torch.float16, {}),
        ("painter", torch.float16, {}),
        # T5 / UMT5 overflow in float16: NaN, and the scene would quietly become a title card.
        ("ltx", torch.bfloat16, {}),
        ("wan", torch.bfloat16, {"vae": torch.float32}),  # diffusers' Wan examples keep the VAE in fp32
    ],
)
def test_auto_on_cuda_is_each_models_own_dtype(
    model: str, dtype: torch.dtype, components: dict[str, torch.dtype]
) -> None:
    placement = placement_for(_configs()[model], CUDA)

    assert (placement.dtype, dict(placement.component_dtypes)) == (dtype, components)
    assert placement.load_dtype == ({"default": dtype, **components} if components else dtype)


@pytest.mark.parametrize("model", ["svd", "ltx", "wan", "painter"])
def test_auto_on_the_cpu_is_float32_throughout(model: str) -> None:
    placement = placement_for(_configs()[model], CPU)

    assert placement.load_dtype == torch.float32


def test_without_bfloat16_the_text_families_fall_back_to_float32_not_float16() -> None:
    configs = _configs()

    assert placement_for(configs["wan"], CUDA, bf16_supported=False).dtype == torch.float32
    assert placement_for(configs["ltx"], CUDA, bf16_supported=False).dtype == torch.float32
    assert placement_for(configs["svd"], CUDA, bf16_supported=False).dtype == torch.float16


def test_an_explicit_dtype_wins_but_wans_vae_stays_float32(caplog: pytest.LogCaptureFixture) -> None:
    from engines.video.config import LTXConfig, WanConfig

    assert placement_for(WanConfig(dtype="float32"), CUDA).load_dtype == torch.float32
    assert placement_for(WanConfig(dtype="float16"), CUDA).load_dtype == {
        "default": torch.float16,
        "vae": torch.float32,
    }
    with caplog.at_level(logging.WARNING, logger="engines.loading"):
        placement_for(LTXConfig(dtype="float16"), CUDA)
    assert "overflows" in caplog.text


@pytest.mark.parametrize(
    ("family", "expected"),
    [
        ("svd", {"unet": torch.float16, "vae": torch.float16, "image_encoder": torch.float16}),
        ("ltx", {"transformer": torch.bfloat16, "text_encoder": torch.bfloat16, "vae": torch.bfloat16}),
        ("wan", {"transformer": torch.bfloat16, "text_encoder": torch.bfloat16, "vae": torch.float32}),
    ],
)
def test_each_engine_loads_its_components_in_the_dtypes_auto_means_on_cuda(
    family: str,
    expected: dict[str, torch.dtype],
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # This machine has no GPU: the engine is handed the placement `auto` resolves to on CUDA, with the CPU
    # as its device, so what is checked is that the engine's load applies every dtype of it.
    from engines import loading
    from engines.video.families import build_video_engine

    path = request.getfixturevalue(f"tiny_{family}_path")
    config = type(_configs()[family])(model_path=str(path), device="cpu")
    on_cuda = placement_for(config, CUDA)
    on_this_machine = dataclasses.replace(on_cuda, device=CPU)
    monkeypatch.setattr(loading, "resolve_placement", lambda _config: on_this_machine)
    engine = build_video_engine(config)
    engine.load()

    assert {name: getattr(engine._pipeline, name).dtype for name in expected} == expected


def test_wan_runs_with_a_bfloat16_transformer_and_a_float32_vae(
    tiny_wan_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engines import loading
    from engines.video.base import SceneRequest
    from engines.video.config import WanConfig
    from engines.video.wan.engine import WanEngine
    from tests.support.tiny_models import TINY_WAN_SETTINGS

    config = WanConfig(model_path=str(tiny_wan_path), **TINY_WAN_SETTINGS)
    placement = dataclasses.replace(placement_for(config, CUDA), device=CPU)
    monkeypatch.setattr(loading, "resolve_placement", lambda _config: placement)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))

    [made] = WanEngine(config).generate([SceneRequest(image=image, seed=1, prompt="a fox")])

    assert made.frames.shape == (9, 64, 64, 3) and made.frames.std() > 0
