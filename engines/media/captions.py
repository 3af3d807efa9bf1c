"""WebVTT captions from timed cues (any language: the file is UTF-8)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from core.errors import InvalidInput
from core.files import atomic_output


@dataclass(frozen=True)
class Cue:
    """One caption: shown from ``start`` to ``end`` seconds."""

    start: float
    end: float
    text: str


def to_webvtt(cues: list[Cue]) -> str:
    """Render ``cues`` as a WebVTT document."""
    blocks = ["WEBVTT", ""]
    for i, cue in enumerate(cues):
        if cue.start < 0 or cue.end <= cue.start:
            raise InvalidInput(f"cues[{i}]", (cue.start, cue.end), "needs 0 <= start < end")
        blocks += [str(i + 1), f"{_timestamp(cue.start)} --> {_timestamp(cue.end)}", _escape(cue.text), ""]
    return "\n".join(blocks)


def write_webvtt(cues: list[Cue], path: str | os.PathLike[str]) -> Path:
    """Write ``cues`` to ``path`` as WebVTT, atomically."""
    with atomic_output(path) as temp:
        temp.write_text(to_webvtt(cues), encoding="utf-8")
    return Path(path)


def _timestamp(seconds: float) -> str:
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{millis:03d}"


def _escape(text: str) -> str:
    # A blank line ends a cue and "-->" starts a timing line, so neither may appear inside the text.
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    body = "\n".join(lines) or " "
    body = body.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return body
