"""The wheels a bare Python 3.12 + PyTorch image lacks to run bench/device_check.sh, as `name==version`.

    python -m bench.device_wheels        # one requirement a line; `make device-wheels` downloads them

The image has PyTorch with CUDA (and what PyTorch requires), NumPy and pytest, and no network. The device
checks import diffusers, accelerate, transformers, pydantic, ftfy and Pillow; this lists those with every
package they require on Python 3.12 on Linux, at the versions this venv runs, so the device runs what the
tests here ran. transformers comes along although images often have one: diffusers 0.42 needs
huggingface-hub >= 1.32, which an image's transformers 4.x refuses at import (it pins hub below 1.0), so
the pair must travel together.
"""

from __future__ import annotations

import importlib.metadata as metadata

from packaging.markers import default_environment
from packaging.requirements import Requirement

# What the device checks import from outside the project: the engines and their step loop, bench/gpu_*.py,
# tests/fixtures/models.py and the test files that hold gpu tests. Not engines.media (PyAV, uniseg) nor what
# imports it (engines.fallback, serve_app): PyAV alone would take the wheels past the device call's 64 MiB,
# so a gpu test belongs in a file that does not import them.
IMPORTED = ("diffusers", "accelerate", "transformers", "pydantic", "ftfy", "Pillow")
# What the image brings; their own requirements come with them there.
IMAGE = ("torch", "numpy", "pytest")
DEVICE_PYTHON = {"python_version": "3.12", "python_full_version": "3.12.0", "extra": ""}


def requirements() -> list[str]:
    """Every package the device needs beyond the image, pinned to this venv's version, sorted by name."""
    pinned = closure(IMPORTED, stop=IMAGE)
    return [f"{name}=={version}" for name, version in sorted(pinned.items())]


def closure(names: tuple[str, ...], stop: tuple[str, ...] = ()) -> dict[str, str]:
    """``names`` and every package they require on the device's Python, as normalised name to this venv's
    version; the walk does not enter ``stop``."""
    environment = {**default_environment(), **DEVICE_PYTHON}
    found: dict[str, str] = {}
    skip = {_name(n) for n in stop}

    def add(name: str) -> None:
        key = _name(name)
        if key in found or key in skip:
            return
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            return  # required only where this venv is not (a CUDA library of the image's PyTorch)
        found[key] = distribution.version
        for line in distribution.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate(environment):
                add(requirement.name)

    for name in names:
        add(name)
    return found


def _name(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


if __name__ == "__main__":
    print("\n".join(requirements()))
