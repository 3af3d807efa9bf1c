"""bench.device_wheels: the wheels `make device-wheels` downloads hold everything the device checks import
that a bare Python 3.12 + PyTorch image (with NumPy and pytest) lacks."""

from __future__ import annotations

import importlib.metadata as metadata
import subprocess
import sys
from pathlib import Path

import pytest

from bench import device_wheels

pytestmark = [pytest.mark.unit, pytest.mark.slow]  # a fresh interpreter imports the GPU stack

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheels_pin_this_venvs_versions_and_leave_the_images_packages_out() -> None:
    pins = dict(line.split("==") for line in device_wheels.requirements())

    # What diffusers 0.42 needs at the versions it needs, not the image's (an image's transformers 4.x
    # comes with a huggingface-hub below the 1.32 diffusers 0.42 requires).
    for name in ("diffusers", "accelerate", "transformers", "huggingface-hub", "safetensors", "tokenizers"):
        assert pins[name] == metadata.version(name), name
    assert not {"torch", "numpy", "pytest"} & set(pins)


def device_site(folder: Path, device: set[str]) -> Path:
    """A site-packages of links to this venv's installed distributions that the device has, and no others."""
    site = folder / "site-packages"
    site.mkdir()
    for dist in metadata.distributions():
        if device_wheels._name(dist.metadata["Name"]) not in device:
            continue
        for top in {Path(str(file)).parts[0] for file in dist.files or []}:
            source = Path(str(dist.locate_file(top)))
            if top != ".." and not top.endswith(".pth") and source.exists() and not (site / top).exists():
                (site / top).symlink_to(source)
    return site


def test_every_package_the_device_checks_import_is_in_the_wheels_or_the_image(tmp_path: Path) -> None:
    gpu_test_modules = [
        f"tests.unit.{path.stem}" for path in sorted((ROOT / "tests" / "unit").glob("test_*.py"))
        if "mark.gpu" in path.read_text() and path.name != Path(__file__).name
    ]  # fmt: skip
    modules = [
        "bench.gpu_svd",
        "bench.gpu_video",
        "bench.gpu_checks",
        "tests.fixtures.models",
        *gpu_test_modules,
    ]
    shipped = {line.split("==")[0] for line in device_wheels.requirements()}
    site = device_site(tmp_path, shipped | set(device_wheels.closure(device_wheels.IMAGE)))

    # A fresh interpreter with no site-packages but the device's: a package a module needs and the device
    # lacks fails its import; one imported only when present (accelerate reads boto3 for SageMaker if it is
    # there) is absent there as here.
    listing = "import importlib, sys; sys.path[:0] = sys.argv[1:3]; [importlib.import_module(m) for m in sys.argv[3:]]"
    run = subprocess.run(
        [sys.executable, "-I", "-S", "-c", listing, str(ROOT), str(site), *modules],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )

    assert run.returncode == 0, run.stderr[-3000:]
