"""Step-level scheduling: scenes join and leave one running denoising loop at step boundaries.

`@serve.batch` (`video.scheduling: call`) batches only the scenes that arrive within its wait window, and a
batch runs to its end: a scene that arrives a second after a batch started waits for all of it, and a batch
whose scenes finish early leaves the model half used. Under `video.scheduling: step` the animator owns the
denoising loop instead. Each scene keeps its own latents, scheduler and conditioning (`SceneState`); every
step runs one model call over the active scenes that share a shape (several, where the family says one would
pass a kernel's limit on its batch), each with its own timestep, then every scene advances its own
scheduler. A scene that arrives joins at the next step boundary, and a scene whose steps are done leaves, is
decoded and is returned at once.

The family's `Stepper` (`engines.video.svd.steps`, `engines.video.wan.steps`) knows how to start, advance and finish a
scene; `StepScheduler` here knows nothing of models. It admits scenes in arrival order up to
`video.max_active_scenes` (and on CUDA only while the memory that the step peak measured per scene at that
shape needs is free on the device and within the replica's share of it: see `MemoryAdmission`), removes a
cancelled scene at the next step, reports each scene's steps as they happen, and splits a step that ran out
of memory (after which it keeps one scene fewer in the loop than it held then, for the rest of the
replica's life). When it runs out of scenes it parks a CPU-offloaded model, as a pipeline call does at its
end; when torch.compile gives up on the shapes it meets, the loop steps on with the uncompiled model.

`StepScheduler.generate` has the engine's signature, so the fallback, the deployment and the in-process
stages use it like any engine; a call blocks only its own caller, until its own scenes are done.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from core.errors import GenerationCancelled, ModelUnavailable
from engines.loading import Placement, cpu_threads, is_out_of_memory, is_recompile_limit, release_memory
from engines.video.base import CancelToken, ProgressCallback, SceneFrames, SceneRequest, VideoEngine
from engines.video.memory import CudaMemory, MemoryAdmission, MemoryProbe

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class SceneState:
    """One scene inside the loop: what every family keeps (each `Stepper` adds its conditioning).

    Args:
        item: the engine's resolved request (seed, size, steps, ...).
        scheduler: this scene's own copy of the pipeline's scheduler, with its timesteps set.
        latents: the scene's current latents (batch of one).
        step: denoising steps done so far.
        peers: the most scenes one of its model calls held (recorded as its `batch_size`).
    """

    item: Any
    scheduler: Any
    latents: torch.Tensor
    step: int = 0
    peers: int = 1

    @property
    def timesteps(self) -> torch.Tensor:
        return self.scheduler.timesteps

    @property
    def total(self) -> int:
        return len(self.scheduler.timesteps)

    @property
    def done(self) -> bool:
        return self.step >= self.total


class Stepper(Protocol):
    """A family's denoising loop cut into steps. All calls come from the scheduler's one thread, with the
    engine loaded and under torch's inference mode."""

    def start(self, item: Any) -> SceneState:
        """Encode the scene's conditioning and draw its noise from its seed, as the pipeline alone would."""
        ...

    def key(self, state: SceneState) -> tuple[Any, ...]:
        """Equal for scenes that can share this step's model call (shape, and the sub-model at this step)."""
        ...

    def split(self, states: list[SceneState]) -> list[list[SceneState]]:
        """``states`` (equal keys) in the model calls one step of them takes, in order: all in one, unless
        that call would pass a kernel's limit on its batch."""
        ...

    def advance(self, states: list[SceneState]) -> None:
        """One model call over ``states`` (equal keys), then each scene's scheduler step; ``step`` += 1."""
        ...

    def finish(self, state: SceneState) -> SceneFrames:
        """Decode a finished scene's latents to frames."""
        ...


@dataclass(eq=False)
class _Scene:
    item: Any
    progress: ProgressCallback | None
    future: Future[SceneFrames] = field(default_factory=Future)
    state: SceneState | None = None
    cancelled: bool = False
    admitted_at: float = 0.0


@dataclass
class StepStats:
    """What the loop has done: model calls by how many scenes they held, scenes admitted while others were
    mid-loop, and the most scenes active at once."""

    calls: Counter[int] = field(default_factory=Counter)
    joined_running: int = 0
    most_active: int = 0
    cancelled: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": dict(self.calls),
            "joined_running": self.joined_running,
            "most_active": self.most_active,
            "cancelled": self.cancelled,
        }


class StepScheduler:
    """Runs a video engine's scenes in one shared step loop; `generate` as `VideoEngine.generate`.

    Args:
        engine: the family's engine; its `stepper()` (after load) cuts its pipeline into steps. An engine
            without one (LTX-Video for now) is run a call at a time over the scenes queued, as under `call`.
        max_active: most scenes in the loop at once; the rest wait in arrival order.
        memory_fraction: on CUDA, the share of device memory the loop may fill (see `MemoryAdmission`).
        probe: memory readings; default `torch.cuda`'s on a CUDA engine, none on the CPU (a stand-in turns
            admission by memory on anywhere, for tests).
        decode_thread: decode finished scenes on a thread beside the loop, overlapping the next steps;
            default on CUDA without CPU offload (where the two would move the same modules), else in the loop.
    """

    POLL_S = 0.05  # how often a waiting caller looks at its cancel token

    def __init__(
        self,
        engine: VideoEngine,
        max_active: int = 8,
        memory_fraction: float = 0.9,
        probe: MemoryProbe | None = None,
        decode_thread: bool | None = None,
    ) -> None:
        self.engine = engine
        self.decode_thread = decode_thread
        self.config = engine.config
        self.max_active = max_active
        self.memory_fraction = memory_fraction
        self.probe = probe
        self.stats = StepStats()
        self._admission: MemoryAdmission | None = None
        self._oom_cap: int | None = None  # after an out-of-memory step: at most this many active
        self._queue: deque[_Scene] = deque()
        self._active: list[_Scene] = []
        self._wake = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._stepper: Stepper | None = None
        self._decoder: ThreadPoolExecutor | None = None
        # Admission learns only from a step or a decode that ran alone. Each count has one writer: decodes
        # are submitted and steps run on the loop's thread, decodes are done on the decoder's.
        self._decodes_submitted = self._decodes_done = 0
        self._steps_started = self._steps_finished = 0
        # `start` encodes the keyframe and `finish` decodes, both with the VAE, which SVD upcasts in place and
        # Wan's keeps a feature cache in during a call: with a decoder thread the two must take turns.
        self._vae = threading.Lock()

    # -- the engine's interface ------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self.engine.loaded

    @property
    def placement(self) -> Placement | None:
        return self.engine.placement

    @property
    def waiting(self) -> int:
        """Scenes queued for the loop and not yet admitted."""
        with self._wake:
            return len(self._queue)

    @property
    def active(self) -> int:
        """Scenes in the loop now."""
        return len(self._active)

    @property
    def decoding(self) -> int:
        """Finished scenes whose decode is queued or running."""
        return self._decodes_submitted - self._decodes_done

    def load(self) -> None:
        """Load the engine's model and start the loop's thread (once)."""
        if self._closed:
            raise ModelUnavailable(f"{self.engine.label} was unloaded")
        if not self.engine.loaded:  # the loop holds the engine's lock through each step: no waiting on it
            self.engine.load()
        with self._wake:
            if self._thread is None:
                # One thread for the whole life of the loop: PyTorch's OpenMP team belongs to the thread
                # that calls, and a new thread per busy period would leave several (deployments/model_thread.py).
                self._thread = threading.Thread(target=self._run, name="step-loop", daemon=True)
                self._thread.start()

    def unload(self) -> None:
        """Stop the loop (scenes still in it fail with `GenerationCancelled`) and unload the engine."""
        with self._wake:
            self._closed = True
            self._wake.notify_all()
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        if self._decoder is not None:
            self._decoder.shutdown(wait=True)
            self._decoder = None
        self._stepper = None
        self.engine.unload()

    def generate(
        self,
        requests: Sequence[SceneRequest],
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> list[SceneFrames]:
        """Animate the requests in the shared loop and wait for them; same contract as `VideoEngine.generate`
        (each request's steps are reported as ``progress(step, total)``; a set ``cancel`` takes them out of
        the loop at the next step and raises `GenerationCancelled`)."""
        self.load()
        items = [self.engine.resolve(i, request) for i, request in enumerate(requests)]
        if not items:
            return []
        if cancel is not None and cancel.is_set():
            raise GenerationCancelled(f"cancelled before {self.engine.label} started")
        scenes = [_Scene(item, progress) for item in items]
        with self._wake:
            self._queue.extend(scenes)
            self._wake.notify_all()
        try:
            return [self._wait(scene, cancel) for scene in scenes]
        except BaseException:
            with self._wake:
                for scene in scenes:
                    scene.cancelled = True
                self._wake.notify_all()
            raise

    # -- callers' side ---------------------------------------------------------------------------------

    def _wait(self, scene: _Scene, cancel: CancelToken | None) -> SceneFrames:
        while True:
            try:
                return scene.future.result(timeout=self.POLL_S)
            except FutureTimeout:
                if cancel is not None and cancel.is_set():
                    state = scene.state
                    step = state.step if state is not None else 0
                    raise GenerationCancelled(f"cancelled after denoising step {step}") from None

    # -- the loop (its own thread) ---------------------------------------------------------------------

    def _run(self) -> None:
        with self.engine.lock:
            self._stepper = self.engine.stepper()
            self._admission = self._memory_admission()
            if self._stepper is not None and self._decodes_beside():
                self._decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="step-decode")
        while True:
            with self._wake:
                while not self._closed and not self._queue and not self._active:
                    self._wake.wait()
                if self._closed:
                    self._fail_all(GenerationCancelled(f"{self.engine.label} was unloaded"))
                    return
                self._drop_cancelled()
                admitted = self._admit()
            try:
                with (
                    self.engine.lock,
                    torch.inference_mode(),
                    cpu_threads(self.config.cpu_threads, self._device),
                ):
                    if self._stepper is None:
                        self._run_call_wise(admitted)
                        continue
                    for scene in admitted:
                        self._start(self._stepper, scene)
                    if self._active:
                        self._step_once(self._stepper)
                    if not self._active and not self.waiting:
                        self._park()
            except Exception as exc:  # noqa: BLE001 - a loop that dies would strand every waiting caller
                logger.exception("step loop failed")
                with self._wake:
                    for scene in [*self._active, *admitted]:
                        if not scene.future.done():
                            scene.future.set_exception(exc)
                    self._active = []

    @property
    def _device(self) -> torch.device | None:
        placement = self.engine.placement
        return placement.device if placement is not None else None

    def _decodes_beside(self) -> bool:
        if self.decode_thread is not None:
            return self.decode_thread
        device = self._device
        on_cuda = device is not None and device.type == "cuda"
        return on_cuda and not getattr(self.engine.runtime, "cpu_offload", False)

    def _memory_admission(self) -> MemoryAdmission | None:
        if self.probe is not None:
            return MemoryAdmission(self.probe, self.memory_fraction)
        device = self._device
        if self._stepper is not None and device is not None and device.type == "cuda":
            return MemoryAdmission(CudaMemory(device), self.memory_fraction)
        return None

    def _park(self) -> None:
        # Out of scenes: a pipeline call ends by returning CPU-offloaded models to the CPU; the loop never
        # makes one, so it does the same here. Not under a decode still running beside the loop (CPU offload
        # decodes in the loop unless told otherwise): that would move its VAE mid-decode.
        if self.decoding == 0:
            self.engine.park()

    def _fail_all(self, exc: Exception) -> None:
        for scene in [*self._queue, *self._active]:
            if not scene.future.done():
                scene.future.set_exception(exc)
        self._queue.clear()
        self._active = []

    def _drop_cancelled(self) -> None:
        for scene in [s for s in (*self._queue, *self._active) if s.cancelled]:
            if scene in self._active:
                self._active.remove(scene)
            else:
                self._queue.remove(scene)
            self.stats.cancelled += 1
            if not scene.future.done():
                scene.future.set_exception(GenerationCancelled("cancelled in the step loop"))

    def _admit(self) -> list[_Scene]:
        """Take queued scenes, oldest first, while the limits allow (always one when the loop is empty)."""
        limit = self.max_active if self._oom_cap is None else min(self.max_active, self._oom_cap)
        admitted: list[_Scene] = []
        while self._queue and len(self._active) + len(admitted) < limit:
            candidate = self._queue[0]
            if self._admission is not None and (self._active or admitted):
                shape = self.engine.shape_key(candidate.item)
                same = sum(1 for s in (*self._active, *admitted) if self.engine.shape_key(s.item) == shape)
                if not self._admission.allows(shape, same):
                    break
            admitted.append(self._queue.popleft())
        if admitted and self._active:
            self.stats.joined_running += len(admitted)
        return admitted

    def _start(self, stepper: Stepper, scene: _Scene) -> None:
        try:
            with self._vae:
                scene.state = stepper.start(scene.item)
        except Exception as exc:  # noqa: BLE001 - this scene's input or model fails alone
            scene.future.set_exception(self._as_unavailable(exc))
            return
        scene.admitted_at = time.perf_counter()
        self._active.append(scene)
        self.stats.most_active = max(self.stats.most_active, len(self._active))

    def _step_once(self, stepper: Stepper) -> None:
        groups: dict[tuple[Any, ...], list[_Scene]] = {}
        for scene in self._active:
            assert scene.state is not None
            groups.setdefault(stepper.key(scene.state), []).append(scene)
        for group in groups.values():
            scene_of = {id(scene.state): scene for scene in group}
            for states in stepper.split([scene.state for scene in group if scene.state is not None]):
                self._advance(stepper, [scene_of[id(state)] for state in states])
        for scene in list(self._active):
            state = scene.state
            assert state is not None
            if scene.progress is not None and not scene.future.done():
                scene.progress(state.step, state.total)
            if state.done or scene.future.done():
                self._active.remove(scene)
                if not scene.future.done():
                    self._finish(stepper, scene)

    def _advance(self, stepper: Stepper, group: list[_Scene]) -> None:
        """One step for ``group``; on out-of-memory, the halves, then one at a time; a scene that runs out
        alone fails with `ModelUnavailable` (and the fallback policy takes over for it). When torch.compile
        gives up on a new shape (its recompile limit), the same step runs again on the uncompiled model:
        the model never ran, so no scene moved."""
        states = [scene.state for scene in group if scene.state is not None]
        failure: str | None = None
        uncompiled = False
        try:
            self._step_measured(stepper, group[0].item, states)
            return
        except Exception as exc:
            if is_recompile_limit(exc) and self.engine.drop_compile():
                uncompiled = True
            elif is_out_of_memory(exc):
                failure = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            else:
                raise
        if uncompiled:
            self._advance(stepper, group)
            return
        release_memory(self._device)
        self._oom_cap = max(1, len(self._active) - 1)
        if len(group) > 1:
            logger.warning("out of memory stepping %d scenes; stepping them in halves", len(group))
            half = len(group) // 2
            self._advance(stepper, group[:half])
            self._advance(stepper, group[half:])
            return
        scene = group[0]
        scene.future.set_exception(
            ModelUnavailable(
                f"{self.engine.label} ran out of GPU memory stepping one scene of "
                f"{scene.item.param('width')}x{scene.item.param('height')}, "
                f"{scene.item.param('num_frames')} frames ({failure}); {self.engine.oom_hint}"
            )
        )

    def _step_measured(self, stepper: Stepper, item: Any, states: list[SceneState]) -> None:
        # Decodes are submitted from this thread only: with none in flight now, none runs beside this step.
        alone = self.decoding == 0
        self._steps_started += 1
        try:
            if self._admission is not None:
                shape = self.engine.shape_key(item)
                self._admission.measure(shape, len(states), lambda: stepper.advance(states), learn=alone)
            else:
                stepper.advance(states)
        finally:
            self._steps_finished += 1
        for state in states:
            state.peers = max(state.peers, len(states))
        self.stats.calls[len(states)] += 1

    def _finish(self, stepper: Stepper, scene: _Scene) -> None:
        state = scene.state
        assert state is not None

        def decode() -> None:
            try:
                with self._vae, torch.inference_mode():
                    frames = self._measured_decode(lambda: stepper.finish(state))
                frames.seconds = time.perf_counter() - scene.admitted_at
                frames.batch_size = state.peers
                scene.future.set_result(frames)
            except Exception as exc:  # noqa: BLE001 - handed to the scene's caller
                scene.future.set_exception(self._as_unavailable(exc))
            finally:
                self._decodes_done += 1

        self._decodes_submitted += 1
        if self._decoder is not None:
            self._decoder.submit(decode)
        else:
            decode()

    def _measured_decode(self, finish: Callable[[], SceneFrames]) -> SceneFrames:
        # Only a decode beside the loop competes with steps for memory; its cost counts when no step ran
        # during it (none running at its start, none started before its end).
        if self._admission is None or self._decoder is None:
            return finish()
        started, finished = self._steps_started, self._steps_finished
        quiet = started == finished
        return self._admission.measure_decode(finish, lambda: quiet and self._steps_started == started)

    def _run_call_wise(self, admitted: list[_Scene]) -> None:
        """An engine without a stepper: one `generate` call over what was admitted, as `call` would."""
        live = [scene for scene in admitted if not scene.cancelled]
        if not live:
            return

        def progress(step: int, total: int) -> None:
            for scene in live:
                if scene.progress is not None:
                    scene.progress(step, total)

        class AllCancelled:
            @staticmethod
            def is_set() -> bool:
                return all(scene.cancelled for scene in live)

        try:
            made = self.engine.generate_resolved([scene.item for scene in live], progress, AllCancelled())
        except Exception as exc:  # noqa: BLE001 - every caller of the call hears it
            for scene in live:
                scene.future.set_exception(exc)
            return
        self.stats.calls[len(live)] += 1
        for scene, frames in zip(live, made, strict=True):
            scene.future.set_result(frames)

    @staticmethod
    def _as_unavailable(exc: Exception) -> Exception:
        if is_out_of_memory(exc):
            return ModelUnavailable(f"out of memory starting or decoding a scene: {exc}")
        return exc


__all__ = [
    "SceneState",
    "StepScheduler",
    "StepStats",
    "Stepper",
]
