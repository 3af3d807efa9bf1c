"""Replicas that hold no model load no model stack.

Importing torch maps a few hundred MB of libraries into a process. The ingress, the job runner, the encoder,
the job board, and a writer or narrator whose backend needs no model never run one, so importing their
modules (and building what they build) must leave torch, diffusers and transformers unimported. Each check
runs in a fresh interpreter: in this one, some other test has imported torch long ago.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
MODEL_STACK = ("torch", "diffusers", "transformers")

# Every module a replica without a model imports (the app builder imports all the deployment modules,
# the animator's and the painter's too, which load a model only when they build one).
LIGHT_MODULES = [
    "serve_app.config",
    "serve_app.app",
    "serve_app.api.ingress",
    "serve_app.jobs.runner",
    "deployments.board",
    "deployments.encoder",
    "deployments.narrator",
    "deployments.painter",
    "deployments.animator",
    "deployments.writer",
    "engines.stages.protocols",
    "engines.video.config",
]


def model_stack_after(code: str) -> set[str]:
    """Which of torch, diffusers and transformers a fresh interpreter has imported after running ``code``."""
    script = f"{code}\nimport sys\nprint(*[m for m in {MODEL_STACK!r} if m in sys.modules])"
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


@pytest.mark.slow
def test_importing_the_modules_of_replicas_without_a_model_loads_no_model_stack() -> None:
    # One interpreter imports them in turn (imports only add to sys.modules, so none loading the stack in
    # turn means none loads it alone), at the cost of one start instead of a dozen; the first that loads
    # it is named.
    code = f"""
import importlib, sys
for module in {LIGHT_MODULES!r}:
    importlib.import_module(module)
    if loaded := [m for m in {MODEL_STACK!r} if m in sys.modules]:
        sys.exit(f"importing {{module}} imported {{', '.join(loaded)}}")
"""
    assert model_stack_after(code) == set()


@pytest.mark.slow
def test_the_template_writer_and_the_espeak_narrator_load_no_model_stack(tmp_path: Path) -> None:
    code = f"""
from core.storage import open_storage
from deployments.narrator import Narrator
from deployments.writer import SceneWriter
from engines.narrator import NarrationConfig
from engines.writer import WriterConfig

# The deployments' own classes, constructed as their replicas construct them.
writer = SceneWriter.func_or_class(WriterConfig(backend="template"), "auto")
narrator = Narrator.func_or_class(NarrationConfig(backend="espeak"), open_storage({str(tmp_path)!r}), "auto")
assert writer.writer.config.backend == "template" and narrator.engine.neural is None
"""
    assert model_stack_after(code) == set()


def test_an_animator_under_fallback_always_loads_no_model_stack() -> None:
    # The CPU profile's animator: title-card clips, no engine built.
    code = """
from engines.fallback import animate_scenes
from engines.video.base import SceneRequest
from engines.video.config import SVDConfig
[result] = animate_scenes(None, [SceneRequest(seed=1, width=64, height=64, num_frames=2)], ["text"], "always",
                          SVDConfig())
assert result.generator == "fallback"
"""
    assert model_stack_after(code) == set()


@pytest.mark.slow
def test_a_model_module_does_load_torch() -> None:
    # The check above is real: a module that runs a model imports torch where the test looks.
    assert "torch" in model_stack_after("import engines.video.svd.engine")
