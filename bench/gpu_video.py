"""LTX-Video or Wan 2.2 on one CUDA GPU: plain diffusers against our engine, at the published resolution.

    python -m bench.gpu_video --family ltx          # CUDA: LTX-Video 2B, 768x512, 121 frames
    python -m bench.gpu_video --family wan          # CUDA: Wan 2.2 TI2V-5B, 1280x704, 121 frames
    python -m bench.gpu_video --family wan --tiny   # CPU: the same code path with the tiny test models

Full size builds the architecture with random weights (nothing is downloaded): the transformer, VAE and
text-encoder shapes are those the families publish (diffusers' defaults for LTX-Video 2B; Wan 2.2 TI2V-5B's
48-channel VAE and 30-layer transformer), and the parameter counts are printed so a reader can check them.
Random weights make noise, yet the time per video and the peak memory are those of the real shapes. Both
sides load the same saved weights and draw the same noise, so their frame difference measures what the
engine changes; per side it reports seconds per video, per transformer step, for the VAE decode, and
the peak of `torch.cuda.max_memory_allocated`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from bench.gpu_svd import OUT, SEED, Probe, _empty_cache, _save, compare, measure, release

PROMPT = "a red fox runs through fresh snow at dawn, the camera follows"
# The published resolutions and lengths: LTX-Video's 768x512 and Wan 2.2 TI2V-5B's 720p, 5 s at 24 fps.
SHAPES = {
    "ltx": {"width": 768, "height": 512, "frames": 121, "steps": 40, "guidance": 3.0},
    "wan": {"width": 1280, "height": 704, "frames": 121, "steps": 50, "guidance": 5.0},
}
TINY_SHAPE = {"width": 64, "height": 64, "frames": 9, "steps": 2}


def build_and_save(family: str, folder: Path, device: str) -> tuple[Path, dict[str, int]]:
    """The family's full-size pipeline with random weights, saved in bf16; returns it and parameter counts."""
    pipeline, counts = build_pipeline(family, device)
    pipeline.to(torch.bfloat16).save_pretrained(folder, safe_serialization=True)
    del pipeline
    _empty_cache()
    return folder, counts


def build_pipeline(family: str, device: str) -> tuple[Any, dict[str, int]]:
    """The family's full-size image-to-video pipeline with random weights on ``device`` ("meta": shapes
    only) and the parameter count of its transformer, VAE and text encoder."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    from transformers import T5Config

    from tests.support.tiny_models import _build_t5_tokenizer

    tokenizer = _build_t5_tokenizer()  # the tokenizer's vocabulary does not change the model's cost
    t5 = {"d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24, "num_heads": 64}
    t5 |= {
        "feed_forward_proj": "gated-gelu",
        "pad_token_id": 0,
        "eos_token_id": 1,
        "decoder_start_token_id": 0,
    }
    torch.manual_seed(SEED)
    with torch.device(device):
        if family == "ltx":
            from diffusers import AutoencoderKLLTXVideo, LTXImageToVideoPipeline, LTXVideoTransformer3DModel
            from transformers import T5EncoderModel

            text_encoder = T5EncoderModel(T5Config(vocab_size=32128, **t5))  # T5 v1.1 XXL
            transformer = LTXVideoTransformer3DModel()  # diffusers' defaults are LTX-Video 2B's
            vae = AutoencoderKLLTXVideo()
            pipeline: Any = LTXImageToVideoPipeline(
                scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text_encoder,
                tokenizer=tokenizer, transformer=transformer,
            )  # fmt: skip
        else:
            from diffusers import AutoencoderKLWan, WanImageToVideoPipeline, WanTransformer3DModel
            from transformers import UMT5Config, UMT5EncoderModel

            text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=256384, **t5))  # UMT5-XXL
            transformer = WanTransformer3DModel(
                patch_size=(1, 2, 2), num_attention_heads=24, attention_head_dim=128, in_channels=48,
                out_channels=48, text_dim=4096, freq_dim=256, ffn_dim=14336, num_layers=30,
                cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024,
            )  # fmt: skip
            vae = AutoencoderKLWan(
                base_dim=160, decoder_base_dim=256, z_dim=48, is_residual=True, in_channels=12,
                out_channels=12, patch_size=2, scale_factor_spatial=16, scale_factor_temporal=4,
                latents_mean=[0.0] * 48, latents_std=[1.0] * 48,
            )  # fmt: skip
            pipeline = WanImageToVideoPipeline(
                tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0), expand_timesteps=True,
            )  # fmt: skip
    counts = {
        name: sum(p.numel() for p in module.parameters())
        for name, module in (("transformer", transformer), ("vae", vae), ("text_encoder", text_encoder))
    }
    return pipeline, counts


def plain_diffusers(
    family: str, model: Path, device: str, image: Image.Image, shape: dict
) -> tuple[dict[str, Any], list[weakref.ref[Any]]]:
    """The reference: the stock image-to-video pipeline, `from_pretrained` in bf16 with its defaults.
    Returns its numbers and weak references to the pipeline and its VAE, which `release` must find dead
    before the engine runs."""
    from diffusers import LTXImageToVideoPipeline, WanImageToVideoPipeline

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    pipeline_cls = LTXImageToVideoPipeline if family == "ltx" else WanImageToVideoPipeline
    pipeline = pipeline_cls.from_pretrained(model, torch_dtype=dtype).to(device)
    pipeline.set_progress_bar_config(disable=True)
    extra = {"frame_rate": 24} if family == "ltx" else {}

    def run(probe: Probe, steps: int = shape["steps"]) -> np.ndarray:
        output = pipeline(
            image=image, prompt=PROMPT, negative_prompt=shape["negative_prompt"], height=shape["height"],
            width=shape["width"], num_frames=shape["frames"], num_inference_steps=steps,
            guidance_scale=shape["guidance"], generator=torch.Generator(device=device).manual_seed(SEED),
            max_sequence_length=shape["max_sequence_length"], output_type="np",
            callback_on_step_end=probe.on_step_end, **extra,
        )  # fmt: skip
        return np.clip(np.asarray(output.frames[0]) * 255.0, 0, 255).round().astype(np.uint8)

    run(Probe(), steps=2)  # warm-up: CUDA context, kernels, allocator
    probe = Probe()
    # These pipelines call vae.decode directly (SVD's have decode_latents): time that.
    with probe.timing(pipeline.vae, "decode"):
        result = measure(run, probe, device)
    refs = [weakref.ref(pipeline), weakref.ref(pipeline.vae)]
    return result | {"dtype": str(dtype), "options": "diffusers defaults (SDPA)"}, refs


def engine(family: str, model: Path, device: str, image: Image.Image, shape: dict, options: dict) -> dict:
    """Our engine (`LTXEngine` or `WanEngine`'s `generate`, what the VideoAnimator deployment runs for the
    family)."""
    from engines.video.base import SceneRequest
    from engines.video.families import video_engine

    config = _config_class(family)(
        model_path=str(model), device=device, dtype="bfloat16" if device == "cuda" else "float32",
        width=shape["width"], height=shape["height"], num_frames=shape["frames"],
        num_inference_steps=shape["steps"], guidance_scale=shape["guidance"], fps=24,
        max_sequence_length=shape["max_sequence_length"], **options,
    )  # fmt: skip
    video = video_engine(config)
    video.load()

    def run(probe: Probe, steps: int = shape["steps"]) -> np.ndarray:
        request = SceneRequest(image=image, seed=SEED, prompt=PROMPT, num_inference_steps=steps)
        return video.generate([request], progress=probe.mark_step)[0].frames

    run(Probe(), steps=2)
    probe = Probe()
    with probe.timing(video._pipeline.vae, "decode"):  # the bench reaches in only to time the decode
        result = measure(run, probe, device)
    runtime = video.runtime
    video.unload()
    return result | {"dtype": runtime.dtype if runtime else "?", "options": str(runtime)}


def _config_class(family: str) -> Any:
    from engines.video.config import LTXConfig, WanConfig

    return LTXConfig if family == "ltx" else WanConfig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=sorted(SHAPES), required=True)
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run with the tiny test models")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default the family's)")
    parser.add_argument("--frames", type=int, default=None, help="frames (default 121)")
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        help="an engine option for our side, e.g. step_cache=first_block",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    started = time.monotonic()
    cuda = torch.cuda.is_available() and not args.tiny
    if not cuda and not args.tiny:
        raise SystemExit("no CUDA device: run with --tiny for the CPU smoke run")
    device = "cuda" if cuda else "cpu"
    shape = dict(SHAPES[args.family]) | (TINY_SHAPE if args.tiny else {})
    # The prompt length each family's pipelines read (LTX 128, Wan 512): the engine configs' defaults.
    shape |= {"max_sequence_length": 16 if args.tiny else _config_class(args.family)().max_sequence_length}
    shape["negative_prompt"] = "worst quality, inconsistent motion, blurry, jittery, distorted"
    if args.steps:
        shape["steps"] = args.steps
    if args.frames:
        shape["frames"] = args.frames
    options = {
        k: json.loads(v) if v[:1] in "0123456789tf[{" else v
        for k, v in (o.split("=", 1) for o in args.option)
    }
    image = Image.fromarray(
        np.random.default_rng(SEED).integers(0, 256, (shape["height"], shape["width"], 3), dtype=np.uint8)
    )
    out = args.out or OUT / f"gpu_{args.family}.json"
    result: dict[str, Any] = {
        "gpu_measured": cuda,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "family": args.family,
        "mode": "tiny" if args.tiny else "full size, random weights",
        "shape": shape,
        "engine_options": options,
    }
    with tempfile.TemporaryDirectory(prefix=f"{args.family}-random-") as scratch:
        if args.tiny:
            from tests.support.tiny_models import build_tiny_ltx, build_tiny_wan

            model = (build_tiny_ltx if args.family == "ltx" else build_tiny_wan)(Path(scratch) / "model")
        else:
            model, result["parameters"] = build_and_save(args.family, Path(scratch) / "model", device)
        print(f"built in {time.monotonic() - started:.0f} s; plain diffusers ...", flush=True)
        plain, plain_refs = plain_diffusers(args.family, model, device, image, shape)
        _save(out, result | {"plain_diffusers": {k: v for k, v in plain.items() if k != "frames"}})
        result["allocated_gb_before_engine"] = release(plain_refs, "the plain pipeline")
        print(f"plain diffusers: {plain['video_s']:.1f} s a video (freed); the engine ...", flush=True)
        ours = engine(args.family, model, device, image, shape, options)
    result |= {
        "plain_diffusers": plain,
        "engine": ours,
        "speedup": plain["video_s"] / ours["video_s"],
        "difference": compare(ours.pop("frames"), plain.pop("frames")),
        "total_s": time.monotonic() - started,
    }
    _save(out, result)
    if not cuda:
        print("GPU NUMBERS WERE NOT MEASURED: this is the CPU smoke run (--tiny) of the same code path.")
    print(json.dumps({k: result[k] for k in ("family", "mode", "speedup", "difference")}, default=str))
    for side in ("plain_diffusers", "engine"):
        row = result[side]
        print(
            side, {k: row[k] for k in ("video_s", "unet_step_s", "vae_decode_s", "peak_memory_gb", "dtype")}
        )


if __name__ == "__main__":
    main()
