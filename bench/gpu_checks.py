"""Questions about the GPU path that only a GPU answers, on the tiny models: each check prints what it finds.

    python -m bench.gpu_checks --check NAME [--out DIR]    # one check (bench/device_check.sh runs each
                                                          # in a process of its own, under its own timeout)
    python -m bench.gpu_checks --list                     # the checks' names

Without CUDA a check runs what the CPU can and says what it skipped, so the script is tried here too. A
check reports; it does not pass or fail (the gpu-marked tests do that). Each writes DIR/NAME.json.

- dtypes: what `dtype: auto` loads each family's components in, and whether a call makes finite frames.
- experts: Wan 2.2 A14B's two experts under fp8_weights, group_offload and torch_compile: storage
  dtypes, hooks, where the weights sit between calls, memory held.
- park: the step loop with cpu_offload: where each sub-model sits once the loop has run out of scenes.
- memory: the step loop's admission on the real device: driver free, reserved and allocated memory, the
  cost per scene and per decode it learned, the peak the gpu_memory metric reports.
- compile_wan / compile_svd: each engine's torch.compile over changing batch sizes, sizes and (step loop)
  row counts: graphs compiled, recompile-limit hits, whether the engine dropped to uncompiled, seconds.
  Wan's mode is forced to "default" (dynamo's guards and recompiles are the same; max-autotune would spend
  the check's minutes autotuning); SVD runs its own (reduce-overhead, fullgraph).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

OUT = Path(__file__).parent / "out" / "checks"
CUDA = torch.cuda.is_available()


def check_dtypes(models: Path) -> dict[str, Any]:
    from tests.support.tiny_models import TINY_LTX_SETTINGS, TINY_SVD_SETTINGS, TINY_WAN_SETTINGS

    found: dict[str, Any] = {}
    settings = {"svd": TINY_SVD_SETTINGS, "ltx": TINY_LTX_SETTINGS, "wan": TINY_WAN_SETTINGS}
    for family, tiny in settings.items():
        engine = _engine(family, models, **tiny)
        made = engine.generate([_scene(family, seed=1)])[0]
        components = {
            name: str(module.dtype).removeprefix("torch.")
            for name, module in engine._pipeline.components.items()
            if isinstance(module, torch.nn.Module)
        }
        found[family] = {"components": components, "frames_finite_and_varied": bool(made.frames.std() > 0)}
        _say("dtypes", f"{family}: {components}; frames vary: {found[family]['frames_finite_and_varied']}")
        engine.unload()
    return found


def check_experts(models: Path) -> dict[str, Any]:
    from tests.support.tiny_models import TINY_WAN_SETTINGS

    found: dict[str, Any] = {}
    options = {"fp8_weights": True, "group_offload": True}
    engine = _engine("wan-a14b", models, **TINY_WAN_SETTINGS, **options)
    before = _allocated()
    engine.generate([_scene("wan", seed=2, steps=4)])
    for name in ("transformer", "transformer_2"):
        expert = getattr(engine._pipeline, name)
        found[name] = {
            "storage_dtypes": sorted({str(p.dtype).removeprefix("torch.") for p in expert.parameters()}),
            "hooks": sorted(_hooks(expert)),
            "weights_on": sorted({str(p.device) for p in expert.parameters()}),
        }
        _say("experts", f"{name} with {options}: {found[name]}")
    found["allocated_gb_after_call"] = _allocated()
    found["allocated_gb_before_call"] = before
    _say("experts", f"allocated {before} GB before the call, {found['allocated_gb_after_call']} GB after")
    engine.unload()
    compiled = _engine("wan-a14b", models, **TINY_WAN_SETTINGS, torch_compile=True)
    started = time.perf_counter()
    compiled.generate([_scene("wan", seed=2, steps=4)])
    found["compiled"] = {
        name: type(getattr(compiled._pipeline, name)).__name__ for name in ("transformer", "transformer_2")
    }
    found["compiled_call_s"] = round(time.perf_counter() - started, 1)
    _say("experts", f"torch_compile: {found['compiled']} ({found['compiled_call_s']} s, compile included)")
    return found


def check_park(models: Path) -> dict[str, Any]:
    from tests.support.tiny_models import TINY_WAN_SETTINGS

    if not CUDA:
        _say("park", "skipped: cpu_offload is CUDA-only")
        return {"skipped": "no CUDA"}
    loop = _engine("wan", models, **TINY_WAN_SETTINGS, cpu_offload=True, scheduling="step")
    loop.generate([_scene("wan", seed=3), _scene("wan", seed=4, steps=3)])
    deadline = time.monotonic() + 10
    while loop.active or loop.decoding:
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    time.sleep(0.5)  # the loop parks right after its last scene leaves
    where = {
        name: sorted({str(p.device) for p in module.parameters()})
        for name, module in loop.engine._pipeline.components.items()
        if isinstance(module, torch.nn.Module)
    }
    found = {"weights_on_when_idle": where, "allocated_gb_when_idle": _allocated()}
    _say("park", f"idle after two scenes: {where}; allocated {found['allocated_gb_when_idle']} GB")
    loop.unload()
    return found


def check_memory(models: Path) -> dict[str, Any]:
    from engines.video.memory import CudaMemory, peak_memory_allocated
    from tests.support.tiny_models import TINY_SVD_SETTINGS

    if not CUDA:
        _say("memory", "skipped: admission by memory is CUDA-only")
        return {"skipped": "no CUDA"}
    device = torch.device("cuda")
    probe = CudaMemory(device)
    gb = 2**30
    found: dict[str, Any] = {
        "at_start_gb": {
            "free": probe.free() / gb,
            "reserved": probe.reserved() / gb,
            "allocated": probe.allocated() / gb,
            "total": probe.total() / gb,
        }
    }
    loop = _engine("svd", models, **TINY_SVD_SETTINGS, scheduling="step")
    loop.generate([_scene("svd", seed=10 + i, steps=3) for i in range(4)])
    admission = loop._admission
    found["cost_per_scene_mb"] = {
        str(k): v / 2**20 for k, v in (admission.per_scene if admission else {}).items()
    }
    found["decode_cost_mb"] = admission.decode_cost / 2**20 if admission else None
    found["most_active"] = loop.stats.most_active
    found["peak_metric_gb"] = peak_memory_allocated(device) / gb
    found["torch_peak_since_last_reset_gb"] = torch.cuda.max_memory_allocated(device) / gb
    for key, value in found.items():
        _say("memory", f"{key}: {value}")
    loop.unload()
    return found


def check_compile_wan(models: Path) -> dict[str, Any]:
    from tests.support.tiny_models import TINY_WAN_SETTINGS

    if not CUDA:
        _say("compile_wan", "skipped: torch_compile is CUDA-only")
        return {"skipped": "no CUDA"}
    _force_compile_mode("default")
    found = _compile_run(
        "compile_wan",
        lambda **options: _engine("wan", models, **TINY_WAN_SETTINGS, torch_compile=True, **options),
        "wan",
        [(1, 64, 64, 9), (2, 64, 64, 9), (3, 64, 64, 9), (1, 96, 64, 9), (2, 64, 64, 13), (1, 64, 64, 9)],
    )
    return found


def check_compile_svd(models: Path) -> dict[str, Any]:
    from tests.support.tiny_models import TINY_SVD_SETTINGS

    if not CUDA:
        _say("compile_svd", "skipped: torch_compile is CUDA-only")
        return {"skipped": "no CUDA"}
    return _compile_run(
        "compile_svd",
        lambda **options: _engine("svd", models, **TINY_SVD_SETTINGS, torch_compile=True, **options),
        "svd",
        [(1, 64, 64, 8), (2, 64, 64, 8), (3, 64, 64, 8), (1, 64, 64, 14), (2, 96, 64, 8)],
    )


CHECKS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "dtypes": check_dtypes,
    "experts": check_experts,
    "park": check_park,
    "memory": check_memory,
    "compile_wan": check_compile_wan,
    "compile_svd": check_compile_svd,
}


# -- helpers -----------------------------------------------------------------------------------------------


def _compile_run(
    name: str, build: Callable[..., Any], family: str, calls: list[tuple[int, int, int, int]]
) -> dict[str, Any]:
    """Calls of (batch, width, height, frames) on a compiled engine, then a step loop whose row counts
    change as scenes join and leave; what dynamo did along the way."""
    from torch._dynamo.utils import counters

    limit_hits = _count_log("torch._dynamo", "recompile_limit")
    found: dict[str, Any] = {"calls": []}
    engine = build()
    for batch, width, height, frames in calls:
        started = time.perf_counter()
        requests = [_scene(family, seed=20 + i, size=(width, height), frames=frames) for i in range(batch)]
        engine.generate(requests)
        row = {
            "batch": batch,
            "size": f"{width}x{height}x{frames}",
            "s": round(time.perf_counter() - started, 1),
            "graphs": counters["stats"]["unique_graphs"],
            "limit_hits": limit_hits(),
            "still_compiled": bool(engine.runtime and engine.runtime.torch_compile),
        }
        found["calls"].append(row)
        _say(name, f"call {row}")
    engine.unload()
    torch._dynamo.reset()
    loop = build(scheduling="step")
    started = time.perf_counter()
    loop.generate([_scene(family, seed=40 + i, steps=2 + 2 * i) for i in range(3)])
    found["step_loop"] = {
        "s": round(time.perf_counter() - started, 1),
        "calls_by_scenes": dict(loop.stats.calls),
        "graphs": counters["stats"]["unique_graphs"],
        "limit_hits": limit_hits(),
        "still_compiled": bool(loop.engine.runtime and loop.engine.runtime.torch_compile),
    }
    _say(name, f"step loop {found['step_loop']}")
    loop.unload()
    return found


def _engine(kind: str, models: Path, **settings: Any) -> Any:
    from engines.video.families import build_video_engine
    from tests.support.tiny_models import build_tiny_ltx, build_tiny_svd, build_tiny_wan

    family = "wan" if kind == "wan-a14b" else kind
    folder = models / kind
    if not folder.exists():
        builders: dict[str, Callable[[Path], Path]] = {
            "svd": build_tiny_svd,
            "ltx": build_tiny_ltx,
            "wan": build_tiny_wan,
            "wan-a14b": lambda path: build_tiny_wan(path, two_experts=True),
        }
        builders[kind](folder)
    # `auto`: CUDA where there is one, so the same check runs (what it can) on a CPU.
    config = _config_class(family)(model_path=str(folder), **{**settings, "device": "auto"})
    engine = build_video_engine(config)
    engine.load()
    return engine


def _config_class(family: str) -> Any:
    from engines.video.config import LTXConfig, SVDConfig, WanConfig

    return {"svd": SVDConfig, "ltx": LTXConfig, "wan": WanConfig}[family]


def _scene(
    family: str, seed: int, steps: int = 2, size: tuple[int, int] = (64, 64), frames: int | None = None
) -> Any:
    from engines.video.base import SceneRequest

    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    text = {} if family == "svd" else {"prompt": f"scene {seed}"}
    return SceneRequest(
        image=Image.fromarray(pixels),
        seed=seed,
        num_inference_steps=steps,
        width=size[0],
        height=size[1],
        num_frames=frames,
        **text,
    )


def _force_compile_mode(mode: str) -> None:
    real = torch.compile

    def compile_in_mode(model: Any, **options: Any) -> Any:
        return real(model, **{**options, "mode": mode})

    torch.compile = compile_in_mode  # type: ignore[assignment]


def _count_log(logger: str, text: str) -> Callable[[], int]:
    """A counter of the records ``logger`` (and its children) emits that contain ``text``."""
    seen = [0]

    class Counter(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if text in record.getMessage():
                seen[0] += 1

    logging.getLogger(logger).addHandler(Counter())
    return lambda: seen[0]


def _hooks(module: torch.nn.Module) -> set[str]:
    return {
        hook
        for sub in module.modules()
        if hasattr(sub, "_diffusers_hook")
        for hook in sub._diffusers_hook.hooks
    }


def _allocated() -> float | None:
    return round(torch.cuda.memory_allocated() / 2**30, 3) if CUDA else None


def _say(check: str, line: str) -> None:
    print(f"[check {check}] {line}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", choices=sorted(CHECKS), help="the check to run")
    parser.add_argument("--list", action="store_true", help="print the checks' names and stop")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if args.list or not args.check:
        print(" ".join(CHECKS))
        return
    logging.basicConfig(level=logging.WARNING)
    _say(args.check, f"on {torch.cuda.get_device_name(0) if CUDA else 'cpu (no CUDA)'}")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu-checks-") as scratch:
        found = CHECKS[args.check](Path(scratch))
    found = {"check": args.check, "cuda": CUDA, "s": round(time.perf_counter() - started, 1), **found}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.check}.json").write_text(json.dumps(found, indent=2, default=str))
    _say(args.check, f"done in {found['s']} s")


if __name__ == "__main__":
    main()
