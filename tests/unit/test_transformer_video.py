"""LTX-Video and Wan engines on tiny random models: shapes, seeding, batching, text, progress, cancel,
family rules, fallback and the speed and memory options."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.errors import GenerationCancelled, InvalidInput, ModelUnavailable
from core.status import Animator
from engines.video.base import SceneRequest
from engines.video.config import LTXConfig, TransformerVideoConfig, WanConfig
from engines.video.families import build_video_engine, video_engine
from engines.video.text import TransformerVideoEngine
from tests.support.tiny_models import TINY_LTX_SETTINGS, TINY_WAN_SETTINGS

pytestmark = pytest.mark.unit

FAMILIES = ["ltx", "wan"]


def keyframe(seed: int, size: tuple[int, int] = (64, 64)) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def config_of(family: str, path: Path, **overrides: object) -> TransformerVideoConfig:
    if family == "ltx":
        return LTXConfig(model_path=str(path), **{**TINY_LTX_SETTINGS, **overrides})
    return WanConfig(model_path=str(path), **{**TINY_WAN_SETTINGS, **overrides})


@pytest.fixture(scope="module", params=FAMILIES)
def engine(request: pytest.FixtureRequest) -> TransformerVideoEngine:
    path = request.getfixturevalue(f"tiny_{request.param}_path")
    engine = build_video_engine(config_of(request.param, path))
    assert isinstance(engine, TransformerVideoEngine)
    engine.load()
    return engine


def test_any_frame_count_runs_at_the_next_valid_one_and_keeps_what_was_asked(
    engine: TransformerVideoEngine,
) -> None:
    image = keyframe(1)
    [short] = engine.generate([SceneRequest(image=image, seed=3, prompt="sea", num_frames=6)])
    [full] = engine.generate([SceneRequest(image=image, seed=3, prompt="sea", num_frames=9)])

    assert short.frames.shape[0] == 6
    # 6 frames run as 9 (LTX 8k+1, Wan 4k+1 after rounding up), so they are the first 6 of those.
    np.testing.assert_array_equal(short.frames, full.frames[:6])


def test_the_prompt_reaches_the_video(engine: TransformerVideoEngine) -> None:
    image = keyframe(3)
    fox, sea = (engine.generate([SceneRequest(image=image, seed=5, prompt=p)])[0] for p in ("fox", "sea"))

    assert not np.array_equal(fox.frames, sea.frames)


def test_a_batch_of_25_frame_scenes_at_an_uneven_size_equals_its_singles(
    engine: TransformerVideoEngine,
) -> None:
    # SVD's chunked decode mixed two videos at 25 frames; LTX's and Wan's VAEs decode each latent video
    # whole, one batch row each. This holds them to it at that length, in a shape that is neither square
    # nor a power of two (96x32: 3x1 latent tokens for LTX, 6x2 patches for Wan).
    requests = [
        SceneRequest(
            image=keyframe(30 + i, (96, 32)),
            seed=30 + i,
            prompt=prompt,
            width=96,
            height=32,
            num_frames=25,
            num_inference_steps=1,
        )
        for i, prompt in enumerate(["a red fox", "the sea and the sky"])
    ]

    batch = engine.generate(requests)
    singles = [engine.generate([request])[0] for request in requests]

    assert [item.batch_size for item in batch] == [2, 2]
    for together, alone in zip(batch, singles, strict=True):
        assert together.frames.shape == (25, 32, 96, 3)
        assert np.abs(together.frames.astype(int) - alone.frames.astype(int)).max() <= 1


def test_without_a_keyframe_the_video_comes_from_the_text_and_batches_too(
    engine: TransformerVideoEngine,
) -> None:
    requests = [SceneRequest(seed=30 + i, prompt=prompt) for i, prompt in enumerate(["a red fox", "the sea"])]

    batch = engine.generate(requests)
    singles = [engine.generate([request])[0] for request in requests]
    [again] = engine.generate([requests[0]])

    assert [item.frames.shape for item in batch] == [(9, 64, 64, 3)] * 2
    assert [item.batch_size for item in batch] == [2, 2]
    np.testing.assert_array_equal(singles[0].frames, again.frames)
    for together, alone in zip(batch, singles, strict=True):
        assert np.abs(together.frames.astype(int) - alone.frames.astype(int)).max() <= 1
    # A keyframe and no keyframe never share a call (different pipelines), and both keep their order.
    mixed = engine.generate([requests[0], SceneRequest(image=keyframe(31), seed=31, prompt="the sea")])
    assert [item.batch_size for item in mixed] == [1, 1]
    np.testing.assert_array_equal(mixed[0].frames, singles[0].frames)


@pytest.mark.slow
def test_out_of_memory_splits_the_batch_and_then_makes_the_model_unavailable(
    engine: TransformerVideoEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    requests = [SceneRequest(image=keyframe(40 + i), seed=40 + i, prompt="fox") for i in range(3)]
    expected = [engine.generate([request])[0].frames for request in requests]
    transformer = engine._pipeline.transformer
    real_forward, videos_per_call = transformer.forward, []
    # LTX runs guidance as one doubled batch, Wan as two passes: one video is 2 rows or 1.
    rows_per_video = 2 if engine.config.family == "ltx" else 1

    def forward_that_fits_one_video(hidden_states: torch.Tensor, *args: object, **kwargs: object) -> object:
        videos_per_call.append(hidden_states.shape[0] // rows_per_video)
        if hidden_states.shape[0] > rows_per_video:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(hidden_states, *args, **kwargs)

    monkeypatch.setattr(transformer, "forward", forward_that_fits_one_video)
    results = engine.generate(requests)

    assert videos_per_call[:2] == [3, 2] and set(videos_per_call[2:]) == {1}
    for result, frames in zip(results, expected, strict=True):
        assert np.abs(result.frames.astype(int) - frames.astype(int)).max() <= 1

    def always_out_of_memory(*args: object, **kwargs: object) -> object:
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(transformer, "forward", always_out_of_memory)
    with pytest.raises(ModelUnavailable, match=f"{engine.label} ran out of GPU memory.*after 2 retries"):
        engine.generate(requests[:2])


@pytest.mark.parametrize(
    ("field", "value", "message"),
    # The text families' own rules (72 is a multiple of SVD's 8, not of 16 or 32); what every family
    # checks is in test_video_engine_contract.py.
    [("width", 72, "multiple of"), ("guidance_scale", 0.5, "from 1")],
)
def test_bad_request_values_name_the_field_and_value(
    engine: TransformerVideoEngine, field: str, value: object, message: str
) -> None:
    request = SceneRequest(image=keyframe(6), seed=1, prompt="fox", **{field: value})  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match=message) as caught:
        engine.generate([request])
    assert caught.value.param == field


@pytest.mark.parametrize(
    ("family", "frames", "hint"),
    [("ltx", 24, "8k\\+1 frames; use 17 or 25"), ("wan", 8, "4k\\+1 frames; use 5 or 9")],
)
def test_the_config_refuses_a_frame_count_off_the_family_rule(family: str, frames: int, hint: str) -> None:
    config_cls = LTXConfig if family == "ltx" else WanConfig
    with pytest.raises(ValueError, match=f"video.num_frames={frames}: .*{hint}"):
        config_cls(num_frames=frames)


def test_the_config_refuses_a_size_off_the_family_multiple() -> None:
    with pytest.raises(ValueError, match="video.width=400: LTX-Video needs a multiple of 32"):
        LTXConfig(width=400)
    WanConfig(width=400, height=240)  # multiples of 16 suit Wan


@pytest.mark.parametrize("family", FAMILIES)
def test_missing_weights_fall_back_with_the_reason(family: str, tmp_path: Path) -> None:
    # Imported here, not with the module: this file holds a gpu test, and the device's wheels leave out
    # engines.media, which engines.fallback imports (bench/device_wheels.py).
    from engines.fallback import animate_scenes

    engine = video_engine(config_of(family, tmp_path / "nowhere"))
    [result] = animate_scenes(
        engine, [SceneRequest(image=keyframe(7), seed=2, prompt="fox")], ["A fox"], "auto", engine.config
    )

    assert result.generator == Animator.FALLBACK
    assert result.fallback_reason is not None and "no model_index.json" in result.fallback_reason
    assert result.frames.shape == (9, 64, 64, 3)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_fallback_labels_model_frames_with_the_family(
    family: str, request: pytest.FixtureRequest
) -> None:
    # Imported here, not with the module: this file holds a gpu test, and the device's wheels leave out
    # engines.media, which engines.fallback imports (bench/device_wheels.py).
    from engines.fallback import animate_scenes

    path = request.getfixturevalue(f"tiny_{family}_path")
    engine = video_engine(config_of(family, path))
    [result] = animate_scenes(
        engine, [SceneRequest(image=keyframe(8), seed=2, prompt="fox")], ["A fox"], "auto"
    )

    assert result.generator == Animator(family)
    assert result.fallback_reason is None


@pytest.mark.parametrize("family", FAMILIES)
def test_the_engine_makes_the_frames_plain_diffusers_makes(
    family: str, request: pytest.FixtureRequest
) -> None:
    import torch
    from diffusers import LTXImageToVideoPipeline, WanImageToVideoPipeline

    path = request.getfixturevalue(f"tiny_{family}_path")
    engine = video_engine(config_of(family, path))
    [ours] = engine.generate([SceneRequest(image=keyframe(12), seed=9, prompt="a red fox")])

    pipeline_cls = LTXImageToVideoPipeline if family == "ltx" else WanImageToVideoPipeline
    pipeline = pipeline_cls.from_pretrained(str(path))
    pipeline.set_progress_bar_config(disable=True)
    extra = {"frame_rate": TINY_LTX_SETTINGS["fps"]} if family == "ltx" else {}
    plain = pipeline(
        image=keyframe(12),
        prompt="a red fox",
        negative_prompt=engine.config.negative_prompt,
        height=64,
        width=64,
        num_frames=9,
        num_inference_steps=2,
        guidance_scale=engine.config.guidance_scale,
        generator=torch.Generator().manual_seed(9),
        max_sequence_length=16,
        output_type="np",
        **extra,
    ).frames[0]

    expected = np.clip(np.asarray(plain) * 255.0, 0, 255).round().astype(np.uint8)
    np.testing.assert_array_equal(ours.frames, expected)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_plain_options_give_the_plain_pipeline_frames_and_each_option_takes_effect(
    family: str, request: pytest.FixtureRequest
) -> None:
    import torch

    path = request.getfixturevalue(f"tiny_{family}_path")
    plain = video_engine(config_of(family, path))
    ask = SceneRequest(image=keyframe(9), seed=4, prompt="red fox", num_inference_steps=4)
    [reference] = plain.generate([ask])

    # Off by default: vae_tiling only splits large frames, so at 64x64 it must equal the plain frames too.
    tiled = video_engine(config_of(family, path, vae_tiling=True))
    np.testing.assert_array_equal(tiled.generate([ask])[0].frames, reference.frames)
    assert tiled.runtime is not None and tiled.runtime.vae_tiling
    # Each option's mark on the loaded transformer, looked at after a call: an option that did nothing
    # would still make frames of the right shape.
    for option, hooks_added in (
        ({"step_cache": "first_block"}, {"fbc_leader_block_hook", "fbc_block_hook"}),
        ({"step_cache": "taylorseer"}, {"taylorseer_cache"}),
        ({"fp8_weights": True}, {"layerwise_casting"}),
        # CUDA-only, so ignored with a warning here (test_group_offload_and_compile_reach_both_wan_a14b_experts
        # applies them as CUDA would).
        ({"torch_compile": True, "cpu_offload": True}, set()),
        ({"group_offload": True}, set()),
    ):
        engine = video_engine(config_of(family, path, **option))
        [made] = engine.generate([ask])
        assert made.frames.shape == reference.frames.shape, option
        transformer = engine._pipeline.transformer
        assert isinstance(transformer, torch.nn.Module) and not isinstance(
            transformer, torch._dynamo.eval_frame.OptimizedModule
        ), option
        assert _expert_hooks(transformer) == hooks_added, option
        assert transformer.is_cache_enabled == ("step_cache" in option), option
        weight_dtypes = {p.dtype for p in transformer.parameters()}
        assert (torch.float8_e4m3fn in weight_dtypes) == ("fp8_weights" in option), option
        assert engine.runtime is not None
        assert not (
            engine.runtime.cpu_offload or engine.runtime.group_offload or engine.runtime.torch_compile
        )
        engine.unload()


def test_ltx_with_a_timestep_conditioned_decoder_batches_and_equals_the_stock_pipeline(
    tmp_path: Path,
) -> None:
    # LTX-Video 0.9.1 and later add per-video noise before decoding; the stock pipeline cannot draw it for a
    # list of generators, engines.video.ltx.pipeline does, the same way for one video.
    import torch
    from diffusers import LTXImageToVideoPipeline

    from tests.support.tiny_models import build_tiny_ltx

    path = build_tiny_ltx(tmp_path / "ltx-0.9.1", timestep_conditioning=True)
    engine = video_engine(config_of("ltx", path))
    requests = [SceneRequest(image=keyframe(50 + i), seed=50 + i, prompt="red fox") for i in range(2)]

    batch = engine.generate(requests)
    singles = [engine.generate([request])[0] for request in requests]
    assert [item.batch_size for item in batch] == [2, 2]
    for together, alone in zip(batch, singles, strict=True):
        assert np.abs(together.frames.astype(int) - alone.frames.astype(int)).max() <= 1

    stock = LTXImageToVideoPipeline.from_pretrained(str(path))
    stock.set_progress_bar_config(disable=True)
    kwargs = {
        "prompt": "red fox", "negative_prompt": engine.config.negative_prompt, "height": 64, "width": 64,
        "num_frames": 9, "num_inference_steps": 2, "guidance_scale": 3.0, "max_sequence_length": 16,
        "output_type": "np", "frame_rate": 8, "decode_timestep": 0.05,
    }  # fmt: skip
    expected = stock(image=keyframe(50), generator=torch.Generator().manual_seed(50), **kwargs).frames[0]
    ours = engine._pipeline(image=[keyframe(50)], generator=[torch.Generator().manual_seed(50)], **kwargs)
    np.testing.assert_array_equal(np.asarray(ours.frames[0]), np.asarray(expected))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("step_cache", ["first_block", "taylorseer"])
def test_a_cancel_with_the_step_cache_on_leaves_no_stale_state(
    family: str, step_cache: str, request: pytest.FixtureRequest
) -> None:
    # A cancelled call never reaches the pipeline's end, where diffusers resets its cache hooks; the caches
    # must still start afresh with the next call.
    path = request.getfixturevalue(f"tiny_{family}_path")
    engine = video_engine(config_of(family, path, step_cache=step_cache))
    ask = SceneRequest(image=keyframe(60), seed=6, prompt="fox", num_inference_steps=4)
    [before] = engine.generate([ask])
    cancel = threading.Event()

    with pytest.raises(GenerationCancelled):
        engine.generate(
            [SceneRequest(image=keyframe(61), seed=7, prompt="sea", num_inference_steps=4)],
            progress=lambda step, total: cancel.set() if step == 2 else None,
            cancel=cancel,
        )
    [after] = engine.generate([ask])
    np.testing.assert_array_equal(after.frames, before.frames)


def _expert_hooks(expert: object) -> set[str]:
    """Names of the diffusers hooks registered anywhere in ``expert`` (each module has its own registry)."""
    import torch

    assert isinstance(expert, torch.nn.Module)
    return {
        name
        for module in expert.modules()
        if hasattr(module, "_diffusers_hook")
        for name in module._diffusers_hook.hooks
    }


def test_fp8_weights_and_the_step_cache_reach_both_wan_a14b_experts(tiny_wan_a14b_path: Path) -> None:
    # Wan 2.2 A14B's low-noise expert is as large as the high-noise one: an option on one expert only
    # leaves half the weights in bf16 and half the steps uncached.
    import torch

    engine = video_engine(config_of("wan", tiny_wan_a14b_path, fp8_weights=True, step_cache="first_block"))
    [made] = engine.generate([SceneRequest(image=keyframe(70), seed=3, prompt="fox", num_inference_steps=4)])

    assert made.frames.shape == (9, 64, 64, 3)
    for name in ("transformer", "transformer_2"):
        expert = getattr(engine._pipeline, name)
        # Stored in float8, computed in the runtime dtype by a casting hook on each layer.
        assert torch.float8_e4m3fn in {p.dtype for p in expert.parameters()}, name
        assert expert.dtype == torch.float32, name
        assert {"layerwise_casting", "fbc_leader_block_hook"} <= _expert_hooks(expert), name
        assert expert.is_cache_enabled, name


def test_group_offload_and_compile_reach_both_wan_a14b_experts(
    tiny_wan_a14b_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both are CUDA-only, so they are applied here as the engine applies them on CUDA, with the CPU as the
    # onload device (no copy stream there) and the compile left unrun.
    import dataclasses

    import torch
    from diffusers import WanTransformer3DModel

    from engines.loading import load_pipeline, placement_for

    engine = video_engine(config_of("wan", tiny_wan_a14b_path))
    placement = placement_for(engine.config, torch.device("cpu"))
    pipeline = load_pipeline(engine._pipeline_class(), engine.config, placement.load_dtype)
    experts = [pipeline.transformer, pipeline.transformer_2]
    moved: list[int] = []
    real_to = WanTransformer3DModel.to

    def recording_to(self: torch.nn.Module, *args: object, **kwargs: object) -> object:
        moved.append(id(self))
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(WanTransformer3DModel, "to", recording_to)
    runtime = dataclasses.replace(engine._runtime_on(placement), group_offload=True, torch_compile=True)
    engine._apply_options(pipeline, placement, runtime)

    for name, expert in zip(("transformer", "transformer_2"), experts, strict=True):
        wrapped = getattr(pipeline, name)
        assert isinstance(wrapped, torch._dynamo.eval_frame.OptimizedModule), name
        assert wrapped._orig_mod is expert, name
        assert "group_offloading" in _expert_hooks(expert), name
        # Under group offload an expert comes to the device a block at a time, never whole.
        assert id(expert) not in moved, name
    assert "group_offloading" not in _expert_hooks(pipeline.vae)


@pytest.mark.gpu
def test_under_group_offload_the_transformer_blocks_wait_off_the_gpu_between_calls(
    tiny_wan_path: Path,
) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    engine = video_engine(config_of("wan", tiny_wan_path, device="cuda", group_offload=True))
    [made] = engine.generate([SceneRequest(image=keyframe(80), seed=8, prompt="fox")])

    assert made.frames.shape == (9, 64, 64, 3)
    assert engine.runtime is not None and engine.runtime.group_offload
    transformer = engine._pipeline.transformer
    assert "group_offloading" in _expert_hooks(transformer)
    # Each block came to the GPU for its turn in the call and went back; the rest of the pipeline stays there.
    assert {p.device.type for p in transformer.blocks.parameters()} == {"cpu"}
    assert engine._pipeline.vae.device.type == "cuda"


def test_wan_reads_prompts_as_long_as_it_was_trained_on_and_ltx_as_its_pipelines_do() -> None:
    assert WanConfig().max_sequence_length == 512
    assert LTXConfig().max_sequence_length == 128


def test_a_checkpoint_made_for_another_pipeline_is_named_in_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # LTX-Video 0.9.5 and later declare LTXConditionPipeline, which this engine does not run.
    import json
    import logging

    from tests.support.tiny_models import build_tiny_ltx

    path = build_tiny_ltx(tmp_path / "ltx-0.9.5-like")
    index = json.loads((path / "model_index.json").read_text())
    (path / "model_index.json").write_text(json.dumps(index | {"_class_name": "LTXConditionPipeline"}))

    with caplog.at_level(logging.WARNING, logger="engines.video.text"):
        video_engine(config_of("ltx", path)).load()
        video_engine(config_of("ltx", build_tiny_ltx(tmp_path / "ltx-0.9.0-like"))).load()

    [warning] = [r.getMessage() for r in caplog.records if "made for" in r.getMessage()]
    assert "ltx-0.9.5-like was made for LTXConditionPipeline" in warning


@pytest.mark.slow
def test_when_torch_compile_gives_up_on_a_new_batch_size_the_call_runs_uncompiled(
    tiny_wan_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Batches of every size and scenes of every length meet the compiled model; a fullgraph compile past
    # its recompile limit raises instead of running. (The eager backend: dynamo's guards, no codegen.)
    import dataclasses

    import torch._dynamo

    plain = video_engine(config_of("wan", tiny_wan_path))
    engine = video_engine(config_of("wan", tiny_wan_path))
    engine.load()
    engine._pipeline.transformer = torch.compile(
        engine._pipeline.transformer, backend="eager", fullgraph=True
    )
    engine._runtime = dataclasses.replace(engine.runtime, torch_compile=True)
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 1)  # this thread's; the calls run on it
    requests = [SceneRequest(image=keyframe(80 + i), seed=80 + i, prompt="fox") for i in range(2)]
    try:
        engine.generate(requests[:1])
        batch = engine.generate(requests)  # a second batch size: a second compile, past the limit
    finally:
        torch._dynamo.reset()

    assert engine.runtime is not None and not engine.runtime.torch_compile
    assert not isinstance(engine._pipeline.transformer, torch._dynamo.eval_frame.OptimizedModule)
    for made, request in zip(batch, requests, strict=True):
        [alone] = plain.generate([request])
        assert np.abs(made.frames.astype(int) - alone.frames.astype(int)).max() <= 1
