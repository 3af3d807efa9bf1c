"""bench.device_wheels: the wheels `make device-wheels` downloads hold everything the device checks import
that a bare Python 3.12 + PyTorch image (with NumPy and pytest) lacks."""

from __future__ import annotations

import importlib.metadata as metadata
import subprocess
import sys
from pathlib import Path

import pytest

from bench import device_wheels

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheels_pin_this_venvs_versions_and_leave_the_images_packages_out() -> None:
    pins = dict(line.split("==") for line in device_wheels.requirements())

    # What diffusers 0.42 needs at the versions it needs, not the image's (an image's transformers 4.x
    # comes with a huggingface-hub below the 1.32 diffusers 0.42 requires).
    for name in ("diffusers", "accelerate", "transformers", "huggingface-hub", "safetensors", "tokenizers"):
        assert pins[name] == metadata.version(name), name
    assert not {"torch", "numpy", "pytest"} & set(pins)


def test_every_package_the_device_checks_import_is_in_the_wheels_or_the_image() -> None:
    gpu_test_modules = [
        f"tests.unit.{path.stem}" for path in sorted((ROOT / "tests" / "unit").glob("test_*.py"))
        if "mark.gpu" in path.read_text()
    ]  # fmt: skip
    modules = [
        "bench.gpu_svd",
        "bench.gpu_video",
        "bench.gpu_checks",
        "tests.fixtures.models",
        *gpu_test_modules,
    ]
    listing = "import importlib, sys; [importlib.import_module(m) for m in sys.argv[1:]]; print(*sys.modules)"
    imported = subprocess.run(
        [sys.executable, "-c", listing, *modules], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()

    owners = metadata.packages_distributions()
    needed = {
        device_wheels._name(d) for top in {m.split(".")[0] for m in imported} for d in owners.get(top, [])
    }
    shipped = {line.split("==")[0] for line in device_wheels.requirements()}
    image = set(device_wheels.closure(device_wheels.IMAGE))
    ours = {"storyreel"}  # the project's own code travels as the working tree

    assert needed - shipped - image - ours == set()
