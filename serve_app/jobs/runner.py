"""The job runner: claims jobs from the store by lease and runs the recipe, apart from the HTTP ingress.

``JobWorker`` is plain Python (tests drive it with in-process stages); the ``JobRunner`` deployment runs
one on each replica with Ray Serve handles, and autoscales on the jobs in flight and waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
import uuid
from typing import Any, cast

from ray import serve

from core import metrics
from core.errors import StoreUnavailable, TooManyAttempts
from core.files import JobFiles, job_folders
from core.status import JobStatus
from serve_app.config import AppConfig
from serve_app.jobs.recipe import VideoRecipe
from serve_app.jobs.stages import ServeStages
from serve_app.store.jobs import JobStore, now
from serve_app.store.patience import PatientStore
from serve_app.webhooks.dispatch import WebhookDispatcher

logger = logging.getLogger("ray.serve")

# A job folder without a row is left alone this long: a create writes the folder just before the row.
ORPHAN_GRACE_S = 600
# How often a runner asks the store whether each of its jobs is still its own and unfinished (a cancel or a
# DELETE from the ingress stops the job's work within this).
CHECK_S = 1.0
# How long each of a runner's store calls waits out an outage (`serve_app.store.patience`): under the
# runner's health check timeout, since the calls hold the replica's event loop.
STORE_PATIENCE_S = 45.0


class JobWorker:
    """Runs claimable jobs, ``jobs.max_concurrent_jobs`` at a time, each under a lease it renews.

    Args:
        config: the application config.
        store: the job store.
        recipe: makes one job's video.
    """

    def __init__(self, config: AppConfig, store: JobStore, recipe: VideoRecipe) -> None:
        self.config = config
        self.store = store
        self.recipe = recipe
        self.storage = config.storage.open()
        self.runner_id = f"runner-{uuid.uuid4().hex[:12]}"
        self.tasks: dict[str, asyncio.Task] = {}
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task | None = None
        self._swept_at = -math.inf
        self._orphans_checked_at = -math.inf
        self.webhooks = WebhookDispatcher(store, config.webhooks)  # sends the outbox's due events

    # -- taking jobs ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the loop that takes up jobs (once, on the running event loop)."""
        if self._loop_task is None:
            self._loop_task = asyncio.get_running_loop().create_task(self._forever(), name="job-worker")

    def wake(self) -> None:
        """Look for jobs now (a create just stored one) instead of at the next poll."""
        self._wake.set()

    @property
    def in_flight(self) -> int:
        return sum(1 for task in self.tasks.values() if not task.done())

    def poll(self) -> list[str]:
        """Start as many claimable jobs as there are free slots; the claim in ``run`` decides each race.

        Also start the webhook deliveries due (``serve_app.webhooks.dispatch``), and every
        ``jobs.sweep_seconds`` delete expired videos and folders without a job. Returns the ids of the jobs
        started.
        """
        free = self.config.jobs.max_concurrent_jobs - self.in_flight
        waiting = [job_id for job_id in self.store.claimable() if job_id not in self.tasks]
        started = waiting[: max(free, 0)]
        for job_id in started:
            task = asyncio.get_running_loop().create_task(self.run(job_id), name=job_id)
            self.tasks[job_id] = task
            task.add_done_callback(functools.partial(self._forget, job_id))
        self.webhooks.send_due()
        if time.monotonic() - self._swept_at >= self.config.jobs.sweep_seconds:
            self._swept_at = time.monotonic()
            self.sweep()
        return started

    def _forget(self, job_id: str, task: asyncio.Task) -> None:
        if self.tasks.get(job_id) is task:
            del self.tasks[job_id]
        self._wake.set()  # a slot is free

    async def _forever(self) -> None:
        while True:
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - a failed poll must not stop the next one
                logger.exception("job poll failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.jobs.poll_seconds)

    # -- running one job ------------------------------------------------------------------------

    async def run(self, job_id: str) -> bool:
        """Run (or resume) one job to a final status, holding its lease throughout.

        Returns False without doing anything when another live runner holds the job. A lost lease, a
        cancel or a DELETE stops the work within ``CHECK_S``.
        """
        lease_s = self.config.jobs.lease_seconds
        if not self.store.claim(job_id, self.runner_id, lease_s):
            return False
        heartbeat = asyncio.create_task(self._heartbeat(job_id, asyncio.current_task(), lease_s))
        metrics.get().queue_depth.set(self.store.counts().get(JobStatus.QUEUED, 0))
        try:
            job = self.store.get(job_id)
            max_attempts = self.config.jobs.max_attempts
            if job is not None and job.status not in (JobStatus.COMPLETED, JobStatus.FAILED):
                if job.attempts >= max_attempts:
                    # Started that often and never ended: its runner died each time. Another start would too.
                    self.recipe.fail(
                        job_id,
                        TooManyAttempts(
                            f"the job was started {job.attempts} times and its runner "
                            f"stopped each time (jobs.max_attempts={max_attempts})"
                        ),
                    )
                else:
                    await self.recipe(job_id)
        finally:
            heartbeat.cancel()
            # With the store away the lease stays: it runs out, or this runner claims the job again.
            with contextlib.suppress(StoreUnavailable):
                self.store.release(job_id, self.runner_id)
        return True

    async def _heartbeat(self, job_id: str, work: asyncio.Task | None, lease_s: float) -> None:
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(min(CHECK_S, lease_s / 3))
            try:
                if not self.store.is_running(job_id, self.runner_id):
                    logger.info(
                        "job %s ended, was deleted or was taken by another runner; stopping here", job_id
                    )
                    break
                if time.monotonic() - renewed >= lease_s / 3:
                    if not self.store.renew(job_id, self.runner_id, lease_s):
                        logger.warning("job %s: lease lost to another runner; stopping here", job_id)
                        break
                    renewed = time.monotonic()
            except StoreUnavailable:
                continue  # nobody can take the job while the store is away; ask again when it is back
        if work is not None:
            work.cancel()

    def release_all(self) -> None:
        """Give up every lease now (a replica shutting down), so another runner resumes the jobs at once."""
        for job_id in list(self.tasks):
            self.store.release(job_id, self.runner_id)

    # -- the sweep ------------------------------------------------------------------------------

    def sweep(self) -> None:
        """Delete expired videos and job folders without a job; report the job counts."""
        for job_id in self.store.expired(before=now(), retention_s=self.config.jobs.retention_seconds):
            self.store.delete(job_id)
            JobFiles(self.storage, job_id).remove()
            logger.info("job %s expired and was deleted", job_id)
        self._remove_orphans()
        self.store.prune_webhooks(before=now() - self.config.jobs.retention_seconds)
        gauge, counts = metrics.get().jobs, self.store.counts()
        for status in JobStatus:
            gauge.set(counts.get(status, 0), tags={"status": status})

    def _remove_orphans(self) -> None:
        """Remove job folders that have no row (a crash between folder and row, a write racing a DELETE).

        At most every tenth of ``ORPHAN_GRACE_S``: it lists every job folder, and orphans are rare.
        """
        if time.monotonic() - self._orphans_checked_at < ORPHAN_GRACE_S / 10:
            return
        self._orphans_checked_at = time.monotonic()
        cutoff = time.time() - ORPHAN_GRACE_S
        old = [job_id for job_id, modified in job_folders(self.storage).items() if modified < cutoff]
        for job_id in set(old) - self.store.existing(old):
            JobFiles(self.storage, job_id).remove()
            logger.info("removed job folder %s, which has no job", job_id)


def jobs_autoscaling_policy(ctx: Any) -> tuple[int, dict[str, Any]]:
    """Ray Serve autoscaling policy of JobRunner: enough replicas for the jobs in flight and waiting.

    Each replica reports its jobs in flight, the jobs waiting in the store and its slots
    (``record_autoscaling_stats``); the policy wants ceil((in flight + waiting) / slots) replicas.
    """
    metrics_by_name = ctx.aggregated_metrics or {}
    in_flight = sum(metrics_by_name.get("jobs_in_flight", {}).values())
    waiting = max(metrics_by_name.get("jobs_waiting", {}).values(), default=0)
    slots = max(metrics_by_name.get("slots", {}).values(), default=1) or 1
    wanted = math.ceil((in_flight + waiting) / slots) if metrics_by_name else ctx.current_num_replicas
    low, high = ctx.capacity_adjusted_min_replicas, ctx.capacity_adjusted_max_replicas
    return max(low, min(high, wanted)), {}


@serve.deployment(
    ray_actor_options={"num_cpus": 0.25},
    max_ongoing_requests=100,
    # Jobs are checkpointed per scene and their leases given back on shutdown, so another replica resumes
    # them at once: the runner need not outlast a generation.
    graceful_shutdown_timeout_s=30,
    # Its store calls wait out a store outage on its event loop, where the health check runs too: longer
    # than their patience (STORE_PATIENCE_S), so a runner waiting for PostgreSQL is not replaced meanwhile.
    health_check_timeout_s=60,
)
class JobRunner:
    """Takes jobs from the store and runs the recipe through the other deployments.

    Args:
        config: the application config.
        writer, narrator, painter, animator, encoder: handles of SceneWriter, Narrator, KeyframePainter,
            VideoAnimator, Encoder.
    """

    def __init__(
        self, config: AppConfig, writer: Any, narrator: Any, painter: Any, animator: Any, encoder: Any
    ) -> None:
        # A runner waits out a store outage (a PostgreSQL restart) instead of failing the jobs it holds.
        store = cast(JobStore, PatientStore(JobStore(config.storage.database_url), STORE_PATIENCE_S))
        self.stages = ServeStages(writer, narrator, painter, animator, encoder)
        self.worker = JobWorker(config, store, VideoRecipe(config, store, self.stages))

    async def check_health(self) -> None:
        # Health checks run on the replica's event loop as soon as it is up: the place to start taking jobs.
        self.worker.start()

    async def wake(self) -> None:
        """A job was just stored: look for it now."""
        self.worker.start()
        self.worker.wake()

    async def stats(self) -> dict[str, Any]:
        """This replica's runner: jobs in flight, the bytes it received from the stages and the stage calls it
        made again (stage -> count)."""
        return {
            "runner_id": self.worker.runner_id,
            "jobs_in_flight": self.worker.in_flight,
            "received_bytes": self.stages.received_bytes,
            "retries": dict(self.stages.retries),
        }

    def record_autoscaling_stats(self) -> dict[str, float]:
        waiting = self.worker.store.counts().get(JobStatus.QUEUED, 0)
        return {
            "jobs_in_flight": float(self.worker.in_flight),
            "jobs_waiting": float(waiting),
            "slots": float(self.worker.config.jobs.max_concurrent_jobs),
        }

    def __del__(self) -> None:
        self.worker.release_all()
