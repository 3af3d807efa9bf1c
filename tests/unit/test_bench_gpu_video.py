"""bench.gpu_video: its full-size shapes are the published LTX-Video 2B and Wan 2.2 TI2V-5B sizes (its `--tiny`
run end to end, the engine equal to plain diffusers, is in tests/bench)."""

from __future__ import annotations

import pytest

from bench import gpu_video

pytestmark = pytest.mark.unit

# Billions of parameters the families publish: LTX-Video "2B" with T5-XXL's 4.7B encoder; Wan 2.2 "TI2V-5B"
# with UMT5-XXL's (5.7B) encoder.
PUBLISHED_B = {
    "ltx": {"transformer": 2.0, "text_encoder": 4.7},
    "wan": {"transformer": 5.0, "text_encoder": 5.7},
}


@pytest.mark.parametrize("family", ["ltx", "wan"])
def test_the_full_size_shapes_have_the_published_parameter_counts(family: str) -> None:
    _, counts = gpu_video.build_pipeline(family, "meta")  # shapes only: no memory, no initialisation

    for name, billions in PUBLISHED_B[family].items():
        assert abs(counts[name] / 1e9 - billions) / billions < 0.05, (name, counts[name])
