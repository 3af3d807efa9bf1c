"""`video.family` in the app config and at create: SVD stays the default, each family's rules are checked
with errors that name the field and the value."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.errors import BadRequest
from engines.video.config import LTXConfig, SVDConfig, WanConfig
from serve_app.config import AppConfig
from serve_app.jobs.plan import plan_job, segment_frames
from serve_app.protocol import CreateVideoRequest

pytestmark = pytest.mark.unit


def ltx_app(**video: object) -> AppConfig:
    return AppConfig.model_validate(
        {
            "video": {"family": "ltx", "width": 704, "height": 480, "num_frames": 121, **video},
            "limits": {"max_frames_per_segment": 121},
        }  # fmt: skip
    )


def test_a_config_without_family_is_svd_and_the_families_pick_their_classes() -> None:
    assert isinstance(AppConfig().video, SVDConfig)
    assert isinstance(AppConfig.model_validate({"video": {"fps": 6}}).video, SVDConfig)
    assert isinstance(ltx_app().video, LTXConfig)
    wan = AppConfig.model_validate({"video": {"family": "wan", "num_frames": 25}})
    assert isinstance(wan.video, WanConfig) and wan.video.model == "Wan-AI/Wan2.2-TI2V-5B-Diffusers"


def test_svd_only_fields_are_refused_in_a_text_family_config() -> None:
    with pytest.raises(ValidationError, match="motion_bucket_id"):
        AppConfig.model_validate({"video": {"family": "ltx", "motion_bucket_id": 100}})


@pytest.mark.parametrize(
    ("video", "limits", "message"),
    [
        ({"family": "ltx", "num_frames": 24}, {"max_frames_per_segment": 25}, "video.num_frames=24"),
        (
            {"family": "wan", "num_frames": 23},
            {},
            "video.num_frames=23: Wan makes 4k\\+1 frames; use 21 or 25",
        ),
        ({"family": "ltx", "width": 720}, {}, "video.width=720: LTX-Video needs a multiple of 32"),
        ({"family": "wan", "guidance_scale": 30.0}, {}, "video.guidance_scale=30.0 must be from 1 to 20"),
        ({"family": "ltx", "num_frames": 25}, {"max_frames_per_segment": 30}, "max_frames_per_segment=30"),
    ],
)
def test_family_rules_name_the_field_and_value(video: dict, limits: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        AppConfig.model_validate({"video": video, "limits": limits})


@pytest.mark.parametrize(("field", "value"), [("motion_bucket_id", 200), ("noise_aug_strength", 0.1)])
def test_svd_motion_controls_are_a_400_at_create_for_a_text_family(field: str, value: object) -> None:
    request = CreateVideoRequest.model_validate({"prompt": "A fox.", field: value})

    with pytest.raises(BadRequest) as caught:
        plan_job(request, ltx_app(), seed=1)
    assert caught.value.param == field
    assert f"{field}={value}" in str(caught.value) and "LTX-Video" in str(caught.value)
    plan_job(request, AppConfig(), seed=1)  # SVD takes them


def test_a_text_family_job_plans_at_the_family_size_and_frames() -> None:
    plan = plan_job(CreateVideoRequest.model_validate({"prompt": "A fox.", "seconds": 12}), ltx_app(), seed=1)

    assert plan.generation_size[0] % 32 == 0 and plan.generation_size[1] % 32 == 0
    # Scenes of 5 s at 24 fps; a longer one splits into calls within the 121-frame limit.
    assert all(n <= 121 for n in segment_frames(300, 121))


def test_svd_refuses_cpu_offload_with_torch_compile_at_config_load() -> None:
    # Offload's hook on the UNet is not compilable: the replica would load, then fail its first scene.
    with pytest.raises(ValidationError, match="video.cpu_offload and video.torch_compile exclude each other"):
        AppConfig.model_validate({"video": {"cpu_offload": True, "torch_compile": True}})
    for alone in ("cpu_offload", "torch_compile"):
        assert getattr(AppConfig.model_validate({"video": {alone: True}}).video, alone)
