"""Waiting out an outage: an operation tried again, backing off, until it answers or a patience runs out.

The job runner's store (`serve_app.store.patience`) and the stages' object storage (`core.storage`) wait
alike; the call blocks its thread meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

FIRST_WAIT_S, LONGEST_WAIT_S = 0.25, 2.0  # between tries, doubling


def patiently(
    operation: Callable[[], T],
    errors: tuple[type[BaseException], ...],
    patience_s: float,
    waiting: Callable[[BaseException], None] | None = None,
) -> T:
    """``operation()``; on one of ``errors``, tried again after 0.25 s, the wait doubling to 2 s, while the
    next try would start within ``patience_s`` of the first; past that the last error is raised.
    ``waiting(error)`` is called once, before the first wait."""
    deadline = time.monotonic() + patience_s
    wait = FIRST_WAIT_S
    while True:
        try:
            return operation()
        except errors as exc:
            if time.monotonic() + wait > deadline:
                raise
            if wait == FIRST_WAIT_S and waiting is not None:
                waiting(exc)
            time.sleep(wait)
            wait = min(2 * wait, LONGEST_WAIT_S)
