"""One worker thread per model, for its blocking pipeline calls.

PyTorch on the CPU parallelises each op with an OpenMP team, and a team belongs to the thread that calls.
`asyncio.to_thread` hands successive calls to whichever pool thread is free, so a replica soon holds
several teams; once their threads outnumber the cores, libgomp stops spin-waiting between ops and every op
pays a wake-up. Measured here (2 cores, the tiny SVD, one scene): 0.10 s a call from one thread, 0.16 s
once a second thread has run the model, and 0.175 s from one thread with OMP_WAIT_POLICY=PASSIVE. A model's calls are serialised by its engine's lock anyway, so
one thread costs no concurrency.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class ModelThread:
    """Runs blocking calls, one at a time and always on the same thread, without blocking the event loop.

    Args:
        name: the thread's name prefix (shows in stack dumps and `py-spy`).
    """

    def __init__(self, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the model's thread; waits behind calls already queued."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    def shutdown(self) -> None:
        """Stop taking calls; the one running finishes on its own."""
        self._executor.shutdown(wait=False, cancel_futures=True)
