"""The transformers backend on a tiny random LM loaded from disk: constrained decoding makes it valid."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engines.writer import (
    ScriptWriter,
    TransformersWriterConfig,
    WriterBounds,
    WriterConfig,
    approx_clip_tokens,
    draft_json_schema,
)
from engines.writer.backends.local import TransformersBackend
from engines.writer.validation import parse_json_object

pytestmark = pytest.mark.integration

# Tight bounds keep the random model's answer short: every string runs to its maximum length.
BOUNDS = WriterBounds(max_scenes=3, max_title_chars=24, max_caption_chars=32, max_visual_prompt_chars=48)
PROMPT = "A cat walks in the rain. It finds a warm home."


def make_writer(model: Path | str, **options: object) -> ScriptWriter:
    # One thread: the model is tiny, and the test machine's two cores are shared with other suites.
    settings = TransformersWriterConfig(
        model=str(model), device="cpu", max_new_tokens=400, cpu_threads=1, **options
    )
    return ScriptWriter(WriterConfig(backend="transformers", bounds=BOUNDS, transformers=settings))


def test_random_model_writes_a_valid_script_through_the_constrained_decoder(tiny_llm_dir: Path) -> None:
    threads = torch.get_num_threads()
    script = make_writer(tiny_llm_dir).write(PROMPT, num_scenes=2)
    assert torch.get_num_threads() == threads  # cpu_threads applies during generation only
    assert script.backend == "transformers", script.fallback_reason
    assert script.fallback_reason is None
    assert len(script.scenes) == 2
    for scene in script.scenes:
        assert 1 <= len(scene.caption) <= BOUNDS.max_caption_chars
        assert scene.visual_prompt.isascii()
        assert approx_clip_tokens(scene.visual_prompt) <= 75
        assert BOUNDS.min_scene_seconds <= scene.duration_s <= BOUNDS.max_scene_seconds


def test_raw_answer_parses_and_matches_the_schema_shape(tiny_llm_dir: Path) -> None:
    backend = TransformersBackend(
        TransformersWriterConfig(model=str(tiny_llm_dir), device="cpu", max_new_tokens=400, cpu_threads=1)
    )
    schema = draft_json_schema(BOUNDS, num_scenes=3)
    answer = backend.complete([{"role": "user", "content": PROMPT}], schema)
    data = parse_json_object(answer)
    assert set(data) == {"title", "scenes"}
    assert len(data["scenes"]) == 3
    assert all(s["motion"] in {"still", "gentle", "moderate", "dynamic"} for s in data["scenes"])
    assert all(2 <= s["duration_s"] <= 6 for s in data["scenes"])


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_same_seed_gives_the_same_script(tiny_llm_dir: Path, temperature: float) -> None:
    first = make_writer(tiny_llm_dir, seed=7, temperature=temperature).write(PROMPT, num_scenes=2)
    again = make_writer(tiny_llm_dir, seed=7, temperature=temperature).write(PROMPT, num_scenes=2)
    assert first.backend == again.backend == "transformers"
    assert first == again


def test_sampling_with_another_seed_gives_another_script(tiny_llm_dir: Path) -> None:
    one = make_writer(tiny_llm_dir, seed=1, temperature=0.9).write(PROMPT, num_scenes=2)
    two = make_writer(tiny_llm_dir, seed=2, temperature=0.9).write(PROMPT, num_scenes=2)
    assert one != two


def test_missing_weights_fall_back_to_the_template_with_the_reason(tmp_path: Path) -> None:
    script = make_writer(tmp_path / "no-such-model").write(PROMPT)
    assert script.backend == "template"
    assert script.fallback_reason.startswith("transformers unavailable: writer model")
    assert [s.caption for s in script.scenes] == ["A cat walks in the rain.", "It finds a warm home."]
