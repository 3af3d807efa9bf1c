"""What the batching deployments (VideoAnimator, KeyframePainter) share: live settings, and failing alone."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel, Field

logger = logging.getLogger("ray.serve")

T = TypeVar("T")
R = TypeVar("R")


class BatchSettings(BaseModel):
    """`user_config` of a batching deployment: tunable live with `serve deploy`, no replica restart."""

    max_batch_size: int = Field(
        4,
        ge=1,
        le=16,
        description="Most requests per pipeline call. Bigger batches use the GPU better and "
        "need memory for each item's latents and activations.",
    )
    batch_wait_timeout_s: float = Field(
        0.2, ge=0, le=10, description="How long a first request waits for others to join its batch."
    )


def apply_batch_settings(batched_method: Any, user_config: dict) -> None:
    """Set a `@serve.batch` method's size and wait from a `user_config` (validated as `BatchSettings`)."""
    settings = BatchSettings.model_validate(user_config)
    batched_method.set_max_batch_size(settings.max_batch_size)
    batched_method.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)


async def run_batch(
    run: Callable[[list[T]], Awaitable[list[R]]],
    items: list[T],
    keep: tuple[type[Exception], ...] = (),
) -> list[R | Exception]:
    """``await run(items)``; if that raises, run each item alone, so one bad item fails only itself.

    Args:
        run: makes the results of a list of items, in order.
        items: the batch.
        keep: exceptions that concern the whole batch (a cancel): raised as they are, not retried.

    Returns:
        One result per item, or the exception that item raised on its own.
    """
    try:
        return list(await run(items))
    except keep:
        raise
    except Exception as exc:  # noqa: BLE001 - each item gets its own outcome below
        if len(items) == 1:
            return [exc]
        logger.warning("Batch of %d failed (%s); running its items one by one", len(items), exc)
    outcomes: list[R | Exception] = []
    for item in items:
        try:
            outcomes.append((await run([item]))[0])
        except Exception as exc:  # noqa: BLE001 - returned to that item's caller alone
            outcomes.append(exc)
    return outcomes
