"""The benchmark job, and the same job with the engines called directly in this process (no Ray, no HTTP).

The in-process side encodes and stitches with the Encoder deployment's own class, built without Ray (as
the in-process tests do), so both sides do the same media work by construction.

Both sides use one `AppConfig` with the tiny random-weight models (the real diffusers classes) on CPU and
the template scene writer, so the only difference between them is the service: HTTP, the job store,
Ray Serve's handles and batching, and the replicas' processes.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from core.files import JobFiles
from deployments.encoder import Encoder
from engines.fallback import animate_scenes, paint_keyframes
from engines.painter import PainterEngine, PaintRequest
from engines.svd import SceneRequest, SVDEngine
from engines.tiny_models import TINY_SVD_SETTINGS, build_tiny_painter, build_tiny_svd
from engines.writer import ScriptWriter
from serve_app.config import AppConfig
from serve_app.planning import plan_job
from serve_app.protocol import CreateVideoRequest

# The id the in-process job's files go under (the Encoder lays out files by job id, as in the service).
LOCAL_JOB_ID = "video_" + "0" * 32
# The benchmark job: four scenes of one second; SVD runs at 64x64 (8 frames, 2 steps), the video is 128x128.
JOB: dict[str, Any] = {
    "prompt": "A fox runs through snow. It finds a lantern. The lantern glows. Dawn breaks over the hills.",
    "num_scenes": 4,
    "seconds": 4,
    "size": "128x128",
    "seed": 7,
}


def build_models(folder: Path) -> dict[str, Path]:
    """Build the tiny SVD and keyframe painter under ``folder`` (seconds; deterministic weights)."""
    return {"svd": build_tiny_svd(folder / "svd"), "painter": build_tiny_painter(folder / "painter")}


def app_config(models: dict[str, Path], storage: Path, concurrent_jobs: int = 8) -> AppConfig:
    """The application config both sides run: tiny models on CPU, `fallback: never` (a model must run)."""
    return AppConfig.model_validate(
        {
            "fallback": "never",
            "video": {
                "model_path": str(models["svd"]),
                **TINY_SVD_SETTINGS,
                # Without this a replica with a fraction of a CPU runs torch on one thread (Ray sets
                # OMP_NUM_THREADS=1), while the in-process side uses both cores.
                "cpu_threads": 2,
            },
            "painter": {
                "model_path": str(models["painter"]),
                "device": "cpu",
                "width": 64,
                "height": 64,
                "cpu_threads": 2,
            },
            "writer": {"backend": "template"},
            "limits": {"max_frames_per_scene": 8},
            "jobs": {"max_concurrent_jobs": concurrent_jobs},
            "storage": {"root": str(storage)},
        }
    )


class InProcessJob:
    """The service's job, step for step, with the engines called directly (the reference for overhead).

    Args:
        config: the application config (the one the service runs).
        workdir: where the clips and the final video go; emptied before each run.
    """

    def __init__(self, config: AppConfig, workdir: Path) -> None:
        self.config = config
        self.workdir = workdir
        self.writer = ScriptWriter(config.writer)
        self.painter = PainterEngine(config.painter)
        self.svd = SVDEngine(config.video)
        self.encoder = Encoder.func_or_class(config.video_processing, str(workdir))
        self.painter.load()
        self.svd.load()

    def run(self, body: dict[str, Any] = JOB) -> Path:
        """Make the video of ``body`` (a POST /v1/videos body) and return the final MP4's path."""
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir.mkdir(parents=True)
        request = CreateVideoRequest.model_validate(body)
        plan = plan_job(request, self.config, seed=body["seed"])
        width, height = plan.generation_size
        policy = self.config.fallback

        # 1. Write the script.
        script = self.writer.write(request.prompt, plan.num_scenes, None, request.style)
        # 2. Paint all keyframes in one batched call (what the painter's @serve.batch achieves at best).
        paint = [
            PaintRequest(scene.visual_prompt, width, height, plan.seed + i)
            for i, scene in enumerate(script.scenes)
        ]
        keyframes = [result.image for result in paint_keyframes(self.painter, paint, policy)]
        # 3. Animate all scenes in one batched SVD call (what @serve.batch achieves at best).
        frames = plan.frames_for(plan.seconds / len(script.scenes), self.config.limits.max_frames_per_scene)
        requests = [
            SceneRequest(
                image=keyframe,
                seed=plan.seed + i,
                width=width,
                height=height,
                num_frames=frames,
                num_inference_steps=plan.steps,
                fps=plan.fps,
                motion_bucket_id=scene.motion_bucket_id
                if request.motion_bucket_id is None
                else request.motion_bucket_id,
                noise_aug_strength=request.noise_aug_strength,
            )
            for i, (scene, keyframe) in enumerate(zip(script.scenes, keyframes, strict=True))
        ]
        captions = [scene.caption for scene in script.scenes]
        results = animate_scenes(self.svd, requests, captions, policy, self.config.video)
        # 4. Encode each scene's clip, then 5. stitch and write the extras: the Encoder's own steps.
        JobFiles(self.encoder.storage_root, LOCAL_JOB_ID).folder.mkdir(parents=True, exist_ok=True)
        for i, result in enumerate(results):
            self.encoder._encode_scene(LOCAL_JOB_ID, i, result, plan.fps)
        final = self.encoder._finish(LOCAL_JOB_ID, captions, plan.size, request.captions)
        return Path(final.video)
