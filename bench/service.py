"""The service side of the benchmarks: the app on tiny models, deployed on the cluster the e2e tests use too
(`tests.support.cluster`), and HTTP clients that time it.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from bench.pipeline import app_config, build_models
from bench.timing import Sample, cpu_seconds
from core.status import TERMINAL, KeyframeSource
from engines.fallback import KeyframeResult
from engines.stages.protocols import Animated, AnimateRequest
from engines.video.base import SceneRequest
from serve_app.config import AppConfig
from tests.support.cluster import REPLICAS, cluster

APP = "bench"
POLL_S = 0.02
# The longest `set_animator_batch` waits for the app's jobs to end.
IDLE_TIMEOUT_S = 60.0


@dataclass
class TinyApp:
    """The app on tiny models, deployed on this process's cluster: a client for its API and what built it."""

    client: httpx.Client
    config: AppConfig
    base_url: str
    scratch: Path


# The app a `tiny_app()` block of this process deployed, while it is deployed.
_deployed: TinyApp | None = None


@contextmanager
def tiny_app(prefix: str) -> Iterator[TinyApp]:
    """Build the tiny models in a scratch folder, start the cluster, deploy the app; remove it all after.

    Inside another ``tiny_app()`` block of this process it yields that block's app: benchmarks run one after
    the other (their smoke tests) share one deploy, 20-30 s here.
    """
    global _deployed
    if _deployed is not None:
        yield _deployed
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as folder:
        scratch = Path(folder)
        config = app_config(build_models(scratch / "models"), scratch / "storage")
        with cluster() as base_url:
            try:
                _deployed = TinyApp(deploy(config, base_url), config, base_url, scratch)
                yield _deployed
            finally:
                _deployed = None
                undeploy(APP)


def deploy(config: AppConfig, base_url: str) -> httpx.Client:
    """Deploy the app under /bench; returns an HTTP client for its API."""
    from ray import serve

    from serve_app.app import bind_graph

    serve.run(bind_graph(config, REPLICAS), name=APP, route_prefix=f"/{APP}")
    return httpx.Client(base_url=f"{base_url}/{APP}", timeout=120)


def set_animator_batch(max_batch_size: int, batch_wait_timeout_s: float = 0.2) -> None:
    """Set the app's VideoAnimator batching live, once no job is running any more.

    The replica's `reconfigure` is called as Serve calls it on a `user_config` change; deploying a new
    `user_config` with `serve.run` would restart every replica of the app instead (a deploy from Python is
    always a new version), 20-30 s here. The app has one VideoAnimator and one JobRunner replica.
    """
    from ray import serve

    runner = serve.get_deployment_handle("JobRunner", app_name=APP)
    deadline = time.monotonic() + IDLE_TIMEOUT_S
    # A load test's cancelled jobs stop within a second or so; their scenes must not join the next batches.
    while runner.stats.remote().result()["jobs_in_flight"] and time.monotonic() < deadline:
        time.sleep(0.2)
    settings = {"max_batch_size": max_batch_size, "batch_wait_timeout_s": batch_wait_timeout_s}
    serve.get_deployment_handle("VideoAnimator", app_name=APP).reconfigure.remote(settings).result()


def undeploy(name: str) -> None:
    """Delete the application ``name`` and wait until its replicas have stopped.

    On a cluster that outlives the benchmark, replicas left running would go on reading the scratch folder
    (models, job store) that the benchmark removes next, and keep a CPU share of the next benchmark's.
    """
    from ray import serve

    serve.delete(name)


def run_job(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    """POST a job and follow its server-sent events until it ends; returns the final video object."""
    video_id, _ = post_job(client, body)
    return follow_job(client, video_id)


def post_job(client: httpx.Client, body: dict[str, Any]) -> tuple[str, str]:
    """POST a job; returns its id and Serve's request id (the job's calls log under the same id)."""
    response = client.post("/v1/videos", json=body)
    response.raise_for_status()
    return response.json()["id"], response.headers["x-request-id"]


def follow_job(client: httpx.Client, video_id: str) -> dict[str, Any]:
    """Follow a job's server-sent events until it ends; returns the final video object.

    The event stream reports the end as it is written, without the load and the granularity that polling
    would add to the very time being measured.
    """
    video: dict[str, Any] = {}
    with client.stream("GET", f"/v1/videos/{video_id}/events") as stream:
        for line in stream.iter_lines():
            if line.startswith("data: "):
                video = json.loads(line.removeprefix("data: "))
    if video.get("status") != "completed":
        raise RuntimeError(f"benchmark job {video_id} ended {video.get('status')}: {video.get('error')}")
    return video


def job_runner(client: httpx.Client, body: dict[str, Any]) -> Callable[[], Any]:
    """A no-argument callable that runs one job through HTTP (for `timing.interleaved`)."""
    return lambda: run_job(client, body)


def latency_under_load(
    client: httpx.Client, body: dict[str, Any], in_flight: int = 8, seconds: float = 40.0
) -> dict[str, Any]:
    """Status and create latency while ``in_flight`` jobs generate, for ``seconds``.

    One client keeps ``in_flight`` jobs running (a new POST whenever one ends) and polls each job's status
    in turn every 20 ms; every POST and every GET is one latency sample.
    """
    create_ms: list[float] = []
    status_ms: list[float] = []
    completed = 0

    def create() -> str:
        started = time.perf_counter()
        response = client.post("/v1/videos", json=body)
        create_ms.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        return response.json()["id"]

    running = [create() for _ in range(in_flight)]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for index, video_id in enumerate(running):
            started = time.perf_counter()
            video = client.get(f"/v1/videos/{video_id}").json()
            status_ms.append((time.perf_counter() - started) * 1000)
            if video["status"] in TERMINAL:
                completed += video["status"] == "completed"
                running[index] = create()
        time.sleep(POLL_S)
    for video_id in running:  # leave no work behind for the next measurement
        client.post(f"/v1/videos/{video_id}/cancel")
    return {"create_ms": create_ms, "status_ms": status_ms, "jobs_completed": completed}


def svd_throughput(scenes: int, rounds: int, width: int, height: int) -> dict[str, Any]:
    """Send ``scenes`` same-shape scenes (each its own motion) at once to VideoAnimator, ``rounds`` times.

    Scenes take the deployment's configured frames and steps; ``width`` x ``height`` must be its size.
    Returns the per-round samples and the batch sizes the replica reports for these rounds.
    """
    from ray import serve

    handle = serve.get_deployment_handle("VideoAnimator", app_name=APP)
    before = handle.stats.remote().result()["batch_sizes"]
    rng = np.random.default_rng(0)
    keyframe = KeyframeResult(
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)), KeyframeSource.PAINTER
    )
    # Like a story's scenes: one shape, each its own amount of motion; the animator takes the image from
    # the keyframe, as it does from the painter's response in a job.
    requests = [
        AnimateRequest(
            SceneRequest(image=None, seed=i, motion_bucket_id=60 + 40 * i), f"scene {i}", f"bench:{i}"
        )
        for i in range(scenes)
    ]
    samples: list[Sample] = []
    for _ in range(rounds):
        cpu_started, started = cpu_seconds(), time.perf_counter()
        # `animate` streams its progress: every call is sent before the first stream is read, so the scenes
        # arrive together and may share a batch.
        streams = [handle.animate.options(stream=True).remote(request, keyframe) for request in requests]
        for stream in streams:
            if not isinstance(list(stream)[-1], Animated):
                raise RuntimeError("VideoAnimator.animate's stream did not end with the animated scene")
        samples.append(Sample(wall=time.perf_counter() - started, cpu=cpu_seconds() - cpu_started))
    after = handle.stats.remote().result()["batch_sizes"]
    sizes = {int(size): count - before.get(size, 0) for size, count in after.items()}
    return {"samples": samples, "batch_sizes": {size: n for size, n in sizes.items() if n}}
