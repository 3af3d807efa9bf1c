"""bench.gpu_svd: its kept configs are the published SVD-XT architecture (its `--tiny` run end to end is in
tests/bench)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench import gpu_svd

pytestmark = pytest.mark.unit

# Parameter counts published for SVD (Stable Video Diffusion's UNet, its temporal-decoder VAE and the
# OpenCLIP ViT-H/14 image encoder). The VAE's figure is encoder + decoder + the 8-channel quant_conv
# (8 * 8 + 8 = 72), which the published breakdown lists with neither.
PUBLISHED = {"unet": 1_524_623_082, "vae": 34_163_592 + 63_579_183 + 72, "image_encoder": 632_076_800}


def test_the_kept_configs_build_the_published_svd_xt_sizes():
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    configs = gpu_svd.read_configs(tiny=False)
    encoder_config = {k: v for k, v in configs["image_encoder"].items() if k != "architectures"}
    with torch.device("meta"):  # shapes only: no memory, no initialisation time
        models = {
            "unet": UNetSpatioTemporalConditionModel.from_config(configs["unet"]),
            "vae": AutoencoderKLTemporalDecoder.from_config(configs["vae"]),
            "image_encoder": CLIPVisionModelWithProjection(CLIPVisionConfig(**encoder_config)),
        }
    counts = {name: sum(p.numel() for p in model.parameters()) for name, model in models.items()}
    assert counts == PUBLISHED
    assert configs["unet"]["num_frames"] == 25  # XT: 25 frames, where SVD has 14


@pytest.mark.slow
def test_the_plain_pipeline_is_freed_before_the_engine_is_measured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A pipeline still alive when the engine runs puts its ~4.5 GB into the engine's peak. The automatic
    # collector is off here, so only what the bench does itself frees a reference cycle.
    import gc
    import weakref

    from diffusers import StableVideoDiffusionPipeline

    pipelines: list[weakref.ref] = []
    real_load = StableVideoDiffusionPipeline.from_pretrained.__func__  # type: ignore[attr-defined]

    def recording_load(cls: type, *args: object, **kwargs: object) -> object:
        pipeline = real_load(cls, *args, **kwargs)
        pipelines.append(weakref.ref(pipeline))
        return pipeline

    alive_when_engine_starts: list[bool] = []

    def engine_side(*args: object, **kwargs: object) -> dict[str, object]:
        alive_when_engine_starts.append(pipelines[0]() is not None)
        raise SystemExit("the engine side is not what this test measures")

    monkeypatch.setattr(StableVideoDiffusionPipeline, "from_pretrained", classmethod(recording_load))
    monkeypatch.setattr(gpu_svd, "engine_best", engine_side)
    gc.disable()
    try:
        with pytest.raises(SystemExit):
            gpu_svd.main(["--tiny", "--out", str(tmp_path / "gpu_svd.json")])
    finally:
        gc.enable()

    assert alive_when_engine_starts == [False]
