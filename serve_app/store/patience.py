"""A job store that waits out an outage: for the runner, whose jobs must not fail because PostgreSQL
restarted under them.

Each call that meets `StoreUnavailable` is made again, backing off, until the store answers or
``patience_s`` has passed. A call made again is safe: an outage rolls its transaction back, and the
store's writes set values (a status, a lease, a scene's row) rather than add to them. Past the patience the
error stands: the runner's job is then left as it was, leased, and resumed from its last finished scene
once the store is back (its lease runs out, or this runner claims it again at its next poll).

The calls are blocking, like every store call, so a runner's event loop waits with them; jobs in flight
all need the store anyway. Keep the patience under the replica's health check timeout: the check runs on
that loop too.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

from core.errors import StoreUnavailable

logger = logging.getLogger("ray.serve")

FIRST_WAIT_S = 0.25
LONGEST_WAIT_S = 2.0


class PatientStore:
    """Wraps a `JobStore` (or anything with its methods): every method call waits out an outage of up to
    ``patience_s``; attributes other than methods pass through."""

    def __init__(self, store: Any, patience_s: float) -> None:
        self._store = store
        self._patience_s = patience_s
        self._waiting = False  # logs once per outage, not once per call

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if not callable(attribute):
            return attribute

        @functools.wraps(attribute)
        def patiently(*args: Any, **kwargs: Any) -> Any:
            deadline = time.monotonic() + self._patience_s
            wait = FIRST_WAIT_S
            while True:
                try:
                    answer = attribute(*args, **kwargs)
                except StoreUnavailable as exc:
                    if time.monotonic() + wait > deadline:
                        raise
                    if not self._waiting:
                        logger.warning("job store unreachable (%s); waiting for it", exc)
                        self._waiting = True
                    time.sleep(wait)
                    wait = min(2 * wait, LONGEST_WAIT_S)
                    continue
                if self._waiting:
                    logger.info("job store reachable again")
                    self._waiting = False
                return answer

        return patiently
