"""Full-size SVD-XT on one CUDA GPU: plain diffusers fp16 against our engine's best path, in one run.

    python -m bench.gpu_svd           # CUDA: 576x1024, 25 frames, 25 steps (about 5-7 min on an H100)
    python -m bench.gpu_svd --tiny    # CPU: the same code path with a shrunken model and small sizes

The architecture comes from bench/svd_xt_config/ with random weights (nothing is downloaded). Both sides
load the same saved weights and draw the same noise, so the relative difference of their frames measures
what the engine's options (compile, dtype, decode chunking) change. Per side it reports seconds per video,
per UNet step, for the VAE decode, and the peak of `torch.cuda.max_memory_allocated`.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import statistics
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

CONFIG_DIR = Path(__file__).parent / "svd_xt_config"
OUT = Path(__file__).parent / "out"
SEED = 0
# The tiny mode's shrunken architecture: the real block layout with narrow channels and one layer each.
TINY = {
    "unet": {
        "block_out_channels": [32, 64, 64, 64],
        "num_attention_heads": [2, 4, 4, 4],
        "cross_attention_dim": 32,
        "addition_time_embed_dim": 8,
        "projection_class_embeddings_input_dim": 24,
        "layers_per_block": 1,
        "sample_size": 8,
    },
    "vae": {"block_out_channels": [32, 32, 32, 32], "layers_per_block": 1},
    "image_encoder": {
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_attention_heads": 2,
        "num_hidden_layers": 1,
        "patch_size": 32,
        "projection_dim": 32,
    },
}


def read_configs(tiny: bool) -> dict[str, dict[str, Any]]:
    """The SVD-XT configs from bench/svd_xt_config/, shrunk by TINY when ``tiny``."""
    configs = {path.stem: json.loads(path.read_text()) for path in CONFIG_DIR.glob("*.json")}
    if tiny:
        for name, overrides in TINY.items():
            configs[name] |= overrides
    return configs


def build_and_save(configs: dict[str, dict[str, Any]], folder: Path, device: str) -> Path:
    """Build the pipeline with random weights (on ``device``, which is fast for 2B parameters) and save it fp16."""
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        StableVideoDiffusionPipeline,
        UNetSpatioTemporalConditionModel,
    )
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(SEED)
    with torch.device(device):
        unet = UNetSpatioTemporalConditionModel.from_config(configs["unet"])
        vae = AutoencoderKLTemporalDecoder.from_config(configs["vae"])
        encoder_config = {k: v for k, v in configs["image_encoder"].items() if k != "architectures"}
        image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**encoder_config))
    pipeline = StableVideoDiffusionPipeline(
        vae=vae,
        image_encoder=image_encoder,
        unet=unet,
        scheduler=EulerDiscreteScheduler.from_config(configs["scheduler"]),
        feature_extractor=CLIPImageProcessor(**configs["feature_extractor"]),
    )
    # fp16 on disk is what the published checkpoint's fp16 variant holds; both sides load it.
    pipeline.to(torch.float16).save_pretrained(folder, safe_serialization=True)
    del pipeline, unet, vae, image_encoder
    _empty_cache()
    return folder


class Probe:
    """Times denoising steps (from the step callback) and the VAE decode (by wrapping `decode_latents`).

    CUDA runs asynchronously, so every mark synchronises first; a sync per step costs microseconds.
    """

    def __init__(self) -> None:
        self.step_marks: list[float] = []
        self.decode_s = 0.0

    def mark_step(self, *_: Any) -> None:
        _sync()
        self.step_marks.append(time.perf_counter())

    def on_step_end(self, pipe: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        self.mark_step()
        return kwargs

    @contextlib.contextmanager
    def timing(self, owner: Any, name: str) -> Iterator[None]:
        """Time every call of ``owner.name`` (a method) inside the block; the method is put back after.

        Put back, because the timed wrapper holds the bound method, which holds ``owner``: left on
        ``owner``, it is a reference cycle that keeps ``owner`` (a whole pipeline, or its VAE) alive until
        the garbage collector happens to run, and its memory counts in the next side's peak.
        """
        original = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            _sync()
            started = time.perf_counter()
            out = original(*args, **kwargs)
            _sync()
            self.decode_s += time.perf_counter() - started
            return out

        setattr(owner, name, timed)
        try:
            yield
        finally:
            delattr(owner, name)  # the instance attribute goes; the class's method shows through again

    def step_s(self) -> float | None:
        """Median seconds per UNet step (the first step, which includes setup, is left out)."""
        gaps = np.diff(self.step_marks)
        return float(statistics.median(gaps)) if len(gaps) else None


def release(refs: list[weakref.ref[Any]], what: str) -> float | None:
    """Collect what ``refs`` point to and return its memory to the device before the next side is measured;
    raises if any of it is still alive (its memory would count in that side's peak). Returns the GB this
    process still has allocated on CUDA (None on the CPU)."""
    gc.collect()
    _empty_cache()
    alive = [type(obj).__name__ for obj in (ref() for ref in refs) if obj is not None]
    if alive:
        raise RuntimeError(f"{what} is still referenced after gc.collect(): {', '.join(alive)}")
    return torch.cuda.memory_allocated() / 2**30 if torch.cuda.is_available() else None


def measure(run: Callable[[Probe], np.ndarray], probe: Probe, device: str) -> dict[str, Any]:
    """Run once and collect the timings and the peak memory; returns them with the uint8 frames."""
    _empty_cache()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    _sync()
    started = time.perf_counter()
    frames = run(probe)
    _sync()
    return {
        "video_s": time.perf_counter() - started,
        "unet_step_s": probe.step_s(),
        "vae_decode_s": probe.decode_s,
        "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
        "frames": frames,
    }


def plain_diffusers(
    model: Path, device: str, image: Image.Image, shape: dict[str, int]
) -> tuple[dict[str, Any], list[weakref.ref[Any]]]:
    """The reference: `StableVideoDiffusionPipeline.from_pretrained` in fp16 with its defaults. Returns its
    numbers and weak references to the pipeline, which `release` must find dead before the engine runs."""
    from diffusers import StableVideoDiffusionPipeline

    dtype = torch.float16 if device == "cuda" else torch.float32  # CPU has no fast fp16 kernels
    pipeline = StableVideoDiffusionPipeline.from_pretrained(model, torch_dtype=dtype).to(device)
    pipeline.set_progress_bar_config(disable=True)

    def run(probe: Probe, steps: int = shape["steps"]) -> np.ndarray:
        output = pipeline(
            image,
            height=shape["height"],
            width=shape["width"],
            num_frames=shape["frames"],
            num_inference_steps=steps,
            decode_chunk_size=shape["decode_chunk_size"],
            generator=torch.Generator(device=device).manual_seed(SEED),
            output_type="np",
            callback_on_step_end=probe.on_step_end,
        )
        return np.clip(np.asarray(output.frames[0]) * 255.0, 0, 255).round().astype(np.uint8)

    run(Probe(), steps=2)  # warm-up: CUDA context, cuDNN autotuning, allocator
    probe = Probe()
    with probe.timing(pipeline, "decode_latents"):
        result = measure(run, probe, device)
    return result | {"dtype": str(dtype), "options": "diffusers defaults (SDPA)"}, [weakref.ref(pipeline)]


def engine_best(
    model: Path, device: str, image: Image.Image, shape: dict[str, int], compile_unet: bool
) -> dict[str, Any]:
    """Our engine (`SVDEngine.generate`, the code the VideoAnimator deployment runs) with its fastest options."""
    from engines.video.config import SVDConfig
    from engines.video.svd.engine import SceneRequest, SVDEngine

    def build(with_compile: bool) -> SVDEngine:
        config = SVDConfig(
            model_path=str(model),
            device=device,
            dtype="float16" if device == "cuda" else "float32",
            attention="sdpa",
            torch_compile=with_compile,
            decode_chunk_size=shape["decode_chunk_size"],
            width=shape["width"],
            height=shape["height"],
            num_frames=shape["frames"],
            num_inference_steps=shape["steps"],
        )
        engine = SVDEngine(config)
        engine.load()
        return engine

    def run_with(engine: SVDEngine) -> Callable[..., np.ndarray]:
        def run(probe: Probe, steps: int = shape["steps"]) -> np.ndarray:
            request = SceneRequest(image=image, seed=SEED, num_inference_steps=steps)
            return engine.generate([request], progress=probe.mark_step)[0].frames

        return run

    engine, note = build(compile_unet), ""
    try:
        # Warm-up with the measured shapes: torch.compile compiles (minutes) and records CUDA graphs here.
        run_with(engine)(Probe(), steps=2)
    except Exception as exc:  # noqa: BLE001 - a compile failure is reported, and the run goes on without it
        note = (
            f"torch.compile failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); ran uncompiled"
        )
        engine.unload()
        engine = build(False)
        run_with(engine)(Probe(), steps=2)
    probe = Probe()
    with probe.timing(engine._pipeline, "decode_latents"):  # the bench reaches in only to time the decode
        result = measure(run_with(engine), probe, device)
    runtime = engine.runtime
    engine.unload()
    return result | {"dtype": runtime.dtype if runtime else "?", "options": str(runtime), "note": note}


def compare(ours: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Relative L2 difference and largest per-pixel difference (0-255) between two uint8 videos."""
    a, b = ours.astype(np.float64), reference.astype(np.float64)
    return {
        "relative_l2": float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12)),
        "max_abs_levels": float(np.abs(a - b).max()),
        "mean_abs_levels": float(np.abs(a - b).mean()),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tiny", action="store_true", help="CPU smoke run: shrunken model, 64x64, 4 frames, 2 steps"
    )
    parser.add_argument(
        "--no-compile", action="store_true", help="leave torch.compile out of the engine's path"
    )
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default 25; tiny 2)")
    parser.add_argument("--out", type=Path, default=OUT / "gpu_svd.json")
    args = parser.parse_args(argv)
    started = time.monotonic()
    cuda = torch.cuda.is_available() and not args.tiny
    device = "cuda" if cuda else "cpu"
    if args.tiny:
        shape = {"width": 64, "height": 64, "frames": 4, "steps": 2, "decode_chunk_size": 4}
    else:
        if not cuda:
            raise SystemExit("no CUDA device: run with --tiny for the CPU smoke run")
        shape = {"width": 1024, "height": 576, "frames": 25, "steps": 25, "decode_chunk_size": 8}
    if args.steps:
        shape["steps"] = args.steps
    image = Image.fromarray(
        np.random.default_rng(SEED).integers(0, 256, (shape["height"], shape["width"], 3), dtype=np.uint8)
    )

    result: dict[str, Any] = {
        "gpu_measured": cuda,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "mode": "tiny" if args.tiny else "full SVD-XT",
        "shape": shape,
    }
    with tempfile.TemporaryDirectory(prefix="svd-xt-random-") as scratch:
        model = build_and_save(read_configs(args.tiny), Path(scratch) / "svd", device)
        print(f"built and saved in {time.monotonic() - started:.0f} s; plain diffusers ...", flush=True)
        plain, plain_refs = plain_diffusers(model, device, image, shape)
        # Written now too, so a run stopped while the engine compiles still leaves the reference numbers.
        _save(args.out, result | {"plain_diffusers": _without_frames(plain)})
        result["allocated_gb_before_engine"] = release(plain_refs, "the plain pipeline")
        print(f"plain diffusers: {plain['video_s']:.1f} s a video (freed); the engine ...", flush=True)
        ours = engine_best(model, device, image, shape, compile_unet=not args.no_compile)
    difference = compare(ours.pop("frames"), plain.pop("frames"))
    result |= {
        "plain_diffusers": plain,
        "engine": ours,
        "speedup": plain["video_s"] / ours["video_s"],
        "difference": difference,
        "total_s": time.monotonic() - started,
    }
    _save(args.out, result)
    _print(result)


def _without_frames(side: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in side.items() if key != "frames"}


def _save(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str))


def _print(result: dict[str, Any]) -> None:
    if not result["gpu_measured"]:
        print("GPU NUMBERS WERE NOT MEASURED: this is the CPU smoke run (--tiny) of the same code path.")
    print(f"{result['mode']} on {result['device']}, {result['shape']}")
    print(f"{'':16}{'video s':>10}{'UNet step s':>13}{'VAE decode s':>14}{'peak GB':>9}  dtype / options")
    for name in ("plain_diffusers", "engine"):
        row = result[name]
        peak = f"{row['peak_memory_gb']:.2f}" if row["peak_memory_gb"] is not None else "-"
        step = f"{row['unet_step_s']:.4f}" if row["unet_step_s"] is not None else "-"
        print(
            f"{name:16}{row['video_s']:10.3f}{step:>13}{row['vae_decode_s']:14.3f}{peak:>9}  {row['dtype']} / {row['options']}"
        )
    if result["engine"].get("note"):
        print(f"note: {result['engine']['note']}")
    diff = result["difference"]
    print(
        f"speedup {result['speedup']:.2f}x; output difference: relative L2 {diff['relative_l2']:.4f}, "
        f"max {diff['max_abs_levels']:.0f}/255, mean {diff['mean_abs_levels']:.2f}/255; total {result['total_s']:.0f} s"
    )


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _empty_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
