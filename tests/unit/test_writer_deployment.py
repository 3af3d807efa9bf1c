"""The SceneWriter deployment under the fallback policy (its class, built without Ray)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from core.errors import ModelUnavailable
from deployments.writer import SceneWriter
from engines.writer import WriterConfig, WriteRequest

pytestmark = pytest.mark.unit

PROMPT = "A kite rises over the dunes. The wind drops. It lands softly."


def missing_model(tmp_path: Path) -> WriterConfig:
    return WriterConfig(
        backend="transformers", transformers={"model": str(tmp_path / "no-model"), "device": "cpu"}
    )


def write(writer: SceneWriter):
    return asyncio.run(writer.write(WriteRequest(PROMPT, 3)))


def test_always_writes_with_the_template_without_touching_the_model(tmp_path):
    script = write(SceneWriter.func_or_class(missing_model(tmp_path), "always"))
    assert script.backend == "template" and script.fallback_reason is None and len(script.scenes) == 3


def test_auto_falls_back_to_the_template_and_says_why(tmp_path):
    script = write(SceneWriter.func_or_class(missing_model(tmp_path), "auto"))
    assert script.backend == "template" and "no-model" in script.fallback_reason


def test_never_refuses_to_start_without_its_model(tmp_path):
    with pytest.raises(ModelUnavailable, match="no-model"):
        SceneWriter.func_or_class(missing_model(tmp_path), "never")


def test_never_fails_a_script_the_model_could_not_write(tiny_llm_dir):
    config = WriterConfig(
        backend="transformers",
        transformers={"model": str(tiny_llm_dir), "device": "cpu", "max_new_tokens": 16, "cpu_threads": 1},
    )
    # 16 tokens cannot hold a valid script: the writer would fall back, and `never` turns that into an error.
    with pytest.raises(ModelUnavailable, match="fell back to the template"):
        write(SceneWriter.func_or_class(config, "never"))
