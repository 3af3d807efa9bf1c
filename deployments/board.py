"""JobBoard: the few facts the ingress and the generators share while a job runs.

Cancel flags flow from the ingress to SVD replicas (checked at every denoising step), step progress
flows back. It lives in memory: a lost board loses only progress detail, never a job (the job store
holds every job's status, and a cancelled job stays cancelled there).
"""

from __future__ import annotations

from ray import serve


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000)
class JobBoard:
    def __init__(self) -> None:
        self._cancelled: set[str] = set()
        self._progress: dict[str, tuple[int, int]] = {}

    async def cancel(self, job_id: str) -> None:
        self._cancelled.add(job_id)

    async def cancelled(self, job_ids: list[str]) -> list[str]:
        """Which of ``job_ids`` have been cancelled."""
        return [job_id for job_id in job_ids if job_id in self._cancelled]

    async def report(self, keys: list[str], step: int, total: int) -> None:
        """Record that the scenes ``keys`` ('job_id:index') finished denoising step ``step`` of ``total``."""
        for key in keys:
            self._progress[key] = (step, total)

    async def progress(self, key: str) -> tuple[int, int] | None:
        return self._progress.get(key)

    async def forget(self, job_id: str) -> None:
        """Drop everything about a finished job."""
        self._cancelled.discard(job_id)
        for key in [key for key in self._progress if key.startswith(f"{job_id}:")]:
            del self._progress[key]
