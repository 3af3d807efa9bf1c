"""JobBoard: cancel flags, from the ingress to the animator replicas (checked at every denoising step).

It lives in memory: a lost board loses only the chance to stop a batch early, never a job (the job store
holds every job's status, and a cancelled job stays cancelled there). Step progress does not pass through
it: the animator streams it to the job runner.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ray import serve

# A flag must outlast the batch it stops (the animator's graceful shutdown allows 15 minutes), and then go:
# a batch that outlives a cancel by more has finished anyway.
CANCEL_KEPT_S = 3600.0


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000)
class JobBoard:
    """Cancel flags, each kept ``CANCEL_KEPT_S``.

    Args:
        clock: seconds, monotonic; tests pass their own.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cancelled: dict[str, float] = {}  # job id -> when it was cancelled

    async def cancel(self, job_id: str) -> None:
        now = self._clock()
        self._cancelled = {job: at for job, at in self._cancelled.items() if now - at < CANCEL_KEPT_S}
        self._cancelled[job_id] = now

    async def cancelled(self, job_ids: list[str]) -> list[str]:
        """Which of ``job_ids`` have been cancelled."""
        return [job_id for job_id in job_ids if job_id in self._cancelled]

    async def size(self) -> dict[str, int]:
        """How many flags the board holds (the soak benchmark and tests watch it stay bounded)."""
        return {"cancelled": len(self._cancelled)}
