"""bench.gpu_video: its full-size shapes are the published LTX-Video 2B and Wan 2.2 TI2V-5B sizes (its `--tiny`
run end to end, the engine equal to plain diffusers, is in tests/bench)."""

from __future__ import annotations

from pathlib import Path

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


@pytest.mark.slow
def test_the_plain_pipeline_and_its_vae_are_freed_before_the_engine_is_measured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The timed VAE decode must not keep the plain side's VAE (or pipeline) alive into the engine's peak.
    # The automatic collector is off here, so only what the bench does itself frees a reference cycle.
    import gc
    import weakref

    from diffusers import WanImageToVideoPipeline

    held: list[weakref.ref] = []
    real_load = WanImageToVideoPipeline.from_pretrained.__func__  # type: ignore[attr-defined]

    def recording_load(cls: type, *args: object, **kwargs: object) -> object:
        pipeline = real_load(cls, *args, **kwargs)
        held.extend([weakref.ref(pipeline), weakref.ref(pipeline.vae)])
        return pipeline

    alive_when_engine_starts: list[list[bool]] = []

    def engine_side(*args: object, **kwargs: object) -> dict[str, object]:
        alive_when_engine_starts.append([ref() is not None for ref in held])
        raise SystemExit("the engine side is not what this test measures")

    monkeypatch.setattr(WanImageToVideoPipeline, "from_pretrained", classmethod(recording_load))
    monkeypatch.setattr(gpu_video, "engine", engine_side)
    gc.disable()
    try:
        with pytest.raises(SystemExit):
            gpu_video.main(["--family", "wan", "--tiny", "--out", str(tmp_path / "gpu_wan.json")])
    finally:
        gc.enable()

    assert alive_when_engine_starts == [[False, False]]


def test_each_family_is_benchmarked_at_the_prompt_length_its_engine_reads() -> None:
    from engines.video.config import LTXConfig, WanConfig

    assert gpu_video._config_class("wan")().max_sequence_length == WanConfig().max_sequence_length == 512
    assert gpu_video._config_class("ltx")().max_sequence_length == LTXConfig().max_sequence_length == 128
