"""JobProgress: a scene's change of stage is written at once; denoising steps at most four times a second per
job, the last value always written; the job's progress comes from its scenes' without reading them back."""

from __future__ import annotations

import asyncio
from typing import Any

from core.status import SceneStatus
from serve_app.jobs.progress import WRITE_INTERVAL_S, WRITE_SHARE, JobProgress
from serve_app.store.jobs import SceneRow


class CountingStore:
    """The one store method JobProgress calls, recording each call (a round trip)."""

    def __init__(self) -> None:
        self.writes: list[tuple[dict[int, dict[str, Any]], dict[str, Any]]] = []

    def record_progress(self, job_id: str, scenes: dict[int, dict[str, Any]], **job: Any) -> None:
        assert job_id == "video_a"
        self.writes.append((scenes, job))


def scenes(count: int) -> list[SceneRow]:
    return [SceneRow("video_a", idx, "caption", "prompt", 1.0, 127) for idx in range(count)]


def tracked(store: CountingStore, clock: list[float], count: int = 1) -> JobProgress:
    progress = JobProgress(store, "video_a", clock=lambda: clock[0])  # type: ignore[arg-type]
    progress.track(scenes(count))
    return progress


def test_steps_within_one_interval_give_one_write_and_the_last_value_always_lands():
    async def scenario() -> None:
        store, clock = CountingStore(), [100.0]
        progress = tracked(store, clock)
        progress.scene(0, SceneStatus.ANIMATING)
        assert len(store.writes) == 1
        for step in range(1, 21):  # twenty steps in 200 ms
            clock[0] += 0.01
            progress.step(0, 25 + step)
        assert len(store.writes) == 1  # none yet: the interval since the stage's write has not passed
        await asyncio.sleep(WRITE_INTERVAL_S + 0.05)  # the interval's end writes what waited
        assert len(store.writes) == 2
        assert store.writes[-1][0] == {0: {"progress": 45}}
        progress.scene(0, SceneStatus.ENCODING)  # a change of stage is written at once
        assert len(store.writes) == 3 and store.writes[-1][0][0]["status"] == SceneStatus.ENCODING
        progress.close()

    asyncio.run(scenario())


def test_a_change_of_stage_carries_the_steps_still_waiting_in_its_one_write():
    async def scenario() -> None:
        store, clock = CountingStore(), [100.0]
        progress = tracked(store, clock, count=2)
        progress.scene(0, SceneStatus.ANIMATING)
        for step in range(1, 6):
            clock[0] += 0.01
            progress.step(0, 25 + step)
            progress.step(1, 25 + step)
        progress.scene(0, SceneStatus.ENCODING)
        assert len(store.writes) == 2  # the stage's write, then one for all the steps and the new stage
        written, job = store.writes[-1]
        assert written == {0: {"progress": 85, "status": SceneStatus.ENCODING}, 1: {"progress": 30}}
        assert job == {"progress": int(WRITE_SHARE + 85 * (85 + 30) / 200)}
        await asyncio.sleep(WRITE_INTERVAL_S + 0.05)
        assert len(store.writes) == 2  # nothing waited any more: the timer is gone
        progress.close()

    asyncio.run(scenario())


def test_steps_spread_out_write_at_most_four_times_a_second():
    async def scenario() -> None:
        store, clock = CountingStore(), [100.0]
        progress = tracked(store, clock)
        progress.scene(0, SceneStatus.ANIMATING)
        for step in range(1, 101):  # a step every 20 ms for two seconds
            clock[0] += 0.02
            progress.step(0, 25 + step // 2)
        steps = len(store.writes) - 1
        assert 2 / WRITE_INTERVAL_S - 1 <= steps <= 2 / WRITE_INTERVAL_S
        progress.close()

    asyncio.run(scenario())


def test_the_job_is_the_mean_of_its_scenes_after_the_scripts_share():
    store, clock = CountingStore(), [0.0]
    progress = JobProgress(store, "video_a", clock=lambda: clock[0])  # type: ignore[arg-type]
    assert progress.job == WRITE_SHARE
    progress.track([*scenes(1), SceneRow("video_a", 1, "c", "p", 1.0, 127, progress=100)])
    assert progress.job == WRITE_SHARE + 85 // 2
