"""Small timing helpers shared by the benchmarks: a wall clock, medians and percentiles."""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Sample:
    """One timed run: wall-clock seconds, and CPU seconds of this process plus the children it waited for.

    CPU time barely moves when other work shares the machine, so it backs up a wall-clock ratio measured
    on a busy host.
    """

    wall: float
    cpu: float


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its finished, waited-for child processes."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Sample:
    """Time ``fn(*args, **kwargs)`` (its return value is dropped)."""
    cpu_started, started = cpu_seconds(), time.perf_counter()
    fn(*args, **kwargs)
    return Sample(wall=time.perf_counter() - started, cpu=cpu_seconds() - cpu_started)


def interleaved(
    variants: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1
) -> dict[str, list[Sample]]:
    """Time each variant ``repeats`` times, alternating A, B, A, B, ... after ``warmup`` untimed rounds.

    Alternating (rather than all A then all B) spreads any drift in machine load evenly over the
    variants, which matters on a machine shared with other work.
    """
    for _ in range(warmup):
        for run in variants.values():
            run()
    times: dict[str, list[Sample]] = {name: [] for name in variants}
    for round_index in range(repeats):
        # Swap the order every round so neither variant always runs on a cache warmed by the other.
        order = list(variants.items())
        if round_index % 2:
            order.reverse()
        for name, run in order:
            times[name].append(timed(run))
    return times


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation between the nearest ranks."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
