"""The benchmark's output: the summary table on stdout and the figures as JSON."""

from __future__ import annotations

import json
import logging
import platform
import time
import warnings
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

# Headline figure -> (goal, "<=" or ">=", unit).
GOALS: dict[str, tuple[float, str, str]] = {
    "encode_ratio": (1.10, "<=", "x"),
    "overhead_ratio": (1.15, "<=", "x"),
    "status_p50_ms": (50.0, "<=", "ms"),
    "status_p99_ms": (50.0, "<=", "ms"),
    "create_p50_ms": (50.0, "<=", "ms"),
    "create_p99_ms": (50.0, "<=", "ms"),
    "status_p99_under_streams_ms": (50.0, "<=", "ms"),
    "batch_speedup": (1.0, ">=", "x"),
}
# The issue sets no goal for create latency; the status goal is shown beside it for comparison only.
NO_GOAL = {"create_p50_ms", "create_p99_ms", "status_p50_ms"}


def machine() -> dict[str, Any]:
    """What this run ran on (recorded next to the numbers)."""
    import os

    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        gpu = None
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "gpu": gpu,
        "load_average": os.getloadavg(),
    }


def table(figures: dict[str, float | None], notes: dict[str, str]) -> str:
    """The summary: one row per headline figure with its goal and whether it is met."""
    rows = [("figure", "value", "goal", "met", "how measured")]
    for key, (goal, op, unit) in GOALS.items():
        value = figures.get(key)
        if value is None:
            rows.append((key, "not run", "", "", notes.get(key, "")))
            continue
        met = value <= goal if op == "<=" else value >= goal
        shown_goal = f"({op} {goal:g}{unit})" if key in NO_GOAL else f"{op} {goal:g}{unit}"
        verdict = "-" if key in NO_GOAL else ("yes" if met else "NO")
        rows.append(
            (
                key,
                f"{value:.3f}{unit}" if unit == "x" else f"{value:.1f}{unit}",
                shown_goal,
                verdict,
                notes.get(key, ""),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=False)) + "  " + row[4]
        for row in rows
    ]
    lines.insert(1, "-" * max(len(line) for line in lines))
    return "\n".join(lines)


def write(out: Path, figures: dict[str, Any], details: dict[str, Any]) -> Path:
    """Write ``latest.json`` (headline figures + details) and one detail file per section into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for section, data in details.items():
        (out / f"{section}.json").write_text(json.dumps(data, indent=2, default=_plain))
    latest = out / "latest.json"
    latest.write_text(
        json.dumps({**figures, "machine": machine(), "details": details}, indent=2, default=_plain)
    )
    return latest


def _plain(value: Any) -> Any:
    if is_dataclass(value):
        return asdict(value)
    if isinstance(value, Path):
        return str(value)
    return str(value)


def quiet_libraries() -> None:
    """Silence the libraries' per-call warnings and progress bars so the table stays readable."""
    # The tiny CLIP tokenizer truncates every prompt; its warning per call would drown the table.
    warnings.filterwarnings("ignore")
    for name in ("transformers", "diffusers", "ray", "ray.serve", "httpx"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
