"""Finding a font that draws every script a caption may use.

CJK text drawn with a Latin-only font comes out as rows of identical boxes, so the engine prefers a
font that covers Chinese, Japanese and Korean and warns once when none is installed (README,
"Fonts", says how `make install` brings one).
"""

from __future__ import annotations

import functools
import logging
import shutil
import subprocess
from pathlib import Path

from PIL import ImageFont

logger = logging.getLogger(__name__)

# Checked in order after an explicit path. The first few cover CJK; DejaVu covers Latin, Greek and
# Cyrillic only and is the last resort before Pillow's built-in font.
# Each of these also draws Latin text (Droid Sans Fallback does not, so it is not listed).
KNOWN_FONTS = (
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/System/Library/Fonts/PingFang.ttc",
    "/System/Library/Fonts/Supplemental/Arial Unicode.ttf",
    "C:/Windows/Fonts/msyh.ttc",
)
LATIN_FALLBACK = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


@functools.lru_cache(maxsize=8)
def find_font_file(preferred: str | None = None) -> str | None:
    """Return the path of the best available font file, or None for Pillow's built-in font.

    Args:
        preferred: a font file to use when it exists (config ``font_path``); default None.
    """
    candidates = [preferred] if preferred else []
    candidates += list(KNOWN_FONTS)
    candidates += _fontconfig_cjk_fonts()
    for path in candidates:
        if path and Path(path).is_file():
            return path
    logger.warning(
        "No CJK font found: Chinese, Japanese and Korean captions will draw as boxes. "
        "Install one (Debian: apt-get install fonts-wqy-zenhei) or set video_processing.font_path."
    )
    return LATIN_FALLBACK if Path(LATIN_FALLBACK).is_file() else None


def load_font(size: int, preferred: str | None = None) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Load the best available font at ``size`` pixels."""
    path = find_font_file(preferred)
    if path is None:
        return ImageFont.load_default(size)
    return _load_cached(path, size)


@functools.lru_cache(maxsize=64)
def _load_cached(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


def _fontconfig_cjk_fonts() -> list[str]:
    if shutil.which("fc-list") is None:
        return []
    try:
        listing = subprocess.run(
            ["fc-list", ":lang=zh", "file"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    paths = sorted(line.strip().rstrip(":") for line in listing.splitlines() if line.strip())
    # Droid Sans Fallback has no Latin letters: mixed-script captions would lose their English words.
    return [path for path in paths if "DroidSansFallback" not in path]


def has_cjk_font(preferred: str | None = None) -> bool:
    """Whether a font that draws both Latin and CJK text is installed."""
    found = find_font_file(preferred)
    return found is not None and found != LATIN_FALLBACK
