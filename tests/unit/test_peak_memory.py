"""Reading a model call's peak GPU memory (`engines.video.memory.peak_reader`): None off CUDA; on CUDA the
call's own peak in a window, or the replica's since it started. The device script runs the GPU test (this
module imports only torch and the video engines, as its site has them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engines.video.base import SceneRequest
from engines.video.config import SVDConfig
from engines.video.families import build_video_engine
from engines.video.memory import peak_reader
from tests.support.tiny_models import TINY_SVD_SETTINGS

pytestmark = pytest.mark.unit

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_off_cuda_there_is_no_peak_to_read():
    assert peak_reader(None, window=True)() is None
    assert peak_reader(torch.device("cpu"), window=False)() is None


@pytest.mark.gpu
@needs_cuda
def test_on_cuda_a_window_reads_its_calls_peak_and_no_window_the_replicas(tiny_svd_path: Path):
    engine = build_video_engine(
        SVDConfig(model_path=str(tiny_svd_path), **{**TINY_SVD_SETTINGS, "device": "cuda"})
    )
    engine.load()
    assert engine.placement is not None
    device = engine.placement.device
    pixels = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    request = SceneRequest(image=Image.fromarray(pixels), seed=1, num_inference_steps=2)
    try:
        # A gigabyte held and freed before the call: the replica's peak holds it, the call's own does not.
        hog = torch.empty(2**30, dtype=torch.uint8, device=device)
        del hog
        call, replica = peak_reader(device, window=True), peak_reader(device, window=False)
        engine.generate([request])
        assert 0 < call() < 2**30
        assert replica() >= 2**30
    finally:
        engine.unload()
