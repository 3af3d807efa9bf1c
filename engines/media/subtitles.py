"""Subtitles burned into the picture: an ASS script rendered by libass through ffmpeg's `subtitles` filter.

The script is written here from the caption cues, with the CJK-capable font the title cards use, its size
and margins relative to the frame (a vertical video gets the same look as a landscape one), and lines
broken to fit the frame: libass breaks only at spaces, which Chinese and Japanese do not have.
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path
from typing import Literal

from PIL import ImageFont
from pydantic import BaseModel, ConfigDict, Field

from core.errors import MediaError
from core.files import atomic_output
from engines.media import ffmpeg
from engines.media.captions import Cue
from engines.media.fonts import find_font_file
from engines.media.linebreak import wrap_lines

_SAFE_PATH = re.compile(r"[\w./+@ -]+")  # always with fullmatch


class SubtitleStyle(BaseModel):
    """How burned-in subtitles look (`burn_subtitles: true` on a request)."""

    model_config = ConfigDict(extra="forbid")

    font_scale: float = Field(
        0.055, gt=0.01, le=0.2, description="Font size as a share of the frame's shorter side."
    )
    outline: float = Field(
        0.08,
        ge=0,
        le=0.5,
        description="Outline thickness as a share of the font size (readable on any picture).",
    )
    position: Literal["bottom", "top"] = Field("bottom", description="Where the subtitles sit.")
    margin: float = Field(
        0.06,
        ge=0,
        le=0.3,
        description="Safe margin on each side as a share of the frame (platform overlays cover the edges).",
    )
    max_lines: int = Field(3, ge=1, le=6, description="Lines one cue may take; longer text is cut with '…'.")


def write_ass(
    cues: list[Cue],
    width: int,
    height: int,
    style: SubtitleStyle,
    font_path: str,
    path: str | os.PathLike[str],
) -> Path:
    """Write ``cues`` as an ASS script for a ``width`` x ``height`` video, atomically."""
    size = max(8, round(style.font_scale * min(width, height)))
    margin_x, margin_y = round(style.margin * width), round(style.margin * height)
    family = ImageFont.truetype(font_path, size).getname()[0]
    alignment = 2 if style.position == "bottom" else 8  # numpad positions: bottom centre, top centre
    outline = max(1, round(style.outline * size))
    lines = [
        "[Script Info]",
        "ScriptType: v4.00+",
        f"PlayResX: {width}",
        f"PlayResY: {height}",
        "WrapStyle: 2",  # no automatic wrapping: lines are broken below, for every script
        "ScaledBorderAndShadow: yes",
        "",
        "[V4+ Styles]",
        "Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, "
        "Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, "
        "Alignment, MarginL, MarginR, MarginV, Encoding",
        f"Style: Default,{family},{size},&H00FFFFFF,&H00FFFFFF,&H00000000,&H80000000,0,0,0,0,100,100,0,0,1,"
        f"{outline},0,{alignment},{margin_x},{margin_x},{margin_y},1",
        "",
        "[Events]",
        "Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text",
    ]
    room = width - 2 * margin_x
    for cue in cues:
        text = r"\N".join(_escape(line) for line in wrap(cue.text, room, size, style.max_lines))
        lines.append(f"Dialogue: 0,{_time(cue.start)},{_time(cue.end)},Default,,0,0,0,,{text}")
    with atomic_output(path) as temp:
        temp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Path(path)


def burn(
    video: str | os.PathLike[str],
    script: str | os.PathLike[str],
    font_path: str,
    output_path: str | os.PathLike[str],
    encoder_args: list[str],
    ffmpeg_path: str | None = None,
    *,
    timeout_s: float,
) -> Path:
    """Render the ASS ``script`` onto ``video`` (encoding it again with ``encoder_args``).

    ``timeout_s``: how long it may run (``VideoProcessingConfig.ffmpeg_timeout_s`` of the video's length).
    """
    fonts = Path(font_path).parent
    graph = f"subtitles=filename={_filter_value(script)}:fontsdir={_filter_value(fonts)}"
    with atomic_output(output_path) as temp:
        ffmpeg.run(
            [*ffmpeg.INPUT_PROTOCOLS, "-f", "mp4", "-i", str(video), "-vf", graph, *encoder_args, str(temp)],
            timeout_s=timeout_s,
            ffmpeg=ffmpeg_path,
        )
    return Path(output_path)


def subtitle_font(preferred: str | None) -> str:
    """The font file subtitles are drawn with (the title cards' font, CJK-capable where one is installed)."""
    path = find_font_file(preferred)
    if path is None:
        raise MediaError(
            "no font file for subtitles: install fonts-wqy-zenhei or set video_processing.font_path"
        )
    return path


def wrap(text: str, room: int, size: int, max_lines: int) -> list[str]:
    """``text`` broken into lines that fit ``room`` pixels at font ``size``, where the Unicode line breaking
    rules allow (``engines.media.linebreak``); at most ``max_lines``, the last cut with '…'."""
    lines = wrap_lines(" ".join(text.split()), lambda piece: sum(_advance(c, size) for c in piece), room)
    if len(lines) > max_lines:
        lines = [*lines[: max_lines - 1], lines[max_lines - 1].rstrip("…") + "…"]
    return [line for line in lines if line] or [" "]


def _is_wide(char: str) -> bool:
    return unicodedata.east_asian_width(char) in "WF"


def _advance(char: str, size: int) -> float:
    """A character's width, estimated: a wide character is square, others about half of it."""
    return size if _is_wide(char) else size * 0.55


def _escape(text: str) -> str:
    # Braces start override codes and a backslash starts an escape in ASS text.
    return text.replace("\\", "\u29f5").replace("{", "(").replace("}", ")")


def _time(seconds: float) -> str:
    centis = round(seconds * 100)
    hours, rest = divmod(centis, 360_000)
    minutes, rest = divmod(rest, 6000)
    secs, centis = divmod(rest, 100)
    return f"{hours}:{minutes:02d}:{secs:02d}.{centis:02d}"


def _filter_value(path: str | os.PathLike[str]) -> str:
    """A path as one value of a filter's options, quoted. ffmpeg unquotes and unescapes such a value twice
    (filter graph, then options), so only paths without quote, colon, comma, bracket or backslash are taken."""
    text = str(path)
    if not _SAFE_PATH.fullmatch(text):
        raise MediaError(
            f"path {text!r} has characters ffmpeg's filter options cannot hold; use a plain path"
        )
    return f"'{text}'"
