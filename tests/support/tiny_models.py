"""Tiny random-weight models with the real classes, for tests and the CPU demo.

    python -m tests.support.tiny_models DIR

writes DIR/svd (a `StableVideoDiffusionPipeline`), DIR/ltx (an `LTXImageToVideoPipeline`), DIR/wan (a
`WanImageToVideoPipeline` shaped like Wan 2.2 TI2V: no image encoder, expanded timesteps), DIR/painter (a
`StableDiffusionPipeline`, which `AutoPipelineForText2Image` loads), DIR/voice (a VITS voice) and, when the
writer engine provides it, DIR/writer. Each is saved with
`save_pretrained` and loads through the engines' own loaders, so tests exercise the production code path
without downloading anything. The weights are random: the output is noise, but its shapes, dtypes, seeding
and batching behave exactly like the real models'. Builds are deterministic (fixed seed) and take seconds.
"""

from __future__ import annotations

import argparse
import json
import logging
import string
import tempfile
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

# Four VAE levels give the real models' 8x spatial downscale, so sizes that work here work there.
_VAE_CHANNELS = (32, 32, 32, 32)
_CROSS_ATTENTION_DIM = 32
_SEED = 0

# SVD settings that suit the tiny model on a CPU: a call takes well under a second here. Tests and the
# benchmark start from these (`SVDConfig(model_path=..., **TINY_SVD_SETTINGS)`).
TINY_SVD_SETTINGS = {
    "device": "cpu",
    "width": 64,
    "height": 64,
    "num_frames": 8,
    "fps": 8,
    "num_inference_steps": 2,
    "decode_chunk_size": 8,
}

# The text-conditioned families at the same size; frame counts follow their rules (8k+1, 4k+1).
TINY_LTX_SETTINGS = {
    "device": "cpu",
    "width": 64,
    "height": 64,
    "num_frames": 9,
    "fps": 8,
    "num_inference_steps": 2,
    "max_sequence_length": 16,
}
TINY_WAN_SETTINGS = {**TINY_LTX_SETTINGS}
_TEXT_DIM = 32


def build_tiny_svd(folder: str | Path) -> Path:
    """Save a tiny `StableVideoDiffusionPipeline` into `folder` and return its path."""
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        StableVideoDiffusionPipeline,
        UNetSpatioTemporalConditionModel,
    )
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(_SEED)
    time_embed_dim = 32
    unet = UNetSpatioTemporalConditionModel(
        sample_size=8,
        in_channels=8,  # noisy latents and the keyframe's latents, concatenated
        out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        block_out_channels=(32, 64),
        addition_time_embed_dim=time_embed_dim,
        # fps, motion bucket and noise strength, each embedded to time_embed_dim
        projection_class_embeddings_input_dim=3 * time_embed_dim,
        layers_per_block=1,
        cross_attention_dim=_CROSS_ATTENTION_DIM,
        num_attention_heads=(2, 4),
        num_frames=8,
    )
    vae = AutoencoderKLTemporalDecoder(
        block_out_channels=_VAE_CHANNELS,
        down_block_types=("DownEncoderBlock2D",) * len(_VAE_CHANNELS),
        latent_channels=4,
        layers_per_block=1,
    )
    # The pipeline always resizes the keyframe to 224x224 for CLIP, so the encoder keeps that input size;
    # 32-pixel patches keep it to 49 tokens.
    image_encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=32,
            projection_dim=_CROSS_ATTENTION_DIM,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=37,
            image_size=224,
            patch_size=32,
        )
    )
    feature_extractor = CLIPImageProcessor(crop_size=224, size={"shortest_edge": 224})
    # The scheduler settings of the released SVD checkpoints.
    scheduler = EulerDiscreteScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        interpolation_type="linear",
        num_train_timesteps=1000,
        prediction_type="v_prediction",
        sigma_max=700.0,
        sigma_min=0.002,
        steps_offset=1,
        timestep_spacing="leading",
        timestep_type="continuous",
        use_karras_sigmas=True,
    )
    pipeline = StableVideoDiffusionPipeline(
        vae=vae,
        image_encoder=image_encoder,
        unet=unet,
        scheduler=scheduler,
        feature_extractor=feature_extractor,
    )
    return _save(pipeline, folder)


def build_tiny_painter(folder: str | Path) -> Path:
    """Save a tiny `StableDiffusionPipeline` (text-to-image) into `folder` and return its path."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = _build_tokenizer()
    torch.manual_seed(_SEED)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=_CROSS_ATTENTION_DIM,
            intermediate_size=37,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=tokenizer.model_max_length,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            projection_dim=_CROSS_ATTENTION_DIM,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        cross_attention_dim=_CROSS_ATTENTION_DIM,
        attention_head_dim=(2, 4),
    )
    vae = AutoencoderKL(
        block_out_channels=_VAE_CHANNELS,
        down_block_types=("DownEncoderBlock2D",) * len(_VAE_CHANNELS),
        up_block_types=("UpDecoderBlock2D",) * len(_VAE_CHANNELS),
        latent_channels=4,
        layers_per_block=1,
    )
    # SD-Turbo's scheduler: trailing timesteps make a single step start from pure noise.
    scheduler = EulerDiscreteScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        steps_offset=1,
        timestep_spacing="trailing",
    )
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    return _save(pipeline, folder)


def build_tiny_ltx(folder: str | Path, timestep_conditioning: bool = False) -> Path:
    """Save a tiny `LTXImageToVideoPipeline` into `folder` and return its path; ``timestep_conditioning``
    gives it the decoder of LTX-Video 0.9.1 and later (noise added before a timestep-conditioned decode).

    The VAE keeps the real model's compression (4-pixel patches, three space-time downscalings: 32 pixels
    and 8 frames per latent), so the family's rules (sizes in 32s, 8k+1 frames) hold here as there.
    """
    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXImageToVideoPipeline,
        LTXVideoTransformer3DModel,
    )
    from transformers import T5Config, T5EncoderModel

    tokenizer = _build_t5_tokenizer()
    torch.manual_seed(_SEED)
    text_encoder = T5EncoderModel(_t5_config(len(tokenizer), T5Config))
    transformer = LTXVideoTransformer3DModel(
        in_channels=8,
        out_channels=8,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=4,
        attention_head_dim=8,
        cross_attention_dim=32,
        num_layers=2,  # step caches (FirstBlockCache) need a first block and at least one after it
        caption_channels=_TEXT_DIM,
    )
    levels = 4
    vae = AutoencoderKLLTXVideo(
        in_channels=3,
        out_channels=3,
        latent_channels=8,
        block_out_channels=(8,) * levels,
        decoder_block_out_channels=(8,) * levels,
        layers_per_block=(1,) * (levels + 1),
        decoder_layers_per_block=(1,) * (levels + 1),
        spatio_temporal_scaling=(True, True, True, False),
        decoder_spatio_temporal_scaling=(True, True, True, False),
        decoder_inject_noise=(False,) * (levels + 1),
        upsample_residual=(False,) * levels,
        upsample_factor=(1,) * levels,
        # 0.9.0's decoder by default; later ones condition on a timestep (see engines.video.ltx.pipeline).
        timestep_conditioning=timestep_conditioning,
        patch_size=4,
        patch_size_t=1,
        encoder_causal=True,
        decoder_causal=False,
    )
    pipeline = LTXImageToVideoPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
    )
    return _save(pipeline, folder)


def build_tiny_wan(folder: str | Path, two_experts: bool = False) -> Path:
    """Save a tiny Wan 2.2 TI2V-style `WanImageToVideoPipeline` (UMT5 text encoder, no image encoder,
    first-frame timestep masking) into `folder` and return its path. 8-pixel VAE and 2-pixel patches:
    sizes in 16s; 4 frames per latent: 4k+1 frames.

    ``two_experts`` makes the Wan 2.2 A14B layout instead: the keyframe's condition concatenated to the
    latents, and a second transformer for the low-noise steps below `boundary_ratio`."""
    from diffusers import (
        AutoencoderKLWan,
        FlowMatchEulerDiscreteScheduler,
        WanImageToVideoPipeline,
        WanTransformer3DModel,
    )
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = _build_t5_tokenizer()
    torch.manual_seed(_SEED)
    text_encoder = UMT5EncoderModel(_t5_config(len(tokenizer), UMT5Config))
    vae = AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    )

    def transformer() -> Any:
        return WanTransformer3DModel(
            patch_size=(1, 2, 2),
            num_attention_heads=2,
            attention_head_dim=12,
            # Expanded timesteps: the latents alone, the first frame mixed in by its mask. Two experts: the
            # latents, then the condition (4 mask channels, one per frame of a latent, and the keyframe's 16).
            in_channels=16 + 4 + 16 if two_experts else 16,
            out_channels=16,
            text_dim=_TEXT_DIM,
            freq_dim=256,
            ffn_dim=32,
            num_layers=2,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            rope_max_seq_len=32,
        )

    pipeline = WanImageToVideoPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0),
        transformer=transformer(),
        transformer_2=transformer() if two_experts else None,
        image_encoder=None,
        image_processor=None,
        boundary_ratio=0.875 if two_experts else None,  # Wan 2.2 A14B image-to-video's
        expand_timesteps=not two_experts,
    )
    return _save(pipeline, folder)


def build_tiny_voice(folder: str | Path) -> Path:
    """Save a tiny `VitsModel` (a neural voice, 16 kHz) with its tokenizer into `folder` and return its path."""
    from transformers import VitsConfig, VitsModel, VitsTokenizer

    symbols = ["<pad>", "<unk>", " ", *string.ascii_lowercase, "'", ",", ".", "?", "!", "-"]
    torch.manual_seed(_SEED)
    model = VitsModel(
        VitsConfig(
            vocab_size=len(symbols),
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            ffn_dim=32,
            flow_size=16,
            spectrogram_bins=33,
            upsample_initial_channel=16,
            upsample_rates=[8, 8, 2, 2],  # 256 samples per frame, as MMS-TTS
            upsample_kernel_sizes=[16, 16, 4, 4],
            resblock_kernel_sizes=[3],
            resblock_dilation_sizes=[[1, 3]],
            duration_predictor_filter_channels=16,
            duration_predictor_num_flows=1,
            depth_separable_num_layers=1,
            prior_encoder_num_flows=1,
            prior_encoder_num_wavenet_layers=1,
            posterior_encoder_num_wavenet_layers=1,
            sampling_rate=16000,
        )
    )
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    vocab = path / "vocab.json"
    vocab.write_text(json.dumps({symbol: i for i, symbol in enumerate(symbols)}), encoding="utf-8")
    VitsTokenizer(str(vocab), language="eng", phonemize=False, normalize=True).save_pretrained(path)
    return path


def build_all(folder: str | Path) -> dict[str, Path]:
    """Build every tiny model under `folder`; returns {"svd", "ltx", "wan", "painter", "voice"[, "writer"]}."""
    root = Path(folder)
    paths = {
        "svd": build_tiny_svd(root / "svd"),
        "ltx": build_tiny_ltx(root / "ltx"),
        "wan": build_tiny_wan(root / "wan"),
        "painter": build_tiny_painter(root / "painter"),
        "voice": build_tiny_voice(root / "voice"),
    }
    try:
        from engines.writer.tiny_llm import build_tiny_llm
    except ImportError:
        logger.info("engines.writer.tiny_llm is not available; no tiny writer model built")
    else:
        built = build_tiny_llm(root / "writer")
        paths["writer"] = Path(built) if built is not None else root / "writer"
    return paths


def _build_tokenizer():
    """A CLIP tokenizer over lowercase letters and digits, written locally (no download)."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in string.ascii_lowercase + string.digits:
        vocab[char] = len(vocab)
        vocab[char + "</w>"] = len(vocab)
    # A handful of merges so common words become single tokens, as with a real BPE vocabulary.
    merges = ["#version: 0.2"]
    for word in ("the", "and", "sea", "sky", "fox", "red"):
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merges.append(f"{pieces[0]} {pieces[1]}")
            pieces = [pieces[0] + pieces[1], *pieces[2:]]
            vocab.setdefault(pieces[0], len(vocab))
    with tempfile.TemporaryDirectory() as scratch:
        Path(scratch, "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        Path(scratch, "merges.txt").write_text("\n".join(merges) + "\n", encoding="utf-8")
        # from_pretrained reads vocab.json + merges.txt in both transformers 4 and 5, whose constructors differ.
        return CLIPTokenizer.from_pretrained(scratch, model_max_length=16)


def _build_t5_tokenizer():
    """A word-level tokenizer over lowercase letters and a few words, made here with `tokenizers` (no
    download), ending each text with </s> as T5's does; pipelines pad it to `max_sequence_length`."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for word in [*string.ascii_lowercase, *string.digits, "the", "and", "sea", "sky", "fox", "red"]:
        vocab.setdefault(word, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=16,
    )


def _t5_config(vocab_size: int, config_cls):
    return config_cls(
        vocab_size=vocab_size,
        d_model=_TEXT_DIM,
        d_kv=8,
        d_ff=37,
        num_layers=1,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )


def _save(pipeline, folder: str | Path) -> Path:
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    pipeline.save_pretrained(path, safe_serialization=True)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "folder", type=Path, help="where to write svd/, ltx/, wan/, painter/, voice/ (and writer/)"
    )
    args = parser.parse_args(argv)
    for name, path in build_all(args.folder).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
