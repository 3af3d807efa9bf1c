"""bench.gpu_svd: its kept configs are the published SVD-XT architecture (its `--tiny` run end to end is in
tests/bench)."""

from __future__ import annotations

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
