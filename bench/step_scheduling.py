"""Step-level scheduling against call-level batching, under scenes that arrive as a Poisson stream.

    python -m bench.step_scheduling [--rounds N] [--scenes N] [--steps N] [--out PATH]
    python -m bench.step_scheduling --smoke   # one round of 4 scenes at the near rate: checks that it runs

Both sides animate the same scenes with the same loaded engine, at the same arrival times:

- `call`: the animator deployment's `@serve.batch` in process (`engines.stages.micro_batch.MicroBatcher`): scenes that
  arrive within `batch_wait_timeout_s` (0.2 s, the deployment's default) of the first, at most
  `max_batch_size` of them, share one `generate` call on the model's one thread; a batch runs to its end.
- `step`: `engines.video.step_loop.StepScheduler` with `max_active_scenes` equal to that batch size (the same
  memory budget): each scene enters the loop on arrival and leaves when its own steps are done.

Three rates, as fractions of the `call` side's capacity measured first (a full batch's scenes over its
time): light (0.3), near capacity (0.9) and over capacity (1.5). Per run: mean and p90 latency (arrival to
frames) and throughput (scenes over the time from the first arrival to the last result). The rounds
alternate which side runs first; per rate the report gives the median of the per-round ratios
(step / call) with their spread. The goal at the near-capacity rate: p90 latency at most 0.7x `call`'s,
and throughput at least equal.

`--model xt` runs SVD-XT's layout (`bench/svd_xt_config`, random weights) on CUDA, for a lent GPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.timing import median, percentile
from engines.stages.micro_batch import MicroBatcher
from engines.video.base import SceneRequest
from engines.video.config import SVDConfig
from engines.video.step_loop import StepScheduler
from engines.video.svd.engine import SVDEngine
from tests.support.tiny_models import TINY_SVD_SETTINGS, build_tiny_svd

OUT = Path(__file__).parent / "out"
RATES = {"light": 0.3, "near": 0.9, "over": 1.5}
BATCH = 4  # max_batch_size of `call` and max_active_scenes of `step`
WAIT_S = 0.2  # VideoAnimator's batch_wait_timeout_s


def scene_requests(count: int, seed: int, size: tuple[int, int], steps: int) -> list[SceneRequest]:
    """``count`` scenes, each with its own keyframe, seed and motion (as a story's scenes have)."""
    rng = np.random.default_rng(seed)
    width, height = size
    return [
        SceneRequest(
            image=Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)),
            seed=int(rng.integers(2**31)),
            motion_bucket_id=int(rng.integers(20, 200)),
            num_inference_steps=steps,
        )
        for _ in range(count)
    ]


def arrivals(count: int, rate: float, seed: int) -> list[float]:
    """Poisson arrival times (seconds from the start) of ``count`` scenes at ``rate`` scenes a second."""
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, count)
    return [float(t) for t in np.cumsum(gaps) - gaps[0]]


class CallSide:
    """`@serve.batch` as the deployment runs it: batches formed in a wait window, one call at a time on
    the model's own thread."""

    def __init__(self, engine: SVDEngine) -> None:
        self.engine = engine
        self.model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="svd")

    def run(self, requests: list[SceneRequest]) -> list[Any]:
        return self.model_thread.submit(self.engine.generate, requests).result()

    async def animate_all(self, requests: list[SceneRequest], times: list[float]) -> list[float]:
        batcher: MicroBatcher[SceneRequest, Any] = MicroBatcher(
            lambda batch: self.run(batch), max_size=BATCH, wait_s=WAIT_S
        )
        return await _drive(batcher.submit, requests, times)


class StepSide:
    """The shared step loop, each scene calling it from its own thread as the deployment's callers do."""

    def __init__(self, engine: SVDEngine) -> None:
        self.loop = StepScheduler(engine, max_active=BATCH)

    async def animate_all(self, requests: list[SceneRequest], times: list[float]) -> list[float]:
        async def one(request: SceneRequest) -> Any:
            return await asyncio.to_thread(self.loop.generate, [request])

        return await _drive(one, requests, times)


async def _drive(animate: Any, requests: list[SceneRequest], times: list[float]) -> list[float]:
    """Start each scene at its arrival time; the latency of each (arrival to frames), and the run's end."""
    started = time.perf_counter()

    async def at(request: SceneRequest, offset: float) -> float:
        await asyncio.sleep(max(0.0, started + offset - time.perf_counter()))
        arrived = time.perf_counter()
        await animate(request)
        return time.perf_counter() - arrived

    latencies = await asyncio.gather(*(at(r, t) for r, t in zip(requests, times, strict=True)))
    return [*latencies, time.perf_counter() - started]


def summary(latencies: list[float], wall: float) -> dict[str, float]:
    return {
        "mean_s": sum(latencies) / len(latencies),
        "p90_s": percentile(latencies, 90),
        "throughput_per_s": len(latencies) / wall,
    }


def capacity(side: CallSide, requests: list[SceneRequest]) -> float:
    """Scenes a second the `call` side makes with full batches (the best of three)."""
    best = min(_timed(side.run, requests[:BATCH]) for _ in range(3))
    return BATCH / best


def _timed(fn: Any, *args: Any) -> float:
    started = time.perf_counter()
    fn(*args)
    return time.perf_counter() - started


def engine_for(model: str, folder: Path, steps: int) -> tuple[SVDEngine, tuple[int, int]]:
    if model == "tiny":
        path = build_tiny_svd(folder / "svd")
        config = SVDConfig(model_path=str(path), **{**TINY_SVD_SETTINGS, "num_inference_steps": steps})
        return SVDEngine(config), (config.width, config.height)
    from bench.gpu_svd import build_and_save, read_configs

    path = build_and_save(read_configs(tiny=False), folder / "svd-xt", "cuda")
    config = SVDConfig(model_path=str(path), device="cuda", num_inference_steps=steps, decode_chunk_size=8)
    return SVDEngine(config), (config.width, config.height)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per rate")
    parser.add_argument("--scenes", type=int, default=32, help="scenes per run (30+ for the issue's goal)")
    parser.add_argument("--steps", type=int, default=8, help="denoising steps per scene")
    parser.add_argument("--model", choices=("tiny", "xt"), default="tiny")
    parser.add_argument("--rates", nargs="+", choices=tuple(RATES), default=list(RATES))
    parser.add_argument("--out", type=Path, default=OUT / "step_scheduling.json")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="one round of 4 scenes, 2 steps, near capacity: checks that it runs",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds, args.scenes, args.steps, args.rates = 1, 4, 2, ["near"]

    with tempfile.TemporaryDirectory() as folder:
        engine, size = engine_for(args.model, Path(folder), args.steps)
        engine.load()
        sides = {"call": CallSide(engine), "step": StepSide(engine)}
        warm = scene_requests(BATCH, 0, size, args.steps)
        asyncio.run(sides["step"].animate_all(warm, [0.0] * BATCH))  # loads the loop's thread too
        scenes_per_s = capacity(sides["call"], warm)
        result: dict[str, Any] = {
            "model": args.model,
            "steps": args.steps,
            "scenes": args.scenes,
            "batch": BATCH,
            "wait_s": WAIT_S,
            "call_capacity_per_s": scenes_per_s,
            "load_at_start": os.getloadavg()[0],
            "rates": {},
        }
        for name in args.rates:
            rate = RATES[name] * scenes_per_s
            runs: dict[str, list[dict[str, float]]] = {"call": [], "step": []}
            for round_index in range(args.rounds):
                requests = scene_requests(args.scenes, 100 + round_index, size, args.steps)
                times = arrivals(args.scenes, rate, 200 + round_index)
                order = ["call", "step"] if round_index % 2 == 0 else ["step", "call"]
                for side in order:
                    *latencies, wall = asyncio.run(sides[side].animate_all(requests, times))
                    runs[side].append(summary(latencies, wall))
            result["rates"][name] = _compare(rate, runs)
            _print_rate(name, result["rates"][name])
        result["load_at_end"] = os.getloadavg()[0]
        sides["step"].loop.unload()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"call capacity {scenes_per_s:.2f} scenes/s; host load {result['load_at_start']:.1f} -> "
          f"{result['load_at_end']:.1f}; written to {args.out}")  # fmt: skip


def _compare(rate: float, runs: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    ratios: dict[str, list[float]] = {
        key: [s[key] / c[key] for s, c in zip(runs["step"], runs["call"], strict=True)]
        for key in ("mean_s", "p90_s", "throughput_per_s")
    }
    return {
        "rate_per_s": rate,
        "runs": runs,
        "ratio_median": {key: median(values) for key, values in ratios.items()},
        "ratio_spread": {key: [min(values), max(values)] for key, values in ratios.items()},
        "medians": {
            side: {key: median([run[key] for run in side_runs]) for key in side_runs[0]}
            for side, side_runs in runs.items()
        },
    }


def _print_rate(name: str, rate: dict[str, Any]) -> None:
    medians, ratio, spread = rate["medians"], rate["ratio_median"], rate["ratio_spread"]
    print(f"{name}: {rate['rate_per_s']:.2f} scenes/s")
    for side in ("call", "step"):
        m = medians[side]
        print(
            f"  {side}: mean {m['mean_s']:.3f} s  p90 {m['p90_s']:.3f} s  {m['throughput_per_s']:.2f} scenes/s"
        )
    for key in ("mean_s", "p90_s", "throughput_per_s"):
        low, high = spread[key]
        print(f"  step/call {key}: {ratio[key]:.3f} (spread {low:.3f}-{high:.3f})")


if __name__ == "__main__":
    main()
