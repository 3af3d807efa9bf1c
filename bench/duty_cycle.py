"""Whether the GPU waits: the share of wall time the video model is busy while jobs flow through the rest.

    python -m bench.duty_cycle [--in-flight 1 4 8] [--rounds N] [--step-s S] [--steps N] [--out PATH]
    python -m bench.duty_cycle --smoke   # 1 and 4 jobs in flight, one short round: checks that it runs

The video model is a stand-in (`HeldDevice`): each call holds its device for `step_s` per denoising step and
sleeps meanwhile, so it takes no CPU, as a GPU pipeline call leaves the CPU to the other stages. Everything
else is real and runs in this process as the service runs it: the recipe (`VideoRecipe`) under a
`JobWorker` over `LocalStages` (template writer, eSpeak NG narrator, the tiny keyframe painter on the CPU,
ffmpeg's encoder and stitch), with scenes batched as VideoAnimator batches them (4 within 0.2 s), and the
job store.

Per level of jobs in flight N: `rounds` x N jobs, N at a time (a job starts as soon as another ends). The
duty cycle is the model's busy time over the wall time from the first job's start to the last one's end;
the goal is 0.95 or more at 4 jobs in flight and more. Beside it, where the rest of the time went: the
process's and ffmpeg's CPU seconds, as a share of what the machine's cores could give over that time, and
each stage's wall seconds summed over the jobs (`stage_durations`, which overlap one another).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.pipeline import NoRunners
from core.status import JobStatus
from engines.video.base import CancelToken, ProgressCallback, SceneFrames, SceneRequest
from engines.video.config import SVDConfig
from serve_app.config import AppConfig
from serve_app.jobs.recipe import VideoRecipe
from serve_app.jobs.runner import JobWorker
from serve_app.jobs.stages import local_stages
from serve_app.protocol import CreateVideoRequest
from serve_app.store.jobs import JobStore
from serve_app.videos.objects import VideoObjects
from serve_app.videos.service import VideoService
from tests.support.tiny_models import build_tiny_painter

OUT = Path(__file__).parent / "out"
GOAL = 0.95  # at 4 jobs in flight and more

# A story of four narrated scenes at the CPU profile's small size: the work around the model is real.
JOB: dict[str, Any] = {
    "prompt": "A fox runs through snow. It finds a lantern. The lantern glows. Dawn breaks over the hills.",
    "num_scenes": 4,
    "seconds": 8,
    "size": "256x144",
    "seed": 7,
}


class HeldDevice:
    """A stand-in video model: a call holds the one device for ``step_s`` per step, sleeping (no CPU), then
    returns grey frames of each request's size. Calls run one at a time, as on one GPU.

    Args:
        config: the `video` section (sizes, frames and steps a request leaves out).
        step_s: seconds per denoising step, whatever the batch's size.
    """

    def __init__(self, config: SVDConfig, step_s: float) -> None:
        self.config = config
        self.step_s = step_s
        self.placement = None  # no CUDA device: no peak memory to read
        self.busy_s = 0.0
        self.calls = 0
        self._device = threading.Lock()

    def load(self) -> None:
        pass

    def unload(self) -> None:
        pass

    def generate(
        self,
        requests: Sequence[SceneRequest],
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> list[SceneFrames]:
        steps = requests[0].num_inference_steps or self.config.num_inference_steps
        with self._device:
            started = time.perf_counter()
            for step in range(1, steps + 1):
                time.sleep(self.step_s)
                if progress is not None:
                    progress(step, steps)
            seconds = time.perf_counter() - started
            self.busy_s += seconds
            self.calls += 1
        return [self._frames(request, seconds, len(requests)) for request in requests]

    def _frames(self, request: SceneRequest, seconds: float, batch: int) -> SceneFrames:
        shape = (
            request.num_frames or self.config.num_frames,
            request.height or self.config.height,
            request.width or self.config.width,
            3,
        )
        return SceneFrames(np.full(shape, 128, np.uint8), request.seed or 0, seconds, batch, "svd")


def app_config(painter: Path, storage: Path, in_flight: int) -> AppConfig:
    """Real stages but the model: `fallback: never`, so a painter or narrator that fails fails the run."""
    return AppConfig.model_validate(
        {
            "fallback": "never",
            # The model itself is the stand-in (`local_stages(video_model=...)`); these size its scenes.
            "video": {"device": "cpu", "width": 256, "height": 144, "num_frames": 14, "fps": 7},
            "painter": {"model_path": str(painter), "device": "cpu", "width": 64, "height": 64},
            "writer": {"backend": "template"},
            "video_processing": {"preset": "ultrafast"},
            "jobs": {"max_concurrent_jobs": in_flight},
            "storage": {"root": str(storage)},
        }
    )


async def run_level(
    config: AppConfig, step_s: float, steps: int, jobs: int, in_flight: int
) -> dict[str, Any]:
    """``jobs`` jobs, ``in_flight`` at a time, through the real recipe around a `HeldDevice`."""
    device = HeldDevice(config.video, step_s)
    stages = local_stages(config, video_model=device)
    store = JobStore(config.storage.database_path)
    try:
        service = VideoService(config, store, NoRunners())
        worker = JobWorker(config, store, VideoRecipe(config, store, stages))
        body = CreateVideoRequest.model_validate(JOB | {"num_inference_steps": steps})
        slots = asyncio.Semaphore(in_flight)

        async def one() -> str:
            async with slots:
                video = await service.create(body, None, None)
                await worker.run(video.id)
                return video.id

        cpu, children = time.process_time(), _children_cpu()
        started = time.perf_counter()
        ids = await asyncio.gather(*(one() for _ in range(jobs)))
        wall = time.perf_counter() - started
        cpu, children = time.process_time() - cpu, _children_cpu() - children
        videos = [VideoObjects(config, store).retrieve(video_id) for video_id in ids]
    finally:
        store.close()
    failed = [video.id for video in videos if video.status != JobStatus.COMPLETED]
    if failed:
        raise RuntimeError(f"jobs did not complete: {failed}")
    stages_s: dict[str, float] = {}
    for video in videos:
        for stage, seconds in (video.stage_durations or {}).items():
            stages_s[stage] = round(stages_s.get(stage, 0.0) + seconds, 3)
    cores = os.cpu_count() or 1
    return {
        "in_flight": in_flight,
        "jobs": jobs,
        "wall_s": round(wall, 3),
        "busy_s": round(device.busy_s, 3),
        "duty_cycle": device.busy_s / wall,
        "model_calls": device.calls,
        "process_cpu_s": round(cpu, 3),
        "ffmpeg_cpu_s": round(children, 3),
        "cpu_share": (cpu + children) / (wall * cores),
        "stage_wall_s": stages_s,
    }


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(
    in_flight: Sequence[int], rounds: int, step_s: float, steps: int, workdir: Path
) -> dict[str, Any]:
    painter = build_tiny_painter(workdir / "painter")
    levels = []
    for n in in_flight:
        storage = workdir / f"storage-{n}"
        config = app_config(painter, storage, n)
        levels.append(asyncio.run(run_level(config, step_s, steps, rounds * n, n)))
    return {
        "step_s": step_s,
        "steps": steps,
        "rounds": rounds,
        "cores": os.cpu_count(),
        "goal": GOAL,
        "levels": {str(level["in_flight"]): level for level in levels},
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--in-flight", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--rounds", type=int, default=3, help="jobs per level: this times the jobs in flight")
    parser.add_argument("--step-s", type=float, default=0.5, help="seconds the stand-in holds per step")
    parser.add_argument("--steps", type=int, default=8, help="denoising steps per scene")
    parser.add_argument("--smoke", action="store_true", help="1 and 4 in flight, one round of short steps")
    parser.add_argument("--out", type=Path, default=OUT / "duty_cycle.json")
    args = parser.parse_args(argv)
    if args.smoke:
        args.in_flight, args.rounds, args.step_s, args.steps = [1, 4], 1, 0.05, 2
    with tempfile.TemporaryDirectory() as workdir:
        result = measure(args.in_flight, args.rounds, args.step_s, args.steps, Path(workdir))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    for level in result["levels"].values():
        print(
            f"{level['in_flight']} in flight: duty cycle {level['duty_cycle']:.3f} "
            f"({level['busy_s']:.1f} s busy of {level['wall_s']:.1f} s, {level['model_calls']} calls), "
            f"CPU {level['cpu_share']:.0%} of {result['cores']} cores"
        )
    return result


if __name__ == "__main__":
    main()
