"""run_batch: a failing batch falls back to its items one by one, so one bad item fails only itself."""

from __future__ import annotations

import asyncio

import pytest

from core.errors import GenerationCancelled, InvalidInput
from deployments.batching import run_batch

pytestmark = pytest.mark.unit


def doubler(calls: list[list[int]]):
    async def run(items: list[int]) -> list[int]:
        calls.append(items)
        if any(item < 0 for item in items):
            raise InvalidInput("item", min(items), "must not be negative")
        return [item * 2 for item in items]

    return run


def test_a_good_batch_runs_once() -> None:
    calls: list[list[int]] = []

    assert asyncio.run(run_batch(doubler(calls), [1, 2, 3])) == [2, 4, 6]
    assert calls == [[1, 2, 3]]


def test_a_bad_item_fails_alone_and_the_others_still_get_results() -> None:
    calls: list[list[int]] = []

    outcomes = asyncio.run(run_batch(doubler(calls), [1, -5, 3]))

    assert outcomes[0] == 2 and outcomes[2] == 6
    assert isinstance(outcomes[1], InvalidInput) and outcomes[1].value == -5
    assert calls == [[1, -5, 3], [1], [-5], [3]]


def test_a_single_item_failure_is_returned_without_a_retry() -> None:
    calls: list[list[int]] = []

    [outcome] = asyncio.run(run_batch(doubler(calls), [-1]))

    assert isinstance(outcome, InvalidInput)
    assert calls == [[-1]]


def test_kept_exceptions_concern_the_whole_batch_and_are_raised() -> None:
    async def cancelled(items: list[int]) -> list[int]:
        raise GenerationCancelled("cancelled after denoising step 1 of 2")

    with pytest.raises(GenerationCancelled):
        asyncio.run(run_batch(cancelled, [1, 2], keep=(GenerationCancelled,)))
