"""A cancel in a batch shared by several jobs (`BoardCancel` over the JobBoard's flags, `run_scenes`): the
call stops only once every job in it is cancelled. No Ray: a fake board answers as the JobBoard does."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from core.errors import GenerationCancelled
from deployments.animator import BoardCancel
from engines.stages.animate import SceneItem, run_scenes
from engines.video.base import SceneRequest
from engines.video.config import SVDConfig
from engines.video.svd.engine import SVDEngine
from tests.support.tiny_models import TINY_SVD_SETTINGS

pytestmark = pytest.mark.unit

STEPS = 2


class FakeBoard:
    """The JobBoard as `BoardCancel` reaches it (`board.cancelled.remote(job_ids).result(timeout_s=...)`),
    holding its cancel flags in a set and recording each question."""

    def __init__(self) -> None:
        self.flags: set[str] = set()
        self.questions: list[list[str]] = []
        self.cancelled = SimpleNamespace(remote=self._ask)

    def _ask(self, job_ids: list[str]) -> SimpleNamespace:
        self.questions.append(list(job_ids))
        answer = [job_id for job_id in job_ids if job_id in self.flags]
        return SimpleNamespace(result=lambda timeout_s: answer)


@pytest.fixture(scope="module")
def engine(tiny_svd_path: Path) -> SVDEngine:
    engine = SVDEngine(SVDConfig(model_path=str(tiny_svd_path), **TINY_SVD_SETTINGS))
    engine.load()
    return engine


@pytest.fixture
def board(monkeypatch: pytest.MonkeyPatch) -> FakeBoard:
    # Ask the board at every step, so what the call does follows the steps, not the clock.
    monkeypatch.setattr(BoardCancel, "CHECK_EVERY_S", 0.0)
    return FakeBoard()


def scene_of(job_id: str, seed: int, progress: Callable[[int, int], None]) -> SceneItem:
    pixels = np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    request = SceneRequest(image=Image.fromarray(pixels), seed=seed, num_inference_steps=STEPS)
    return SceneItem(request=request, text=f"scene of {job_id}", key=f"{job_id}:0", progress=progress)


def run_two_jobs(engine: SVDEngine, board: FakeBoard, cancel_at_step_1: set[str]) -> list[int]:
    """Run one scene of job "a" and one of job "b" in one call, cancelling ``cancel_at_step_1``'s jobs on the
    board as step 1 ends (as a user's DELETE would land mid-call); returns the steps job "a" saw."""
    steps: list[int] = []

    def progress_of_a(step: int, total: int) -> None:
        steps.append(step)
        if step == 1:
            board.flags |= cancel_at_step_1

    items = [scene_of("a", 1, progress_of_a), scene_of("b", 2, lambda step, total: None)]
    results = run_scenes(engine, items, "never", engine.config, BoardCancel(board, items))
    assert [result.batch_size for result in results] == [2, 2]
    assert [result.frames.shape for result in results] == [(8, 64, 64, 3)] * 2
    return steps


def test_one_job_cancelled_in_a_shared_batch_lets_the_call_finish_for_the_other(
    engine: SVDEngine, board: FakeBoard
) -> None:
    # As BoardCancel documents: the batch stops only when every job is cancelled; the cancelled job's scene
    # finishes with the other's and its runner discards it.
    steps = run_two_jobs(engine, board, cancel_at_step_1={"a"})

    assert steps == list(range(1, STEPS + 1))
    # The board was asked about both jobs after "a" was cancelled, and said "a" only.
    assert board.questions[-1] == ["a", "b"] and len(board.questions) >= STEPS


def test_every_job_cancelled_in_a_shared_batch_stops_the_call_at_the_next_step(
    engine: SVDEngine, board: FakeBoard
) -> None:
    with pytest.raises(GenerationCancelled, match=f"after denoising step 1 of {STEPS}"):
        run_two_jobs(engine, board, cancel_at_step_1={"a", "b"})
