"""The benchmark job, and the same job run in this process (no Ray, no HTTP) through the one recipe.

The in-process side stores the job in its own job store and runs `serve_app.jobs.recipe.VideoRecipe` over
`engines.stages.local.LocalStages` (which batches keyframes and scenes that arrive together, as the service's
deployments do), so both sides run the same steps on the same engines by construction.

Both sides use one `AppConfig` with the tiny random-weight models (the real diffusers classes) on CPU and
the template scene writer, so the only difference between them is the service: HTTP, Ray Serve's handles,
the replicas' processes and the runner's polling of the store.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

from core.files import JobFiles
from core.status import JobStatus, Variant
from serve_app.config import AppConfig
from serve_app.jobs.recipe import VideoRecipe
from serve_app.jobs.runner import JobWorker
from serve_app.jobs.stages import local_stages
from serve_app.protocol import CreateVideoRequest
from serve_app.store.jobs import JobStore
from serve_app.videos.service import VideoService
from tests.support.tiny_models import TINY_SVD_SETTINGS, build_tiny_painter, build_tiny_svd

# The benchmark job: four scenes of one second; SVD runs at 64x64 (8 frames, 2 steps), the video is 128x128.
JOB: dict[str, Any] = {
    "prompt": "A fox runs through snow. It finds a lantern. The lantern glows. Dawn breaks over the hills.",
    "num_scenes": 4,
    "seconds": 4,
    "size": "128x128",
    "seed": 7,
    # Silent: narration (milliseconds of eSpeak NG per scene) would stretch the scenes, not the overhead.
    "narration": False,
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
            "limits": {"max_frames_per_segment": 8},
            "jobs": {"max_concurrent_jobs": concurrent_jobs},
            "storage": {"root": str(storage)},
        }
    )


class InProcessJob:
    """The service's job, through the same recipe, with the stages in this process (the overhead reference).

    Args:
        config: the application config (the one the service runs); its storage root is replaced.
        workdir: where the job store, clips and final video go; emptied before each run.
    """

    def __init__(self, config: AppConfig, workdir: Path) -> None:
        self.workdir = workdir
        self.config = config.model_copy(deep=True)
        self.config.storage.root = str(workdir)
        self.config.storage.database = str(workdir / "jobs.sqlite3")
        self.stages = local_stages(self.config)  # loads the models once

    def run(self, body: dict[str, Any] = JOB) -> Path:
        """Make the video of ``body`` (a POST /v1/videos body) and return the final MP4's path."""
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir.mkdir(parents=True)
        return asyncio.run(self._run(body))

    async def _run(self, body: dict[str, Any]) -> Path:
        store = JobStore(self.config.storage.database_path)
        try:
            service = VideoService(self.config, store, NoRunners())
            video = await service.create(CreateVideoRequest.model_validate(body), None, None)
            worker = JobWorker(self.config, store, VideoRecipe(self.config, store, self.stages))
            await worker.run(video.id)
            job = store.get(video.id)
            if job is None or job.status != JobStatus.COMPLETED:
                raise RuntimeError(f"in-process job ended {job and job.status}: {job and job.error_message}")
            return JobFiles(self.config.storage.root, video.id).variant(Variant.VIDEO)
        finally:
            store.close()


class NoRunners:
    """The ingress's runner signals where each in-process job is run by hand, right after it is stored."""

    async def job_stored(self, job_id: str) -> None:
        pass

    async def job_stopped(self, job_id: str) -> None:
        pass
