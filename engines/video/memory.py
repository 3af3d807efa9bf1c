"""Device memory for the step loop: what a step over n scenes of a shape costs, and whether the next one fits.

Apart from the loop (`engines.video.step_loop`) because it is the one part that reads the device: the loop
knows nothing of memory but `MemoryAdmission.allows` and `measure`, and a test gives it a fake probe.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch


class MemoryProbe(Protocol):
    """Device memory as the driver and torch's caching allocator report it (a stand-in in tests)."""

    def free(self) -> int:
        """Bytes the driver can still hand out, after every process on the device took its share."""
        ...

    def reserved(self) -> int:
        """Bytes this process's caching allocator holds, in use or cached for reuse."""
        ...

    def allocated(self) -> int:
        """Bytes of this process's live tensors."""
        ...

    def peak(self) -> int:
        """The most bytes allocated since `reset_peak`."""
        ...

    def reset_peak(self) -> None: ...

    def total(self) -> int: ...


class CudaMemory:
    """`MemoryProbe` over `torch.cuda` for one device."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def free(self) -> int:
        return int(torch.cuda.mem_get_info(self.device)[0])

    def reserved(self) -> int:
        return int(torch.cuda.memory_reserved(self.device))

    def allocated(self) -> int:
        return int(torch.cuda.memory_allocated(self.device))

    def peak(self) -> int:
        return int(torch.cuda.max_memory_allocated(self.device))

    def reset_peak(self) -> None:
        # torch keeps one peak per device for the whole process; keep what this reset erases, so the
        # replica's peak since it started (the `gpu_memory` metric) survives the loop's per-step resets.
        index = _index(self.device)
        _PEAK_BEFORE_RESETS[index] = max(_PEAK_BEFORE_RESETS.get(index, 0), self.peak())
        torch.cuda.reset_peak_memory_stats(self.device)

    def total(self) -> int:
        return int(torch.cuda.get_device_properties(self.device).total_memory)


_PEAK_BEFORE_RESETS: dict[int, int] = {}


def peak_memory_allocated(device: torch.device | None = None) -> int:
    """The most memory this process's tensors have held on ``device`` (default the current one) since it
    started, whatever the step loop reset in torch's peak counter meanwhile; 0 without CUDA."""
    if not torch.cuda.is_available():
        return 0
    index = _index(device)
    return max(_PEAK_BEFORE_RESETS.get(index, 0), int(torch.cuda.max_memory_allocated(index)))


def _index(device: torch.device | None) -> int:
    if device is not None and device.index is not None:
        return device.index
    return torch.cuda.current_device()


class MemoryAdmission:
    """Admits a scene while the next step of its shape fits the memory the device has left.

    Cost: the peak of a step over n scenes of one shape, less the memory allocated before it, divided by n,
    is that shape's cost per scene; the largest seen is kept. Only steps with no decode running beside them
    are measured: a decode's VAE work would be counted as the step's, and kept for the replica's life. A
    shape not measured yet is admitted alone, so its first step measures it. A decode that ran with no step
    beside it measures what a decode costs.

    Room: a step over k scenes of a shape, one of them new, needs cost x k. That must fit in what the driver
    has free (after every process on the device: another replica, the painter, the CUDA contexts) plus what
    this process's allocator holds unused, less a margin for fragmentation and less the largest decode
    seen (one may start beside the step); and what this process allocates must stay within its share.

    Args:
        probe: where memory is read from.
        fraction: the replica's share of the device's memory (`step_memory_fraction` x its `num_gpus`).
        margin: the share of the device's memory kept free besides (default 5%: 4 GB of an 80 GB GPU).
    """

    def __init__(self, probe: MemoryProbe, fraction: float, margin: float = 0.05) -> None:
        self.probe = probe
        self.budget = int(probe.total() * fraction)
        self.margin = int(probe.total() * margin)
        self.per_scene: dict[tuple[Any, ...], int] = {}
        self.decode_cost = 0

    def allows(self, shape: tuple[Any, ...], active_with_shape: int) -> bool:
        cost = self.per_scene.get(shape)
        if cost is None:
            return active_with_shape == 0
        need = cost * (active_with_shape + 1)
        allocated = self.probe.allocated()
        cached = max(0, self.probe.reserved() - allocated)
        room = self.probe.free() + cached - self.margin - self.decode_cost
        return need <= room and allocated + need <= self.budget

    def measure(
        self, shape: tuple[Any, ...], scenes: int, run: Callable[[], Any], learn: bool = True
    ) -> None:
        """Run ``run()`` (one step over ``scenes`` scenes of ``shape``) and, when ``learn`` (no decode ran
        beside it), record its cost per scene."""
        if not learn:
            run()
            return
        cost = self._transient(run) // max(scenes, 1)
        self.per_scene[shape] = max(cost, self.per_scene.get(shape, 0))

    def measure_decode(self, run: Callable[[], Any], alone: Callable[[], bool]) -> Any:
        """Run ``run()`` (one scene's decode) and return what it returns; record its cost when ``alone()``
        says afterwards that no step ran beside it."""
        result: list[Any] = []
        cost = self._transient(lambda: result.append(run()))
        if alone():
            self.decode_cost = max(self.decode_cost, cost)
        return result[0]

    def _transient(self, run: Callable[[], Any]) -> int:
        self.probe.reset_peak()
        before = self.probe.allocated()
        run()
        return max(0, self.probe.peak() - before)


def peak_reader(device: torch.device | None, window: bool) -> Callable[[], int | None]:
    """Start reading the peak memory of the model calls to come on ``device``: call what this returns after
    them for bytes, or None where ``device`` is not CUDA.

    Args:
        device: where the model runs (its placement), or None where it has none.
        window: measure only from now on (torch's peak counter is reset, the replica's own peak kept): only
            where no other call on the device runs meanwhile (`scheduling: call`, one pipeline call at a
            time). Else the replica's peak since it started (`scheduling: step`, whose scenes overlap).
    """
    if device is None or device.type != "cuda":
        return lambda: None
    if not window:
        return lambda: peak_memory_allocated(device)
    probe = CudaMemory(device)
    probe.reset_peak()
    return probe.peak


__all__ = ["CudaMemory", "MemoryAdmission", "MemoryProbe", "peak_memory_allocated", "peak_reader"]
