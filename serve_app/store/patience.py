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
from typing import Any

from core.errors import StoreUnavailable
from core.patience import patiently

logger = logging.getLogger("ray.serve")


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
        def waiting_out_outages(*args: Any, **kwargs: Any) -> Any:
            answer = patiently(
                lambda: attribute(*args, **kwargs), (StoreUnavailable,), self._patience_s, self._outage
            )
            if self._waiting:
                logger.info("job store reachable again")
                self._waiting = False
            return answer

        return waiting_out_outages

    def _outage(self, error: BaseException) -> None:
        if not self._waiting:
            logger.warning("job store unreachable (%s); waiting for it", error)
            self._waiting = True
