"""What the README documents, read the way its tests need it."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def documented_metrics() -> set[str]:
    """The metric names in the README's Monitoring table."""
    section = README.read_text(encoding="utf-8").split("## Monitoring", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `(storyreel_\w+)", section, flags=re.MULTILINE))
