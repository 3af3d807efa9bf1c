"""JobBoard: the few facts the ingress and the generators share while a job runs.

Cancel flags flow from the ingress to SVD replicas (checked at every denoising step), step progress
flows back. It lives in memory: a lost board loses only progress detail, never a job (the job store
holds every job's status, and a cancelled job stays cancelled there).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ray import serve

# A cancel flag must outlast the batch it stops (SVD's graceful shutdown allows 15 minutes), and then go.
CANCEL_KEPT_S = 3600.0


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000)
class JobBoard:
    """Cancel flags (kept ``CANCEL_KEPT_S``) and step progress (until the job's runner stops).

    Args:
        clock: seconds, monotonic; tests pass their own.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cancelled: dict[str, float] = {}  # job id -> when it was cancelled
        self._progress: dict[str, tuple[int, int]] = {}

    async def cancel(self, job_id: str) -> None:
        now = self._clock()
        self._cancelled = {job: at for job, at in self._cancelled.items() if now - at < CANCEL_KEPT_S}
        self._cancelled[job_id] = now

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
        """Drop a job's progress: its runner has stopped. A cancel flag stays, to stop a batch still running."""
        for key in [key for key in self._progress if key.startswith(f"{job_id}:")]:
            del self._progress[key]

    async def size(self) -> dict[str, int]:
        """How many entries the board holds (the soak benchmark and tests watch it stay bounded)."""
        return {"cancelled": len(self._cancelled), "progress": len(self._progress)}
