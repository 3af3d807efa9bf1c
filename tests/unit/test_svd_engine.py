"""The SVD engine on a tiny random model: shapes, seeding, batching, progress, cancel, errors, memory."""

from __future__ import annotations

import gc
import json
import shutil
import threading
import weakref
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.errors import GenerationCancelled, InvalidInput, ModelUnavailable
from engines import loading
from engines.loading import Placement
from engines.video.config import SVDConfig
from engines.video.step_loop import StepScheduler
from engines.video.svd import pipeline as svd_pipeline
from engines.video.svd.engine import SceneFrames, SceneRequest, SVDEngine
from engines.video.svd.pipeline import CUDA_ATTENTION_BATCH_LIMIT, attention_batch_per_row
from engines.video.svd.steps import SVDSceneState, SVDStepper
from tests.support.tiny_models import TINY_SVD_SETTINGS

pytestmark = pytest.mark.unit

NEEDS_CUDA = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
SVD_XT_UNET = json.loads(
    (Path(__file__).parents[2] / "bench" / "svd_xt_config" / "unet.json").read_text(encoding="utf-8")
)


def keyframe(seed: int, size: tuple[int, int] = (64, 64)) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def engine(tiny_svd_path: Path) -> SVDEngine:
    # One loaded engine for the read-only tests of this module; tests that unload build their own.
    config = SVDConfig(model_path=str(tiny_svd_path), **TINY_SVD_SETTINGS)
    engine = SVDEngine(config)
    engine.load()
    return engine


def test_runtime_reports_the_resolved_device_and_dtype(engine: SVDEngine) -> None:
    assert engine.runtime is not None
    assert (engine.runtime.device, engine.runtime.dtype, engine.runtime.attention) == (
        "cpu",
        "float32",
        "sdpa",
    )


def long_scenes(chunk: int, count: int = 2, size: int = 32) -> list[SceneRequest]:
    """SVD-XT's frame count, 25, decoded in chunks that do not divide it (8 leaves one frame over). Small
    frames and one step keep the 50-frame decodes cheap; below 32x32 the random decoder magnifies the last
    bit a batched matmul rounds differently past the batching tolerance."""
    return [
        SceneRequest(
            image=keyframe(70 + i, (size, size)),
            seed=70 + i,
            width=size,
            height=size,
            num_frames=25,
            num_inference_steps=1,
            decode_chunk_size=chunk,
        )
        for i in range(count)
    ]


@pytest.mark.parametrize("chunk", [8, 7, 3])
def test_a_batch_of_25_frame_scenes_equals_its_singles_whatever_the_decode_chunk(
    engine: SVDEngine, chunk: int
) -> None:
    # The VAE's temporal decoder takes each chunk of frames as one clip: a chunk that held frames of two
    # videos (the stock decode flattens the batch) would blend them: 74 to 182 grey levels off here.
    requests = long_scenes(chunk)

    batch = engine.generate(requests)
    singles = [engine.generate([request])[0] for request in requests]

    assert [item.batch_size for item in batch] == [2, 2]
    assert [item.frames.shape for item in batch] == [(25, 32, 32, 3)] * 2
    differences = max_differences(batch, singles)
    assert max(differences) <= 2, f"grey levels off, per video: {differences}"


def max_differences(made: list[SceneFrames], expected: list[SceneFrames]) -> list[int]:
    """The largest difference in grey levels between each pair of videos."""
    return [
        int(np.abs(a.frames.astype(int) - b.frames.astype(int)).max())
        for a, b in zip(made, expected, strict=True)
    ]


def test_scenes_with_different_motion_share_one_call_and_equal_single_runs(engine: SVDEngine) -> None:
    # A story's scenes ask for different motion; fps and noise may differ too. All are per-video inputs.
    requests = [
        SceneRequest(image=keyframe(40), seed=1, motion_bucket_id=20),
        SceneRequest(image=keyframe(41), seed=2, motion_bucket_id=200, fps=12),
        SceneRequest(image=keyframe(42), seed=3, motion_bucket_id=127, noise_aug_strength=0.3),
    ]
    steps: list[tuple[int, int]] = []

    batch = engine.generate(requests, progress=lambda step, total: steps.append((step, total)))
    singles = [engine.generate([request])[0] for request in requests]

    assert steps == [(1, 2), (2, 2)]  # one pipeline call
    for batched, single in zip(batch, singles, strict=True):
        assert np.abs(batched.frames.astype(int) - single.frames.astype(int)).max() <= 2


def test_motion_conditioning_changes_the_video(engine: SVDEngine) -> None:
    # Guards the per-video conditioning: were the values dropped, every motion would give the same frames.
    image = keyframe(43)
    calm, lively = engine.generate(
        [
            SceneRequest(image=image, seed=5, motion_bucket_id=0),
            SceneRequest(image=image, seed=5, motion_bucket_id=255),
        ]
    )

    assert np.abs(calm.frames.astype(int) - lively.frames.astype(int)).mean() > 0.5


def test_requests_with_different_shapes_run_in_sub_batches_and_keep_their_order(engine: SVDEngine) -> None:
    requests = [
        SceneRequest(image=keyframe(20), seed=1),
        SceneRequest(image=keyframe(21, (32, 48)), seed=2, width=32, height=48, num_frames=4),
        SceneRequest(image=keyframe(22), seed=3),
    ]
    steps: list[tuple[int, int]] = []

    results = engine.generate(requests, progress=lambda step, total: steps.append((step, total)))

    assert [r.frames.shape for r in results] == [(8, 64, 64, 3), (4, 48, 32, 3), (8, 64, 64, 3)]
    assert [r.seed for r in results] == [1, 2, 3]
    assert len(steps) == 4  # two pipeline calls of two steps each
    assert [r.batch_size for r in results] == [2, 1, 2]


@pytest.mark.parametrize(
    ("change", "param", "shown"),
    [
        # SVD's own conditioning; what every family checks is in test_video_engine_contract.py.
        ({"motion_bucket_id": 300}, "motion_bucket_id", "300"),
        ({"noise_aug_strength": -0.5}, "noise_aug_strength", "-0.5"),
        ({"min_guidance_scale": 4.0, "max_guidance_scale": 2.0}, "min_guidance_scale", "4.0"),
    ],
)
def test_bad_request_values_name_the_parameter_and_value(
    engine: SVDEngine, change: dict, param: str, shown: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        engine.generate([SceneRequest(image=keyframe(6), **change)])
    assert caught.value.param == param
    assert shown in str(caught.value)


@pytest.mark.slow
def test_out_of_memory_splits_the_batch_and_still_matches_single_runs(
    tiny_svd_config: SVDConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = SVDEngine(tiny_svd_config.model_copy(update={"max_guidance_scale": 1.0}))
    engine.load()
    requests = [SceneRequest(image=keyframe(30 + i), seed=i) for i in range(3)]
    expected = [engine.generate([request])[0].frames for request in requests]
    unet = engine._pipeline.unet
    real_forward, batch_sizes = unet.forward, []

    def forward_that_fits_one_video(sample: torch.Tensor, *args, **kwargs):
        batch_sizes.append(sample.shape[0])
        if sample.shape[0] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(sample, *args, **kwargs)

    monkeypatch.setattr(unet, "forward", forward_that_fits_one_video)
    results = engine.generate(requests)

    # Whole batch, then halves (2), then one at a time: three videos, two steps each.
    assert batch_sizes == [3, 2] + [1] * 6
    for result, frames in zip(results, expected, strict=True):
        assert np.abs(result.frames.astype(int) - frames.astype(int)).max() <= 2


@pytest.mark.slow
def test_out_of_memory_after_all_retries_makes_the_model_unavailable(
    tiny_svd_config: SVDConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = SVDEngine(tiny_svd_config)
    engine.load()

    def always_out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(engine._pipeline.unet, "forward", always_out_of_memory)

    with pytest.raises(ModelUnavailable, match="out of GPU memory.*after 2 retries"):
        engine.generate([SceneRequest(image=keyframe(8), seed=1), SceneRequest(image=keyframe(9), seed=2)])


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=NEEDS_CUDA)])
def half_engine(
    request: pytest.FixtureRequest, tiny_svd_path: Path, monkeypatch: pytest.MonkeyPatch
) -> SVDEngine:
    """The tiny model in float16, so diffusers upcasts its VAE (`force_upcast`) to encode each keyframe. On
    the CPU, where loading would choose float32, the kernels are slow but the dtypes are a GPU replica's."""
    device = request.param
    if device == "cpu":
        half = Placement(torch.device("cpu"), torch.float16)
        monkeypatch.setattr(loading, "resolve_placement", lambda config: half)
    settings = {**TINY_SVD_SETTINGS, "device": device, "width": 32, "height": 32, "num_frames": 4}
    engine = SVDEngine(SVDConfig(model_path=str(tiny_svd_path), dtype="float16", **settings))
    engine.load()
    assert engine._pipeline.vae.dtype == torch.float16 and engine._pipeline.vae.config.force_upcast
    return engine


def out_of_memory_while_upcast(engine: SVDEngine, monkeypatch: pytest.MonkeyPatch) -> list[torch.dtype]:
    """Make the engine's next keyframe encoding run out of memory; returns the VAE's dtype at each one."""
    pipeline = engine._pipeline
    encode, seen = pipeline._encode_vae_image, []

    def encode_out_of_memory_once(*args, **kwargs):
        seen.append(pipeline.vae.dtype)
        if len(seen) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return encode(*args, **kwargs)

    monkeypatch.setattr(pipeline, "_encode_vae_image", encode_out_of_memory_once)
    return seen


@pytest.mark.slow
def test_the_retry_after_an_out_of_memory_error_while_the_vae_is_upcast_succeeds(
    half_engine: SVDEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Left in float32, the VAE would take float16 latents at the retry's decode and fail with "Input type
    # (c10::Half) and bias type (float) should be the same": not an OOM, so out of the ladder's reach.
    seen = out_of_memory_while_upcast(half_engine, monkeypatch)

    [result] = half_engine.generate([SceneRequest(image=keyframe(80, (32, 32)), seed=1)])

    assert seen == [torch.float32, torch.float32]  # both encodings ran inside the upcast
    assert half_engine._pipeline.vae.dtype == torch.float16
    assert result.frames.shape == (4, 32, 32, 3)


@pytest.mark.slow
@pytest.mark.parametrize("scheduling", ["call", "step"])
def test_after_an_out_of_memory_error_while_the_vae_is_upcast_the_next_scene_works(
    half_engine: SVDEngine, monkeypatch: pytest.MonkeyPatch, scheduling: str
) -> None:
    half_engine.config.oom_retries = 0  # the failure reaches the caller, as on the ladder's last rung
    model = half_engine if scheduling == "call" else StepScheduler(half_engine)
    seen = out_of_memory_while_upcast(half_engine, monkeypatch)
    request = SceneRequest(image=keyframe(81, (32, 32)), seed=2)

    try:
        with pytest.raises(ModelUnavailable, match="out of (GPU )?memory"):
            model.generate([request])
        [result] = model.generate([request])
    finally:
        if isinstance(model, StepScheduler):
            model.unload()

    assert seen == [torch.float32, torch.float32]
    assert result.frames.shape == (4, 32, 32, 3) and result.frames.std() > 1


def test_at_svd_xt_size_four_guided_scenes_would_pass_cudas_attention_batch_limit() -> None:
    # Temporal attention attends over a latent position's frames: its batch is UNet rows x positions. Four
    # guided scenes (max_batch_size's default, and the step benchmark's batch) bring 8 rows.
    per_row = attention_batch_per_row(SVD_XT_UNET, 8, 1024, 576, 25)

    assert per_row == 128 * 72  # every position of a 1024x576 latent, at the UNet's first level
    assert 8 * per_row == 73_728 > CUDA_ATTENTION_BATCH_LIMIT
    assert 7 * per_row <= CUDA_ATTENTION_BATCH_LIMIT
    # Spatial attention's batch is rows x frames (8 x 25 = 200 here), counted as well: it leads only when a
    # clip has more frames than its latent has positions.
    assert attention_batch_per_row(SVD_XT_UNET, 8, 64, 64, 100) == 100


def xt_sized(count: int, guided: bool) -> list[SceneRequest]:
    """Requests at SVD-XT's size: the tiny UNet attends at its first level and its VAE scales by 8, as
    SVD-XT's, so an attention call of theirs would have SVD-XT's batch."""
    image = keyframe(95, (1024, 576))
    guidance = 3.0 if guided else 1.0
    return [
        SceneRequest(image=image, seed=i, width=1024, height=576, num_frames=25, max_guidance_scale=guidance)
        for i in range(count)
    ]


def test_call_mode_splits_a_group_whose_attention_batch_would_pass_the_limit(
    engine: SVDEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def record(group: list, progress: object, cancel: object) -> list[SceneFrames]:
        calls.append(len(group))
        return [SceneFrames(frames=np.zeros((1, 1, 1, 3), np.uint8), seed=0, seconds=0.0)] * len(group)

    monkeypatch.setattr(engine, "_run_with_retries", record)  # the split, not the 1024x576 videos

    engine.generate(xt_sized(4, guided=True) + xt_sized(8, guided=False))

    # At most 7 rows a call (7 x 9,216 = 64,512): guided scenes bring 2 rows each, so 3 and then 1; scenes
    # without guidance 1 each, so 7 and then 1.
    assert calls == [3, 1, 7, 1]


def test_step_mode_splits_a_step_whose_attention_batch_would_pass_the_limit(engine: SVDEngine) -> None:
    stepper = SVDStepper(engine._pipeline, "float32")
    guided, plain = (engine.resolve(0, request) for request in (*xt_sized(1, True), *xt_sized(1, False)))

    def state(item: object, rows: int) -> SVDSceneState:  # only the rows count for the split
        nothing = torch.zeros(rows, 1)
        return SVDSceneState(
            item=item, scheduler=None, latents=torch.zeros(1), image_latents=nothing,
            image_embeddings=nothing, added_time_ids=nothing, guidance=torch.zeros(1), guided=rows == 2,
        )  # fmt: skip

    states = [state(guided, 2), state(guided, 2), state(guided, 2), state(plain, 1), state(guided, 2)]

    calls = stepper.split(states)

    assert [[states.index(s) for s in call] for call in calls] == [[0, 1, 2, 3], [4]]  # 7 rows, then 2
    per_row = attention_batch_per_row(SVD_XT_UNET, 8, 1024, 576, 25)
    assert all(
        sum(len(s.image_latents) for s in call) * per_row <= CUDA_ATTENTION_BATCH_LIMIT for call in calls
    )


def generate_once(model: SVDEngine | StepScheduler, requests: list[SceneRequest]) -> list[SceneFrames]:
    """``model.generate(requests)``; a step loop is unloaded after it, whatever happens."""
    try:
        return model.generate(requests)
    finally:
        if isinstance(model, StepScheduler):
            model.unload()


def attention_batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The batch of every attention call from now on (diffusers' attention goes through torch's SDPA)."""
    batches: list[int] = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def recorded(query: torch.Tensor, *args, **kwargs):
        batches.append(query.shape[0])
        return sdpa(query, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recorded)
    return batches


@pytest.mark.slow
@pytest.mark.parametrize("scheduling", ["call", "step"])
def test_no_attention_call_passes_the_limit_and_a_split_batch_equals_its_singles(
    engine: SVDEngine, tiny_svd_config: SVDConfig, monkeypatch: pytest.MonkeyPatch, scheduling: str
) -> None:
    # A limit the tiny model reaches: at 32x32 a row brings 16 latent positions, so 64 holds 4 rows.
    monkeypatch.setattr(svd_pipeline, "CUDA_ATTENTION_BATCH_LIMIT", 64)
    small = {"width": 32, "height": 32, "num_inference_steps": 1}
    requests = [
        SceneRequest(image=keyframe(100 + i, (32, 32)), seed=100 + i, max_guidance_scale=guidance, **small)
        for i, guidance in enumerate([3.0, 1.0, 3.0, 3.0])  # 7 rows in all: 112 together
    ]
    model = engine if scheduling == "call" else StepScheduler(SVDEngine(tiny_svd_config))
    batches = attention_batches(monkeypatch)
    made = generate_once(model, requests)
    monkeypatch.undo()  # the singles below run with the real SDPA and limit

    assert max(batches) == 64
    # call: the three guided scenes as 2 + 1, the plain one alone; step: [guided, plain] and [guided, guided]
    assert [result.batch_size for result in made] == ([2, 1, 2, 1] if scheduling == "call" else [2, 2, 2, 2])
    singles = [engine.generate([request])[0] for request in requests]
    assert max(max_differences(made, singles)) <= 2


@pytest.mark.parametrize(
    "scheduling", [pytest.param("call", marks=NEEDS_CUDA), pytest.param("step", marks=NEEDS_CUDA)]
)
def test_on_cuda_four_guided_scenes_at_svd_xt_size_run(
    cuda_engine: SVDEngine, monkeypatch: pytest.MonkeyPatch, scheduling: str
) -> None:
    # Together they would give temporal attention a batch of 73,728: past CUDA's grid, the kernel refuses.
    # Two steps, so that under `step` all four meet in the second one (the loop's memory admission on CUDA
    # runs a new shape's first scene alone once, to measure it).
    requests = [replace(request, num_inference_steps=2) for request in xt_sized(4, guided=True)]
    model = cuda_engine if scheduling == "call" else StepScheduler(cuda_engine)
    batches = attention_batches(monkeypatch)
    made = generate_once(model, requests)

    assert max(batches) <= CUDA_ATTENTION_BATCH_LIMIT
    assert [result.frames.shape for result in made] == [(25, 576, 1024, 3)] * 4
    assert max(result.batch_size for result in made) == 3  # 6 rows a call at most


def test_a_missing_folder_gives_a_clear_error(tmp_path: Path) -> None:
    engine = SVDEngine(SVDConfig(model_path=str(tmp_path / "nowhere"), device="cpu"))

    with pytest.raises(ModelUnavailable, match="nowhere.*no model_index.json"):
        engine.load()
    assert not engine.loaded


def test_corrupted_weights_give_a_clear_error(tiny_svd_path: Path, tmp_path: Path) -> None:
    broken = Path(shutil.copytree(tiny_svd_path, tmp_path / "svd"))
    weights = broken / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    engine = SVDEngine(SVDConfig(model_path=str(broken), device="cpu"))

    with pytest.raises(
        ModelUnavailable, match="cannot load PerVideoConditioningSVDPipeline from the local folder"
    ):
        engine.load()


def test_an_uncached_hub_model_with_downloads_off_gives_a_clear_error() -> None:
    engine = SVDEngine(SVDConfig(model="nobody/not-a-real-svd-model", auto_download=False, device="cpu"))

    with pytest.raises(ModelUnavailable, match="not-a-real-svd-model.*auto_download is off"):
        engine.load()


@pytest.mark.slow
def test_unload_leaves_no_reference_to_the_models(tiny_svd_config: SVDConfig) -> None:
    engine = SVDEngine(tiny_svd_config)
    engine.generate([SceneRequest(image=keyframe(40), seed=1)])  # loads lazily
    pipeline_ref = weakref.ref(engine._pipeline)
    unet_ref = weakref.ref(engine._pipeline.unet)

    engine.unload()
    gc.collect()

    assert pipeline_ref() is None
    assert unet_ref() is None
    assert not engine.loaded and engine.runtime is None


@pytest.mark.slow
def test_unload_after_a_cancel_still_frees_the_models(tiny_svd_config: SVDConfig) -> None:
    engine = SVDEngine(tiny_svd_config)
    engine.load()
    unet_ref = weakref.ref(engine._pipeline.unet)
    cancel = threading.Event()

    try:
        engine.generate([SceneRequest(image=keyframe(41))], progress=lambda s, t: cancel.set(), cancel=cancel)
    except GenerationCancelled as exc:
        kept = exc  # a caller that keeps the error must not keep the model alive through it
    engine.unload()
    gc.collect()

    assert isinstance(kept, GenerationCancelled)
    assert unet_ref() is None


@pytest.fixture
def cuda_engine(tiny_svd_path: Path) -> SVDEngine:
    """The tiny model in float16 on CUDA, as a GPU replica runs it (its VAE upcast to encode keyframes)."""
    settings = {**TINY_SVD_SETTINGS, "device": "cuda"}
    engine = SVDEngine(SVDConfig(model_path=str(tiny_svd_path), dtype="float16", **settings))
    engine.load()
    return engine


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("chunk", [8, 7, 3])
def test_on_cuda_two_videos_decode_as_each_alone(cuda_engine: SVDEngine, chunk: int) -> None:
    # The decode alone, in float16: each video goes through the decoder in the same chunks whether batched
    # or not, so the frames are the same to the kernel's rounding. (Whole scenes made on CUDA may also
    # differ by the UNet's batched rounding, which float16 magnifies; the CPU test covers those.)
    pipeline = cuda_engine._pipeline
    generator = torch.Generator("cuda").manual_seed(chunk)
    latents = torch.randn((2, 25, 4, 8, 8), generator=generator, device="cuda", dtype=torch.float16)

    together = pipeline.decode_latents(latents, 25, chunk)
    alone = torch.cat([pipeline.decode_latents(video, 25, chunk) for video in latents.split(1)])

    torch.testing.assert_close(together, alone)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda_in_float16(tiny_svd_path: Path) -> None:
    engine = SVDEngine(
        SVDConfig(
            model_path=str(tiny_svd_path),
            device="cuda",
            dtype="float16",
            width=64,
            height=64,
            num_frames=8,
            num_inference_steps=2,
        )
    )
    engine.load()
    assert engine.runtime is not None and (engine.runtime.device, engine.runtime.dtype) == ("cuda", "float16")
    requests = [SceneRequest(image=keyframe(50 + i), seed=i) for i in range(2)]

    results = engine.generate(requests)
    again = engine.generate(requests[:1])

    assert [r.frames.shape for r in results] == [(8, 64, 64, 3)] * 2
    assert all(r.frames.dtype == np.uint8 and r.frames.std() > 1 for r in results)
    assert np.abs(results[0].frames.astype(int) - again[0].frames.astype(int)).max() <= 8
    allocated = torch.cuda.memory_allocated()
    engine.unload()
    assert torch.cuda.memory_allocated() < allocated


def test_non_finite_output_makes_the_model_unavailable_instead_of_garbage_pixels(
    tiny_svd_config: SVDConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = SVDEngine(tiny_svd_config)
    engine.load()
    real_forward = engine._pipeline.unet.forward

    def overflowing_forward(*args, **kwargs):
        (noise,) = real_forward(*args, **kwargs)
        return (torch.full_like(noise, float("nan")),)

    monkeypatch.setattr(engine._pipeline.unet, "forward", overflowing_forward)

    with pytest.raises(ModelUnavailable, match="non-finite values in float32"):
        engine.generate([SceneRequest(image=keyframe(60), seed=1)])
