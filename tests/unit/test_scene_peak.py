"""A scene's result carries the peak GPU memory of the call that made it (`run_scenes`): read around the call,
over the call alone under `scheduling: call`, as the replica's peak under `step`; None on the CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engines.stages.animate import SceneItem, run_scenes
from engines.video import memory
from engines.video.base import SceneRequest
from engines.video.config import SVDConfig
from engines.video.families import build_video_engine
from tests.support.tiny_models import TINY_SVD_SETTINGS

pytestmark = [pytest.mark.unit, pytest.mark.slow]


class Never:
    def is_set(self) -> bool:
        return False


def item(seed: int) -> SceneItem:
    pixels = np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    request = SceneRequest(image=Image.fromarray(pixels), seed=seed, num_inference_steps=2)
    return SceneItem(request=request, text="a scene", key=f"video_{seed:032x}:0", progress=lambda s, t: None)


@pytest.fixture(scope="module")
def engine(tiny_svd_path: Path):
    engine = build_video_engine(SVDConfig(model_path=str(tiny_svd_path), **TINY_SVD_SETTINGS))
    engine.load()
    yield engine
    engine.unload()


def peaks(engine, config) -> list[int | None]:
    results = run_scenes(engine, [item(1), item(2)], "never", config, Never())
    assert [result.generator for result in results] == ["svd", "svd"]
    return [result.peak_memory_bytes for result in results]


def test_on_the_cpu_a_scene_has_no_peak_gpu_memory(engine):
    assert peaks(engine, engine.config) == [None, None]


@pytest.mark.parametrize(("scheduling", "window"), [("call", True), ("step", False)])
def test_every_scene_of_a_call_carries_the_peak_read_around_it(engine, monkeypatch, scheduling, window):
    # A stand-in reader for a CUDA device: what run_scenes asks for, and that it reads after the call.
    asked = []

    def reader(device, window):
        asked.append((device.type, window))
        return lambda: 1234

    monkeypatch.setattr(memory, "peak_reader", reader)
    config = engine.config.model_copy(update={"scheduling": scheduling})
    assert peaks(engine, config) == [1234, 1234]
    assert asked == [("cpu", window)]
