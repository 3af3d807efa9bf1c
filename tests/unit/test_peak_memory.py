"""The peak GPU memory a scene's call held (`SceneResult.peak_memory_bytes`, the video's `peak_memory_mb`):
None on the CPU; on CUDA, the call's own peak under `scheduling: call` and the replica's under `step`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engines.stages.animate import SceneItem, run_scenes
from engines.video.base import SceneRequest
from engines.video.config import SVDConfig
from engines.video.families import build_video_engine
from tests.support.tiny_models import TINY_SVD_SETTINGS

pytestmark = pytest.mark.unit

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


class Never:
    def is_set(self) -> bool:
        return False


def item(seed: int) -> SceneItem:
    pixels = np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    request = SceneRequest(image=Image.fromarray(pixels), seed=seed, num_inference_steps=2)
    return SceneItem(request=request, text="a scene", key=f"video_{seed:032x}:0", progress=lambda s, t: None)


def animate(path: Path, **settings) -> list[int | None]:
    engine = build_video_engine(SVDConfig(model_path=str(path), **{**TINY_SVD_SETTINGS, **settings}))
    engine.load()
    try:
        results = run_scenes(engine, [item(1), item(2)], "never", engine.config, Never())
    finally:
        engine.unload()
    assert [result.generator for result in results] == ["svd", "svd"]
    return [result.peak_memory_bytes for result in results]


@pytest.mark.slow
def test_on_the_cpu_a_scene_has_no_peak_gpu_memory(tiny_svd_path):
    assert animate(tiny_svd_path, device="cpu") == [None, None]


@pytest.mark.gpu
@needs_cuda
def test_on_cuda_a_call_reads_its_own_peak_and_the_step_loop_the_replicas(tiny_svd_path):
    # A gigabyte held and freed before the calls: the replica's peak holds it, a call's own does not.
    hog = torch.empty(2**30, dtype=torch.uint8, device="cuda")
    del hog
    call, call_again = animate(tiny_svd_path, device="cuda")
    assert call == call_again  # one call, one peak, shared by its batch
    assert 0 < call < 2**30
    step = animate(tiny_svd_path, device="cuda", scheduling="step")
    assert all(peak is not None and peak >= 2**30 for peak in step)
