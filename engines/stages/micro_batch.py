"""MicroBatcher: Ray Serve's `@serve.batch` in one process, for the in-process stages and the benchmarks.

Its own module, without the stages' imports, so a benchmark can batch like a replica on a machine that has
only PyTorch and diffusers (bench/device_check.sh).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    """Gathers items that arrive within ``wait_s`` of the first (at most ``max_size``) into one call of
    ``run`` on a worker thread, one at a time, as ``@serve.batch`` does in a replica.

    Args:
        run: maps a list of items to one result per item (blocking; it runs off the event loop).
        max_size, wait_s: the batch's size and how long its first item waits for company.
    """

    def __init__(self, run: Callable[[list[T]], list[R]], max_size: int = 4, wait_s: float = 0.2) -> None:
        self.run = run
        self.max_size = max_size
        self.wait_s = wait_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._full = asyncio.Event()
        self._lock = asyncio.Lock()  # one call at a time, like a replica's single model thread

    def _bind(self) -> None:
        """Start afresh on a new event loop (a second ``asyncio.run`` over the same stages): asyncio's
        Event and Lock belong to the loop that first waited on them, and would fail on another."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop, self._waiting, self._full, self._lock = loop, [], asyncio.Event(), asyncio.Lock()

    async def submit(self, item: T) -> R:
        self._bind()
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if len(self._waiting) == 1:
            asyncio.get_running_loop().create_task(self._flush_after_wait())
        if len(self._waiting) >= self.max_size:
            self._full.set()
        return await future

    async def _flush_after_wait(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._full.wait(), self.wait_s)
        self._full.clear()
        batch, self._waiting = self._waiting[: self.max_size], self._waiting[self.max_size :]
        if self._waiting:
            asyncio.get_running_loop().create_task(self._flush_after_wait())
        async with self._lock:
            try:
                results = await asyncio.to_thread(self.run, [item for item, _ in batch])
            except Exception as exc:  # noqa: BLE001 - every caller of the batch hears it
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)


__all__ = ["MicroBatcher"]
