"""What every video model engine shares: the request and result types, batching, retries and cancel.

An engine (`engines.video.svd.engine.SVDEngine`, `engines.video.ltx.engine.LTXEngine`,
`engines.video.wan.engine.WanEngine`) says which pipeline it loads and what to do with it after (`load` is one
template), how to fill in and check one request, and how to make one pipeline call for requests that can
share it. This base groups the requests, runs the out-of-memory retry ladder, reports a step at a time and
stops at a step boundary on cancel, the same way for every family, so jobs, batching, progress, cancel and
the fallback treat all of them alike.
"""

from __future__ import annotations

import abc
import dataclasses
import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from PIL import Image

from core.errors import GenerationCancelled, ModelUnavailable
from engines.loading import (
    Placement,
    cpu_threads,
    is_out_of_memory,
    is_recompile_limit,
    load_placed,
    release_memory,
)

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]


class CancelToken(Protocol):
    """Anything with `is_set()`, e.g. a `threading.Event` the job runner sets on cancel."""

    def is_set(self) -> bool: ...


@dataclass
class SceneRequest:
    """One scene to animate. Every `None` means "take the value from the engine's config".

    Args:
        image: the keyframe, already `width` x `height` (see `engines.painter.prepare_reference`); None
            until the animator deployment fills it in from the keyframe it was handed.
        seed: random seed; `None` picks one, which the result records.
        width, height: frame size in pixels (multiples of 8 for SVD, 32 for LTX, 16 for Wan).
        num_frames, num_inference_steps, fps: as in the config.
        motion_bucket_id, noise_aug_strength, min_guidance_scale, max_guidance_scale, decode_chunk_size: SVD
            only (other families ignore them).
        prompt, negative_prompt, guidance_scale: families that take text (LTX, Wan) only; SVD takes no text.
        guidance_scale_2, boundary_ratio: Wan 2.2 A14B's second expert: its guidance (default
            `guidance_scale`) and where it takes over (default the checkpoint's); checkpoints with one expert
            ignore them.
        flow_shift: the shift of Wan's flow-matching scheduler (default the checkpoint's).
    """

    image: Image.Image | None = None
    seed: int | None = None
    width: int | None = None
    height: int | None = None
    num_frames: int | None = None
    num_inference_steps: int | None = None
    fps: int | None = None
    motion_bucket_id: int | None = None
    noise_aug_strength: float | None = None
    min_guidance_scale: float | None = None
    max_guidance_scale: float | None = None
    decode_chunk_size: int | None = None
    prompt: str | None = None
    negative_prompt: str | None = None
    guidance_scale: float | None = None
    guidance_scale_2: float | None = None
    boundary_ratio: float | None = None
    flow_shift: float | None = None


@dataclass
class SceneFrames:
    """Frames a video model made for one request.

    Args:
        frames: uint8 array of shape (num_frames, height, width, 3).
        seed: the seed actually used.
        seconds: wall time of the pipeline call that made these frames (shared by a batch).
        batch_size: how many videos that pipeline call made.
        generator: the model family ("svd", "ltx" or "wan"); fallbacks are labelled elsewhere, never here.
        ignored: the request's fields the loaded checkpoint had no use for (Wan 2.2 A14B's expert fields on
            a checkpoint with one expert).
    """

    frames: np.ndarray
    seed: int
    seconds: float
    batch_size: int = 1
    generator: str = "svd"
    ignored: tuple[str, ...] = ()


class Resolved(Protocol):
    """A request with every default filled in and checked (each engine has its own)."""

    @property
    def index(self) -> int: ...

    @property
    def seed(self) -> int: ...

    def param(self, name: str) -> Any: ...

    @property
    def batch_key(self) -> tuple[Any, ...]: ...


class VideoModel(Protocol):
    """What the fallback, the stages and the deployment call: a `VideoEngine`, or the engine inside the
    shared step loop (`engines.video.step_loop.StepScheduler`) under `scheduling: step`."""

    @property
    def config(self) -> Any: ...

    @property
    def placement(self) -> Placement | None:
        """Where the model runs once loaded; None before."""
        ...

    def load(self) -> None: ...

    def unload(self) -> None: ...

    def generate(
        self,
        requests: Sequence[SceneRequest],
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> list[SceneFrames]: ...


class VideoEngine(abc.ABC):
    """The shared half of a video model engine; each family implements `_pipeline_class` and `_prepare`
    (what `load` loads and does after), `_resolve` and `_call_pipeline`.

    Args:
        config: the engine's settings; it must have `oom_retries`, `torch_compile` and `cpu_threads`.
    """

    label = "the video model"  # how messages name the model ("SVD", "LTX-Video", "Wan")
    oom_hint = "lower num_frames or the size"

    def __init__(self, config: Any) -> None:
        self.config = config
        self._pipeline: Any = None
        self._placement: Placement | None = None
        self._runtime: Any = None
        # The pipeline's scheduler keeps per-call state, so calls from several threads must take turns.
        self._lock = threading.RLock()

    @property
    def loaded(self) -> bool:
        return self._pipeline is not None

    @property
    def runtime(self) -> Any:
        """The effective device, dtype and options; `None` until `load()`."""
        return self._runtime

    @property
    def placement(self) -> Placement | None:
        """Where the loaded model runs; `None` until `load()`."""
        return self._placement

    @property
    def lock(self) -> threading.RLock:
        """Held around every use of the pipeline; a step loop holds it for each step."""
        return self._lock

    def load(self) -> None:
        """Load the family's pipeline (once), apply its speed and memory options and place it on the device.

        Raises:
            ModelUnavailable: weights missing, not cached with downloads off, unreadable, or no usable device.
        """
        with self._lock:
            if self._pipeline is not None:
                return
            pipeline, placement = load_placed(self._pipeline_class(), self.config)
            self._runtime = self._prepare(pipeline, placement)
            self._pipeline, self._placement = pipeline, placement
            logger.info(
                "%s loaded from %s: %s",
                self.label,
                self.config.model_path or self.config.model,
                self._runtime,
            )

    def unload(self) -> None:
        """Drop every reference to the models and return their memory (the CUDA cache is emptied)."""
        import torch

        with self._lock:
            pipeline, placement = self._pipeline, self._placement
            self._pipeline = self._placement = self._runtime = None
            if pipeline is None:
                return
            # Offload hooks and compiled graphs hold references to the modules; remove them too.
            pipeline.remove_all_hooks()
            if self.config.torch_compile:
                torch._dynamo.reset()
            del pipeline
            release_memory(placement.device if placement else None)

    def generate(
        self,
        requests: Sequence[SceneRequest],
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> list[SceneFrames]:
        """Animate each request's keyframe; blocking, so call it from a worker thread, never an event loop.

        Requests that can share a pipeline call (equal size, frames, steps and the engine's other call-wide
        settings) run as one (as several where one would pass a kernel's limit on the batch, see
        `_max_call_batch`), each with its own seeded generator (and, for families that take text, its own
        prompt), so a batched result equals the same request run alone. Others run in compatible
        sub-batches, in order of first appearance.

        Args:
            requests: the scenes to animate; `None` fields take the config's values.
            progress: called as `progress(step, total_steps)` after every denoising step of every pipeline
                call (a batch split after running out of memory reports its steps again).
            cancel: checked after every step; once set, generation stops and `GenerationCancelled` is raised.

        Returns:
            One `SceneFrames` per request, in request order.

        Raises:
            InvalidInput: a request parameter is out of range (the message names it and shows the value).
            ModelUnavailable: the model cannot load, or the GPU ran out of memory even after the retries.
            GenerationCancelled: `cancel` was set.
        """
        return self.generate_resolved(
            [self.resolve(i, request) for i, request in enumerate(requests)], progress, cancel
        )

    def resolve(self, index: int, request: SceneRequest) -> Resolved:
        """``request`` with every default filled in and checked (`InvalidInput` names a bad field)."""
        return self._resolve(index, request)

    def generate_resolved(
        self, resolved: list[Any], progress: ProgressCallback | None, cancel: CancelToken | None
    ) -> list[SceneFrames]:
        """`generate` for requests already resolved; results come in the order of ``resolved``."""
        if not resolved:
            return []

        # 1. Group requests that can share one pipeline call (once loaded: what can share one may depend on
        #    the checkpoint), keeping the order they arrived in, in calls no larger than the model allows;
        # 2. run each call, halving it on out-of-memory
        results: dict[int, SceneFrames] = {}
        with self._lock:
            self.load()
            groups: dict[tuple[Any, ...], list[int]] = {}
            for place, item in enumerate(resolved):
                groups.setdefault(self._batch_key(item), []).append(place)
            for places in groups.values():
                most = self._max_call_batch(resolved[places[0]]) or len(places)
                for start in range(0, len(places), most):
                    call = places[start : start + most]
                    made = self._run_with_retries([resolved[p] for p in call], progress, cancel)
                    results.update(zip(call, made, strict=True))

        # 3. Return in request order
        return [results[i] for i in range(len(resolved))]

    def park(self) -> None:
        """With CPU offload, return every sub-model to the CPU and reset stateful hooks, as a pipeline call
        does at its end (a step loop makes no such call, so it parks when it runs out of scenes)."""
        with self._lock:
            if self._pipeline is not None and getattr(self._runtime, "cpu_offload", False):
                self._pipeline.maybe_free_model_hooks()

    def drop_compile(self) -> bool:
        """Put the uncompiled modules back after torch.compile gave up on the shapes it met: past its
        recompile limit a fullgraph compile fails the call (a non-fullgraph one quietly runs uncompiled).
        The replica goes on uncompiled, with a warning. Returns whether anything had been compiled."""
        from torch._dynamo.eval_frame import OptimizedModule

        with self._lock:
            pipeline = self._pipeline
            if pipeline is None:
                return False
            compiled = [n for n, m in pipeline.components.items() if isinstance(m, OptimizedModule)]
            for name in compiled:
                setattr(pipeline, name, getattr(pipeline, name)._orig_mod)
            if compiled:
                logger.warning(
                    "%s: torch.compile hit its recompile limit on the shapes and batch sizes it met; "
                    "running %s uncompiled from now on",
                    self.label,
                    " and ".join(compiled),
                )
                self._runtime = dataclasses.replace(self._runtime, torch_compile=False)
            return bool(compiled)

    def stepper(self) -> Any:
        """The loaded pipeline cut into denoising steps (an `engines.video.step_loop.Stepper`), for
        `scheduling: step`; None where this family or checkpoint has none."""
        return None

    def shape_key(self, item: Any) -> tuple[Any, ...]:
        """The shape a resolved request's latents take: scenes of one shape cost the same per step."""
        return (item.param("width"), item.param("height"), item.param("num_frames"))

    # -- what each engine provides ---------------------------------------------------------------------

    @abc.abstractmethod
    def _pipeline_class(self) -> Any:
        """The pipeline class the family's checkpoints load into."""

    @abc.abstractmethod
    def _prepare(self, pipeline: Any, placement: Placement) -> Any:
        """Apply the family's options to the just loaded ``pipeline`` and move it to ``placement``'s device
        (or offload it there); return what it runs with, the engine's `runtime`."""

    @abc.abstractmethod
    def _resolve(self, index: int, request: SceneRequest) -> Any:
        """Fill in and check one request (see `Resolved`)."""

    @abc.abstractmethod
    def _call_pipeline(
        self, chunk: list[Any], progress: ProgressCallback | None, cancel: CancelToken | None
    ) -> list[SceneFrames]:
        """One pipeline call over ``chunk`` (requests with equal batch keys), one result each."""

    def _batch_key(self, item: Any) -> tuple[Any, ...]:
        """Equal for resolved requests that can share one call of the loaded pipeline."""
        return item.batch_key

    def _max_call_batch(self, item: Any) -> int | None:
        """The most requests like ``item`` one call of the loaded pipeline may hold whatever the memory (a
        kernel's limit on the batch, say); None for no such limit. Memory is the retry ladder's business."""
        return None

    # -- shared internals ------------------------------------------------------------------------------

    def _run_with_retries(
        self, group: list[Any], progress: ProgressCallback | None, cancel: CancelToken | None
    ) -> list[SceneFrames]:
        # The retry ladder: the whole group, then halves, then one at a time. Rungs may repeat for small
        # groups on purpose: after memory is freed, fragmentation alone may no longer cause the OOM.
        ladder = [len(group), math.ceil(len(group) / 2), 1][: self.config.oom_retries + 1]
        out: list[SceneFrames] = []
        rung = 0
        while len(out) < len(group):
            size = ladder[rung]
            chunk = group[len(out) : len(out) + size]
            failure: str | None = None
            try:
                out.extend(self._call_pipeline(chunk, progress, cancel))
            except Exception as exc:
                if is_recompile_limit(exc) and self.drop_compile():
                    continue  # the same chunk again, on the uncompiled model
                if not is_out_of_memory(exc):
                    raise
                failure = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            if failure is None:
                continue
            # Outside the except block, so the traceback (which pins the OOM'd tensors) is already gone.
            self._free_after_failure()
            rung += 1
            if rung >= len(ladder):
                raise ModelUnavailable(
                    f"{self.label} ran out of GPU memory for {len(chunk)} request(s) of "
                    f"{chunk[0].param('width')}x{chunk[0].param('height')}, "
                    f"{chunk[0].param('num_frames')} frames, after {_plural(len(ladder) - 1, 'retry', 'retries')} "
                    f"({failure}); {self.oom_hint}"
                )
            logger.warning(
                "%s out of memory with a batch of %d; retrying with %d", self.label, size, ladder[rung]
            )
        return out

    def _denoise(
        self,
        call: Callable[[Callable[..., dict[str, Any]]], Any],
        total: int,
        progress: ProgressCallback | None,
        cancel: CancelToken | None,
    ) -> Any:
        """Run ``call(on_step_end)`` (one pipeline call given its step callback), reporting each step and
        leaving the loop at the first step boundary after ``cancel`` is set (`GenerationCancelled`)."""
        if cancel is not None and cancel.is_set():
            raise GenerationCancelled(f"cancelled before {self.label} started")

        def on_step_end(
            pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]
        ) -> dict[str, Any]:
            if progress is not None:
                progress(step + 1, total)
            if cancel is not None and cancel.is_set():
                raise _CancelSignal(step + 1)
            return callback_kwargs

        stopped_at: int | None = None
        output = None
        try:
            with cpu_threads(self.config.cpu_threads, self._placement.device if self._placement else None):
                output = call(on_step_end)
        except _CancelSignal as signal:
            stopped_at = signal.step
        if stopped_at is not None:
            # Raised outside the except block so no traceback keeps the pipeline's tensors alive.
            self._free_after_failure()
            raise GenerationCancelled(f"cancelled after denoising step {stopped_at} of {total}")
        return output

    def _free_after_failure(self) -> None:
        # With CPU offload an interrupted call leaves its last model on the GPU; park it again.
        self.park()
        release_memory(self._placement.device if self._placement else None)


class _CancelSignal(Exception):
    """Raised inside the step callback to leave the pipeline's loop at a step boundary."""

    def __init__(self, step: int) -> None:
        super().__init__(step)
        self.step = step


def to_uint8(raw: Any, label: str, dtype: str) -> np.ndarray:
    """Pipeline output in [0, 1] (``output_type="np"``) as uint8 videos; NaN (float16 overflow) is an
    unavailable model rather than garbage pixels."""
    array = np.asarray(raw)
    if not np.isfinite(array).all():
        raise ModelUnavailable(
            f"{label} produced non-finite values in {dtype}; use dtype 'bfloat16' or 'float32'"
        )
    return np.clip(array * 255.0, 0, 255).round().astype(np.uint8)


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


__all__ = [
    "CancelToken",
    "ProgressCallback",
    "SceneFrames",
    "SceneRequest",
    "VideoEngine",
    "VideoModel",
    "to_uint8",
]
