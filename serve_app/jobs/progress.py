"""A job's progress while its recipe runs: kept in this process, written to the store sparingly.

A job's progress is the mean of its scenes' (after the script's share). The recipe knows every scene's
progress itself, so it computes the job's here instead of reading the job back after each write, and a
scene's change and the job's new progress go to the store in one round trip. Denoising steps come many a
second per scene; their progress is coalesced to at most one write per ``WRITE_INTERVAL_S`` per job, the
last value always written (at the end of the interval, or with the scene's next change of stage).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from core.status import SceneStatus
from serve_app.store.jobs import JobStore, SceneRow

# How a job's progress splits between its steps, in percent.
WRITE_SHARE, SCENES_SHARE = 5, 85
# Where each scene stage starts, in percent of the scene.
STAGE_START = {
    SceneStatus.PAINTING: 5,
    SceneStatus.ANIMATING: 25,
    SceneStatus.ENCODING: 85,
    SceneStatus.COMPLETED: 100,
}
# Least time between two progress writes of one job (four a second): status polls and event streams see
# a step's progress within it, and a job of four scenes at twenty steps a second no longer writes eighty times.
WRITE_INTERVAL_S = 0.25


def animating(segments_done: float, segments: int) -> int:
    """A scene's progress while it animates, ``segments_done`` of its ``segments`` made."""
    low, high = STAGE_START[SceneStatus.ANIMATING], STAGE_START[SceneStatus.ENCODING]
    return int(low + (high - low) * segments_done / segments)


class JobProgress:
    """The progress of one job's scenes, and the job's, as the recipe moves them.

    Args:
        store: the job store written to.
        job_id: the job.
        interval_s: least time between two writes of denoising-step progress.
        clock: seconds, monotonic (a test passes a fake).
    """

    def __init__(
        self,
        store: JobStore,
        job_id: str,
        interval_s: float = WRITE_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.job_id = job_id
        self.interval_s = interval_s
        self.clock = clock
        self._scenes: dict[int, int] = {}
        self._pending: dict[int, dict[str, Any]] = {}
        self._written_at = -float("inf")
        self._timer: asyncio.TimerHandle | None = None

    def track(self, scenes: list[SceneRow]) -> None:
        """Start from the scenes as stored (a job that runs again keeps its scenes' progress)."""
        self._scenes = {scene.idx: scene.progress for scene in scenes}

    @property
    def job(self) -> int:
        """The job's progress, in percent, from its scenes'."""
        if not self._scenes:
            return WRITE_SHARE
        done = sum(self._scenes.values()) / (100 * len(self._scenes))
        return int(WRITE_SHARE + SCENES_SHARE * done)

    def scene(self, idx: int, status: SceneStatus, **changes: Any) -> None:
        """Move scene ``idx`` to ``status`` (its progress the stage's start unless given), written now with
        the job's progress and any step progress still waiting."""
        changes.setdefault("progress", STAGE_START[status])
        self._pending[idx] = {**self._pending.get(idx, {}), "status": status, **changes}
        self.flush()

    def step(self, idx: int, progress: int) -> None:
        """Scene ``idx`` reached ``progress`` within its stage: written now if the last write is
        ``interval_s`` old, else with the next write (one is due at the end of the interval)."""
        self._pending.setdefault(idx, {})["progress"] = progress
        wait = self._written_at + self.interval_s - self.clock()
        if wait <= 0:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(wait, self.flush)

    def flush(self) -> None:
        """Write what is waiting, in one round trip."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        for idx, changes in pending.items():
            self._scenes[idx] = changes["progress"]
        self.store.record_progress(self.job_id, pending, progress=self.job)
        self._written_at = self.clock()

    def close(self) -> None:
        """Stop: what waits is dropped (the job ended, or its run stopped; the next run starts over)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pending.clear()
