"""The shared step loop (`video.scheduling: step`) on tiny SVD and Wan models.

Every scene made in the loop is compared with the same scene made alone by the engine (`scheduling: call`),
whatever joined or left around it. Joining, leaving and cancel are made deterministic from inside the loop:
a progress callback runs on the loop's thread between two steps, so it can hold the loop at a step
boundary until the other side of the test has done its part.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from core.errors import GenerationCancelled, ModelUnavailable
from engines.video.base import SceneFrames, SceneRequest, VideoEngine
from engines.video.config import LTXConfig, SVDConfig, WanConfig
from engines.video.families import build_video_engine
from engines.video.memory import MemoryAdmission
from engines.video.step_loop import SceneState, StepScheduler
from tests.support.tiny_models import TINY_LTX_SETTINGS, TINY_SVD_SETTINGS, TINY_WAN_SETTINGS

pytestmark = pytest.mark.unit

FAMILIES = ["svd", "wan"]
WAIT_S = 30  # a bound on each hand-off between threads; none of them should take more than milliseconds


def keyframe(seed: int, size: tuple[int, int] = (64, 64)) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def config_of(family: str, path: Path, **overrides: Any) -> Any:
    if family == "svd":
        return SVDConfig(model_path=str(path), **{**TINY_SVD_SETTINGS, **overrides})
    if family == "ltx":
        return LTXConfig(model_path=str(path), **{**TINY_LTX_SETTINGS, **overrides})
    return WanConfig(model_path=str(path), **{**TINY_WAN_SETTINGS, **overrides})


def scene(family: str, seed: int, steps: int = 2, text_only: bool = False, **shape: int) -> SceneRequest:
    """A scene whose every per-scene value differs with ``seed``: keyframe, noise, motion or prompt;
    ``shape`` sets its width, height, frames or (SVD) decode chunk, the keyframe following the size."""
    size = (shape.get("width", 64), shape.get("height", 64))
    image = None if text_only else keyframe(seed, size)
    if family == "svd":
        return SceneRequest(
            image=image,
            seed=seed,
            num_inference_steps=steps,
            motion_bucket_id=20 + 40 * (seed % 5),
            fps=6 + seed % 3,
            noise_aug_strength=0.01 * (seed % 4),
            # Some scenes without guidance: one UNet row instead of two, in the same call.
            max_guidance_scale=1.0 if seed % 2 else 3.0,
            **shape,
        )
    return SceneRequest(
        image=image, seed=seed, num_inference_steps=steps, prompt=f"scene number {seed}", **shape
    )


@pytest.fixture(scope="module", params=FAMILIES)
def family(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def alone(family: str, request: pytest.FixtureRequest) -> VideoEngine:
    """The same model under `scheduling: call`: what each scene would be made alone."""
    engine = build_video_engine(config_of(family, request.getfixturevalue(f"tiny_{family}_path")))
    assert isinstance(engine, VideoEngine)
    engine.load()
    return engine


@pytest.fixture
def loop(family: str, request: pytest.FixtureRequest) -> Iterator[StepScheduler]:
    """A fresh step loop (its counts start at zero) over a freshly loaded engine."""
    path = request.getfixturevalue(f"tiny_{family}_path")
    scheduler = build_video_engine(config_of(family, path, scheduling="step"))
    assert isinstance(scheduler, StepScheduler)
    scheduler.load()
    yield scheduler
    scheduler.unload()


def assert_equal_to_alone(alone: VideoEngine, request: SceneRequest, made: SceneFrames) -> None:
    [reference] = alone.generate([request])
    assert made.frames.shape == reference.frames.shape
    assert made.seed == reference.seed
    # The batching tests' tolerance: a bigger matmul may round differently in the last bit.
    assert np.abs(made.frames.astype(int) - reference.frames.astype(int)).max() <= 2


class Call:
    """``loop.generate(requests, progress, cancel)`` on a thread of its own, as a deployment's caller."""

    def __init__(
        self,
        loop: StepScheduler,
        requests: list[SceneRequest],
        on_step: Callable[[int, int], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        self.steps: list[int] = []
        self.result: list[SceneFrames] | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()

        def progress(step: int, total: int) -> None:
            self.steps.append(step)
            if on_step is not None:
                on_step(step, total)

        def run() -> None:
            try:
                self.result = loop.generate(requests, progress, cancel)
            except BaseException as exc:  # noqa: BLE001 - the test asserts on it
                self.error = exc
            finally:
                self.done.set()

        threading.Thread(target=run, daemon=True).start()

    def wait(self) -> list[SceneFrames]:
        assert self.done.wait(WAIT_S), "the call did not return"
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


@pytest.mark.slow
def test_scenes_sharing_the_loop_equal_the_same_scenes_made_alone(
    family: str, alone: VideoEngine, loop: StepScheduler
) -> None:
    # Three scenes with their own seed, keyframe, motion or prompt, and 2, 3 and 4 steps: all step together
    # while they last, then the longer ones go on with fewer.
    requests = [scene(family, seed, steps) for seed, steps in ((11, 2), (12, 3), (13, 4))]

    made = loop.generate(requests)

    for request, result in zip(requests, made, strict=True):
        assert_equal_to_alone(alone, request, result)
        assert result.generator == family
    assert [result.batch_size for result in made] == [3, 3, 3]
    assert loop.stats.calls == Counter({3: 2, 2: 1, 1: 1})


def test_25_frame_scenes_leave_the_loop_as_they_would_be_made_alone(
    family: str, alone: VideoEngine, loop: StepScheduler
) -> None:
    # Finished scenes are decoded one by one: at SVD-XT's 25 frames, in SVD's chunks of 7 (which do not
    # divide 25), nothing of one scene may reach another's decode.
    shape = {"width": 32, "height": 32, "num_frames": 25}
    if family == "svd":
        shape["decode_chunk_size"] = 7
    requests = [scene(family, seed, steps=1, **shape) for seed in (14, 15)]

    made = loop.generate(requests)

    assert [result.batch_size for result in made] == [2, 2]
    for request, result in zip(requests, made, strict=True):
        assert_equal_to_alone(alone, request, result)


@pytest.mark.slow
def test_a_scene_joins_a_running_loop_at_the_next_step(
    family: str, alone: VideoEngine, loop: StepScheduler
) -> None:
    long, late = scene(family, 21, steps=5), scene(family, 22, steps=2)
    joined: list[Call] = []

    def after_step(step: int, total: int) -> None:
        if step == 1:  # the loop waits here, between steps 1 and 2, until the late scene is queued
            joined.append(Call(loop, [late]))
            wait_until(lambda: loop.waiting == 1)

    first = Call(loop, [long], on_step=after_step)
    [made_long] = first.wait()
    [made_late] = joined[0].wait()

    assert loop.stats.joined_running == 1
    assert first.steps == [1, 2, 3, 4, 5] and joined[0].steps == [1, 2]
    assert made_long.batch_size == 2 and made_late.batch_size == 2
    assert loop.stats.calls == Counter({2: 2, 1: 3})
    assert_equal_to_alone(alone, long, made_long)
    assert_equal_to_alone(alone, late, made_late)


@pytest.mark.slow
def test_a_short_scene_leaves_and_returns_while_a_long_one_goes_on(
    family: str, alone: VideoEngine, loop: StepScheduler
) -> None:
    long, short = scene(family, 31, steps=6), scene(family, 32, steps=2)
    joined: list[Call] = []
    returned_mid_loop = threading.Event()

    def after_step(step: int, total: int) -> None:
        if step == 1:  # the short scene joins for the long one's steps 2 and 3
            joined.append(Call(loop, [short]))
            wait_until(lambda: loop.waiting == 1)
        if step == 4 and joined[0].done.wait(WAIT_S):  # the loop is held: the short one must be back now
            returned_mid_loop.set()

    first = Call(loop, [long], on_step=after_step)
    [made_long] = first.wait()
    [made_short] = joined[0].wait()

    assert returned_mid_loop.is_set()
    assert_equal_to_alone(alone, short, made_short)
    assert_equal_to_alone(alone, long, made_long)


@pytest.mark.slow
def test_cancel_takes_a_scene_out_at_the_next_step_and_the_others_finish_unchanged(
    family: str, alone: VideoEngine, loop: StepScheduler
) -> None:
    doomed, kept = scene(family, 41, steps=5), scene(family, 42, steps=5)
    cancel = threading.Event()
    calls: dict[str, Call] = {}

    def after_step(step: int, total: int) -> None:
        if step == 2:  # cancel, and hold the loop until the caller has seen it
            cancel.set()
            calls["doomed"].done.wait(WAIT_S)

    calls["doomed"] = Call(loop, [doomed], on_step=after_step, cancel=cancel)
    wait_until(lambda: loop.waiting == 0)
    calls["kept"] = Call(loop, [kept])
    [made] = calls["kept"].wait()

    with pytest.raises(GenerationCancelled):
        calls["doomed"].wait()
    assert calls["doomed"].steps == [1, 2]  # out before its third step
    assert calls["kept"].steps == [1, 2, 3, 4, 5]
    assert loop.stats.cancelled == 1
    assert_equal_to_alone(alone, kept, made)


@pytest.mark.slow
def test_at_most_max_active_scenes_run_and_the_rest_wait_in_arrival_order(
    family: str, alone: VideoEngine, request: pytest.FixtureRequest
) -> None:
    path = request.getfixturevalue(f"tiny_{family}_path")
    loop = build_video_engine(config_of(family, path, scheduling="step", max_active_scenes=2))
    assert isinstance(loop, StepScheduler)
    requests = [scene(family, seed) for seed in (51, 52, 53, 54)]
    try:
        made = loop.generate(requests)
    finally:
        loop.unload()

    # Scenes 1 and 2 step together to the end, then 3 and 4: two steps each pair.
    assert loop.stats.most_active == 2
    assert loop.stats.calls == Counter({2: 4})
    assert [result.batch_size for result in made] == [2, 2, 2, 2]
    for each, result in zip(requests, made, strict=True):
        assert_equal_to_alone(alone, each, result)


def test_bad_input_is_refused_before_it_enters_the_loop(family: str, loop: StepScheduler) -> None:
    with pytest.raises(Exception, match="num_inference_steps"):
        loop.generate([scene(family, 1, steps=0)])
    assert loop.stats.calls == Counter()


def patch_advance(
    loop: StepScheduler, monkeypatch: pytest.MonkeyPatch, advance: Callable[[Any, list[Any]], None]
) -> None:
    """Replace the family stepper's `advance` (the loop's stepper is an instance of that class)."""
    monkeypatch.setattr(type(loop.engine.stepper()), "advance", advance)


@pytest.mark.slow
def test_an_out_of_memory_step_runs_again_in_halves(
    family: str, alone: VideoEngine, loop: StepScheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_advance = type(loop.engine.stepper()).advance
    failures = []

    def advance(stepper: Any, states: list[Any]) -> None:
        if len(states) > 1 and not failures:
            failures.append(len(states))
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        real_advance(stepper, states)

    patch_advance(loop, monkeypatch, advance)
    requests = [scene(family, 61), scene(family, 62)]

    made = loop.generate(requests)

    assert failures == [2]
    # The failed first step once per scene; the second step shares one call again.
    assert loop.stats.calls == Counter({1: 2, 2: 1})
    for each, result in zip(requests, made, strict=True):
        assert_equal_to_alone(alone, each, result)


def test_a_scene_out_of_memory_alone_makes_the_model_unavailable_for_it(
    family: str, loop: StepScheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    def advance(stepper: Any, states: list[Any]) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")

    patch_advance(loop, monkeypatch, advance)

    with pytest.raises(ModelUnavailable, match="out of GPU memory"):
        loop.generate([scene(family, 71)])


def test_unload_fails_waiting_scenes_and_refuses_new_ones(family: str, loop: StepScheduler) -> None:
    held = threading.Event()
    release = threading.Event()

    def after_step(step: int, total: int) -> None:
        held.set()
        release.wait(WAIT_S)

    call = Call(loop, [scene(family, 81, steps=4)], on_step=after_step)
    assert held.wait(WAIT_S)
    unloading = threading.Thread(target=loop.unload)
    unloading.start()
    wait_until(lambda: loop._closed)  # released only once closed, so the scene cannot finish first
    release.set()
    unloading.join(WAIT_S)

    with pytest.raises(GenerationCancelled, match="unloaded"):
        call.wait()
    assert not loop.loaded
    with pytest.raises(ModelUnavailable, match="unloaded"):
        loop.generate([scene(family, 82)])


class FakeMemory:
    """A device of ``total`` bytes where every step peaks ``per_step`` bytes above what this process has
    allocated; the driver reports ``free`` bytes free (default all), and the allocator holds ``reserved``."""

    def __init__(
        self, total: int, per_step: int, free: int | None = None, allocated: int = 0, reserved: int = 0
    ) -> None:
        self.total_bytes, self.per_step = total, per_step
        self.free_bytes = total if free is None else free
        self.allocated_bytes, self.reserved_bytes = allocated, max(reserved, allocated)

    def free(self) -> int:
        return self.free_bytes

    def reserved(self) -> int:
        return self.reserved_bytes

    def allocated(self) -> int:
        return self.allocated_bytes

    def peak(self) -> int:
        return self.allocated_bytes + self.per_step

    def reset_peak(self) -> None:
        pass

    def total(self) -> int:
        return self.total_bytes


def test_memory_admission_counts_the_measured_peak_per_scene_of_a_shape() -> None:
    admission = MemoryAdmission(FakeMemory(total=1000, per_step=600), fraction=0.9)
    shape = (64, 64, 8)

    assert admission.allows(shape, 0) and not admission.allows(shape, 1)  # not measured: alone
    admission.measure(shape, 2, lambda: None)  # two scenes peaked 600: 300 each

    assert admission.per_scene[shape] == 300
    assert [admission.allows(shape, n) for n in (0, 1, 2, 3)] == [True, True, True, False]  # budget 900
    assert admission.allows((128, 128, 8), 0) and not admission.allows((128, 128, 8), 1)


def test_admission_refuses_when_the_driver_has_little_free_though_this_process_allocated_little() -> None:
    # Another replica, the painter or the CUDA contexts hold the rest of the device: this process's own
    # allocations (10 of its budget of 900) say nothing about that.
    shape = (64, 64, 8)
    crowded = MemoryAdmission(FakeMemory(total=1000, per_step=300, free=200, allocated=10), fraction=0.9)
    crowded.measure(shape, 1, lambda: None)

    assert crowded.per_scene[shape] == 300
    assert crowded.allows(shape, 0) is False  # 300 needed; 200 free, less the 50 margin
    # What this process's allocator holds unused counts as room: it needs no driver call to reuse it.
    cached = MemoryAdmission(FakeMemory(1000, 300, free=100, allocated=10, reserved=610), fraction=0.9)
    cached.measure(shape, 1, lambda: None)
    assert cached.allows(shape, 1) is True  # 600 needed; 100 free + 600 cached - 50
    assert cached.allows(shape, 2) is False  # 900 needed


@pytest.mark.slow
def test_admission_by_memory_keeps_the_active_scenes_within_the_budget(
    family: str, alone: VideoEngine, request: pytest.FixtureRequest
) -> None:
    path = request.getfixturevalue(f"tiny_{family}_path")
    engine = build_video_engine(config_of(family, path))
    assert isinstance(engine, VideoEngine)
    # Each step costs 300 "bytes" however many scenes it holds: measured alone, 300 a scene; the budget of
    # 1000 then fits three. Memory allows three where max_active alone would allow eight.
    loop = StepScheduler(engine, max_active=8, memory_fraction=1.0, probe=FakeMemory(1000, per_step=300))
    requests = [scene(family, seed, steps=3) for seed in (91, 92, 93, 94, 95)]
    try:
        made = loop.generate(requests)
    finally:
        loop.unload()

    assert loop.stats.most_active == 3
    assert made[0].batch_size == 3  # the first scene stepped alone once, to be measured, then with two more
    for each, result in zip(requests, made, strict=True):
        assert_equal_to_alone(alone, each, result)


def test_wan_scenes_from_text_alone_step_beside_keyframed_ones(tiny_wan_path: Path) -> None:
    engine = build_video_engine(config_of("wan", tiny_wan_path))
    loop = build_video_engine(config_of("wan", tiny_wan_path, scheduling="step"))
    assert isinstance(engine, VideoEngine) and isinstance(loop, StepScheduler)
    requests = [scene("wan", 101), scene("wan", 102, text_only=True), scene("wan", 103, text_only=True)]
    try:
        made = loop.generate(requests)
    finally:
        loop.unload()

    assert [result.batch_size for result in made] == [1, 2, 2]  # the two kinds of scene step in two calls
    for each, result in zip(requests, made, strict=True):
        assert_equal_to_alone(engine, each, result)


def test_ltx_without_a_stepper_runs_call_by_call_under_step(tiny_ltx_path: Path) -> None:
    engine = build_video_engine(config_of("ltx", tiny_ltx_path))
    loop = build_video_engine(config_of("ltx", tiny_ltx_path, scheduling="step"))
    assert isinstance(engine, VideoEngine) and isinstance(loop, StepScheduler)
    requests = [scene("ltx", 111), scene("ltx", 112)]
    try:
        made = loop.generate(requests)
    finally:
        loop.unload()

    assert loop.stats.calls == Counter({2: 1})  # one pipeline call for the two queued scenes
    for each, result in zip(requests, made, strict=True):
        assert_equal_to_alone(engine, each, result)


def test_the_step_cache_needs_call_scheduling(tiny_wan_path: Path) -> None:
    with pytest.raises(ValueError, match="step_cache"):
        config_of("wan", tiny_wan_path, scheduling="step", step_cache="first_block")


def test_the_memory_budget_is_the_replicas_share_of_the_gpu(tiny_svd_path: Path) -> None:
    config = config_of("svd", tiny_svd_path, scheduling="step", step_memory_fraction=0.9)

    half = build_video_engine(config, gpu_share=0.5)
    whole = build_video_engine(config)

    assert isinstance(half, StepScheduler) and isinstance(whole, StepScheduler)
    assert half.memory_fraction == pytest.approx(0.45)
    assert whole.memory_fraction == pytest.approx(0.9)


@pytest.mark.slow
def test_wan_a14b_scenes_step_on_the_expert_of_their_own_timestep(tiny_wan_a14b_path: Path) -> None:
    engine = build_video_engine(config_of("wan", tiny_wan_a14b_path))
    loop = build_video_engine(config_of("wan", tiny_wan_a14b_path, scheduling="step"))
    assert isinstance(engine, VideoEngine) and isinstance(loop, StepScheduler)
    # Both cross the boundary between the experts; the late scene joins while the first is past it.
    long, late = scene("wan", 121, steps=6), scene("wan", 122, steps=3)
    joined: list[Call] = []

    def after_step(step: int, total: int) -> None:
        if step == 3:
            joined.append(Call(loop, [late]))
            wait_until(lambda: loop.waiting == 1)

    try:
        first = Call(loop, [long], on_step=after_step)
        [made_long], [made_late] = first.wait(), joined[0].wait()
    finally:
        loop.unload()

    assert_equal_to_alone(engine, long, made_long)
    assert_equal_to_alone(engine, late, made_late)
    # Timesteps 1000, 953, 883 | 771, 562, 24 for the long scene and 1000 | 835, 24 for the late one (the
    # high-noise expert left of |, boundary 875). Joined after the long one's third step, the late one's
    # first step runs on the other expert in a call of its own; its last two share the long one's calls.
    assert loop.stats.calls == Counter({1: 5, 2: 2})
    assert made_late.batch_size == 2


class CodecProbe:
    """A `Stepper` that makes no frames but records how its VAE-using calls (`start`, `finish`) and its
    steps interleave. `finish` holds its decode open until a step has run beside it, and, while a late
    scene is waiting to start, for a further second in which that start must not begin."""

    def __init__(self, loop: StepScheduler) -> None:
        self.loop = loop
        self.decoding = threading.Event()
        self.stepped_beside_decode = threading.Event()
        self.starts_during_decode = 0
        self.late: list[Call] = []

    def start(self, item: Any) -> SceneState:
        if self.decoding.is_set():
            self.starts_during_decode += 1
        scheduler = type("Timesteps", (), {"timesteps": torch.arange(item.param("num_inference_steps"))})()
        return SceneState(item=item, scheduler=scheduler, latents=torch.zeros(1))

    def key(self, state: SceneState) -> tuple[Any, ...]:
        return ()

    def split(self, states: list[SceneState]) -> list[list[SceneState]]:
        return [states]

    def advance(self, states: list[SceneState]) -> None:
        if self.decoding.is_set():
            self.stepped_beside_decode.set()
        for state in states:
            state.step += 1

    def finish(self, state: SceneState) -> SceneFrames:
        if not self.late:  # the first scene to finish: the loop must keep stepping the others meanwhile
            self.decoding.set()
            assert self.stepped_beside_decode.wait(WAIT_S)
            self.late.append(Call(self.loop, [scene("svd", 133, steps=1)]))
            wait_until(lambda: self.loop.waiting == 0)  # admitted: the loop now wants to start it
            time.sleep(1.0)  # were starts not kept from decodes, it would start within this second
            self.decoding.clear()
        return SceneFrames(frames=np.zeros((1, 8, 8, 3), np.uint8), seed=state.item.seed, seconds=0.0)


@pytest.mark.slow
def test_with_a_decoder_thread_decodes_overlap_steps_but_never_a_keyframes_encoding(
    tiny_svd_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = build_video_engine(config_of("svd", tiny_svd_path))
    assert isinstance(engine, VideoEngine)
    loop = StepScheduler(engine, decode_thread=True)
    probe = CodecProbe(loop)
    monkeypatch.setattr(engine, "stepper", lambda: probe)
    try:
        # A one-step scene finishes first and decodes while the 20-step one goes on stepping.
        made = loop.generate([scene("svd", 131, steps=1), scene("svd", 132, steps=20)])
        probe.late[0].wait()
    finally:
        loop.unload()

    assert len(made) == 2
    assert probe.stepped_beside_decode.is_set()
    assert probe.starts_during_decode == 0


class SharedDevice:
    """Memory as one process sees it while its steps and a decode beside them allocate at once: a step over
    n scenes peaks 300 x n above what is allocated, a decode 1000, and their peaks add up while they overlap."""

    STEP, DECODE = 300, 1000

    def __init__(self) -> None:
        self.decoding = False
        self._peak = 0

    def spend(self, transient: int) -> None:
        self._peak = max(self._peak, transient + (self.DECODE if self.decoding else 0))

    def free(self) -> int:
        return 10**6

    def reserved(self) -> int:
        return 0

    def allocated(self) -> int:
        return 0

    def peak(self) -> int:
        return self._peak

    def reset_peak(self) -> None:
        self._peak = 0

    def total(self) -> int:
        return 10**6


class MemoryStepper(CodecProbe):
    """A `CodecProbe` whose steps and decodes spend memory on a `SharedDevice`; the first decode holds on
    until a step has run beside it."""

    def __init__(self, loop: StepScheduler, device: SharedDevice) -> None:
        super().__init__(loop)
        self.device = device
        self.decodes = 0

    def advance(self, states: list[SceneState]) -> None:
        if self.stepped_beside_decode.is_set():  # later steps come after that decode, so they run alone
            wait_until(lambda: self.loop.decoding == 0)
        self.device.spend(SharedDevice.STEP * len(states))
        super().advance(states)

    def finish(self, state: SceneState) -> SceneFrames:
        self.decodes += 1
        self.device.spend(SharedDevice.DECODE)
        if self.decodes > 1:  # the last scene's decode: nothing steps beside it
            return SceneFrames(frames=np.zeros((1, 8, 8, 3), np.uint8), seed=state.item.seed, seconds=0.0)
        self.device.decoding = True
        self.decoding.set()
        assert self.stepped_beside_decode.wait(WAIT_S)
        self.decoding.clear()
        self.device.decoding = False
        return SceneFrames(frames=np.zeros((1, 8, 8, 3), np.uint8), seed=state.item.seed, seconds=0.0)


def test_the_cost_per_scene_is_learned_only_from_steps_without_a_decode_beside_them(
    tiny_svd_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = build_video_engine(config_of("svd", tiny_svd_path))
    assert isinstance(engine, VideoEngine)
    device = SharedDevice()
    loop = StepScheduler(engine, memory_fraction=1.0, probe=device, decode_thread=True)
    stepper = MemoryStepper(loop, device)
    monkeypatch.setattr(engine, "stepper", lambda: stepper)
    # Two shapes, so both start at once (a shape not measured yet is admitted alone); the one-step scene
    # then decodes while the six-step one steps, and those steps peak 300 + 1000.
    short, long = scene("svd", 141, steps=1), dataclasses.replace(scene("svd", 142, steps=6), num_frames=4)
    try:
        made = loop.generate([short, long])
    finally:
        loop.unload()

    assert len(made) == 2 and stepper.stepped_beside_decode.is_set()
    admission = loop._admission
    assert admission is not None
    assert admission.per_scene == {(64, 64, 8): SharedDevice.STEP, (64, 64, 4): SharedDevice.STEP}
    # Only the decode with no step beside it (the last one) says what a decode costs.
    assert admission.decode_cost == SharedDevice.DECODE


def test_the_gpu_memory_metric_keeps_the_peak_the_loop_resets(monkeypatch: pytest.MonkeyPatch) -> None:
    # The loop resets torch's peak counter at every step it measures; the replica's metric is the peak
    # since it started.
    from engines.video import memory as device_memory

    peaks = iter([9_000, 2_000])
    counter = {"peak": 0}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: counter["peak"])
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: counter.update(peak=0))
    monkeypatch.setattr(device_memory, "_PEAK_BEFORE_RESETS", {})
    memory = device_memory.CudaMemory(torch.device("cuda", 0))

    counter["peak"] = next(peaks)  # a step that peaked at 9000
    memory.reset_peak()
    counter["peak"] = next(peaks)  # the next one at 2000

    assert memory.peak() == 2_000  # what admission measures: this step alone
    assert device_memory.peak_memory_allocated(torch.device("cuda", 0)) == 9_000


def test_a_cpu_offloaded_model_is_parked_when_the_loop_runs_out_of_scenes(
    tiny_wan_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A pipeline call ends with maybe_free_model_hooks, which sends CPU-offloaded models back to the CPU;
    # the loop never makes that call, so without parking the last model used would hold the GPU while idle.
    loop = build_video_engine(config_of("wan", tiny_wan_path, scheduling="step"))
    assert isinstance(loop, StepScheduler)
    loop.engine.load()
    loop.engine._runtime = dataclasses.replace(loop.engine.runtime, cpu_offload=True)  # as on CUDA
    pipeline = loop.engine._pipeline
    parked: list[int] = []
    real = pipeline.maybe_free_model_hooks
    monkeypatch.setattr(pipeline, "maybe_free_model_hooks", lambda: parked.append(loop.active) or real())
    try:
        loop.generate([scene("wan", 151), scene("wan", 152, steps=3)])
        wait_until(lambda: len(parked) > 0)
    finally:
        loop.unload()

    assert parked[0] == 0  # only once no scene was left in the loop


@pytest.mark.slow
def test_when_torch_compile_gives_up_the_loop_steps_on_uncompiled(
    tiny_wan_path: Path, alone_wan: VideoEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Scenes join and leave, so a step's row count keeps changing; a fullgraph compile past its
    # recompile limit raises instead of running. (The eager backend: dynamo's guards and limits, no codegen.)
    import torch._dynamo

    loop = build_video_engine(config_of("wan", tiny_wan_path, scheduling="step"))
    assert isinstance(loop, StepScheduler)
    loop.engine.load()
    real_stepper = loop.engine.stepper

    def stepper_with_a_low_limit() -> Any:
        # dynamo's settings belong to the thread that sets them: this runs on the loop's.
        torch._dynamo.config.recompile_limit = 1
        return real_stepper()

    monkeypatch.setattr(loop.engine, "stepper", stepper_with_a_low_limit)
    pipeline = loop.engine._pipeline
    pipeline.transformer = torch.compile(pipeline.transformer, backend="eager", fullgraph=True)
    loop.engine._runtime = dataclasses.replace(loop.engine.runtime, torch_compile=True)
    # Two scenes step together (4 rows), then the longer one alone (2 rows): a second compile.
    requests = [scene("wan", 161, steps=2), scene("wan", 162, steps=4)]
    try:
        made = loop.generate(requests)
        runtime = loop.engine.runtime
    finally:
        torch._dynamo.reset()
        loop.unload()

    for each, result in zip(requests, made, strict=True):
        assert_equal_to_alone(alone_wan, each, result)
    assert loop.stats.calls[2] == 2 and loop.stats.calls[1] == 2
    assert not isinstance(pipeline.transformer, torch._dynamo.eval_frame.OptimizedModule)
    assert runtime is not None and not runtime.torch_compile


@pytest.fixture(scope="module")
def alone_wan(tiny_wan_path: Path) -> VideoEngine:
    engine = build_video_engine(config_of("wan", tiny_wan_path))
    assert isinstance(engine, VideoEngine)
    return engine


# -- on a GPU ----------------------------------------------------------------------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@needs_cuda
def test_on_cuda_admission_sees_the_memory_another_process_holds() -> None:
    # The driver's free memory counts every process on the device; this one allocates nothing here.
    import subprocess
    import sys

    from engines.video.memory import CudaMemory

    memory = CudaMemory(torch.device("cuda"))
    admission = MemoryAdmission(memory, fraction=0.9)
    shape, gib = (1, 1, 1), 2**30
    admission.per_scene[shape] = gib
    assert admission.allows(shape, 1)  # 2 GiB on an idle device
    hog = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time, torch; free, _ = torch.cuda.mem_get_info(); "
            "held = torch.empty(int(free - 1.5 * 2**30), dtype=torch.uint8, device='cuda'); "
            "print('held', flush=True); time.sleep(300)",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert hog.stdout is not None and hog.stdout.readline().strip() == b"held"
        assert memory.free() < 2 * gib and memory.allocated() < gib
        assert not admission.allows(shape, 1)
    finally:
        hog.kill()
        hog.wait()


@pytest.mark.gpu
@needs_cuda
def test_on_cuda_the_loop_learns_costs_and_its_scenes_equal_the_same_scenes_alone(
    tiny_svd_path: Path,
) -> None:
    from engines.video.memory import CudaMemory, peak_memory_allocated

    cuda = torch.device("cuda")
    alone = build_video_engine(config_of("svd", tiny_svd_path, device="cuda"))
    loop = build_video_engine(config_of("svd", tiny_svd_path, device="cuda", scheduling="step"))
    assert isinstance(alone, VideoEngine) and isinstance(loop, StepScheduler)
    requests = [scene("svd", seed, steps=3) for seed in (171, 172, 173, 174)]
    try:
        made = loop.generate(requests)
        admission = loop._admission
    finally:
        loop.unload()

    assert admission is not None and isinstance(admission.probe, CudaMemory)
    assert admission.per_scene and all(cost > 0 for cost in admission.per_scene.values())
    assert peak_memory_allocated(cuda) >= torch.cuda.max_memory_allocated(cuda) > 0
    for each, result in zip(requests, made, strict=True):
        [reference] = alone.generate([each])
        # float16 on CUDA: kernels chosen per batch size round differently (the engine's own GPU test's bound).
        assert np.abs(result.frames.astype(int) - reference.frames.astype(int)).max() <= 8
