"""Title cards: the seed's placeholder keyframe and its fallback clip (text on colour, gently moving)."""

from __future__ import annotations

import colorsys
import hashlib

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from core.errors import InvalidInput
from engines.media.fonts import load_font
from engines.media.linebreak import wrap_lines

# How much a title card zooms in over its whole length: enough to read as motion, slow enough that
# the text never leaves the frame.
ZOOM_RANGE = 0.08


def background_color(text: str) -> tuple[int, int, int]:
    """A calm, dark colour chosen from the text, so each scene's card differs but stays stable."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    hue = digest[0] / 255.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.45, 0.35)
    return int(r * 255), int(g * 255), int(b * 255)


def wrap_text(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, max_width: float) -> list[str]:
    """``text`` in lines no wider than ``max_width`` pixels, broken where the Unicode rules allow
    (``engines.media.linebreak``): words in spaced scripts stay whole, CJK text breaks between characters
    but never before closing punctuation."""
    return wrap_lines(text, font.getlength, max_width)


def render_card(
    text: str,
    width: int,
    height: int,
    color: tuple[int, int, int] | None = None,
    font_path: str | None = None,
) -> Image.Image:
    """Draw ``text`` centred on a solid background, wrapped and sized to fit.

    Args:
        text: the words to show; any script with an installed font, Chinese, Japanese and Korean included.
        width, height: the image size in pixels (each at least 16).
        color: background RGB; default a dark colour derived from the text.
        font_path: a font file to prefer; default the first CJK-capable font found.
    """
    _check_size(width, height)
    color = color or background_color(text)
    image = Image.new("RGB", (width, height), color)
    draw = ImageDraw.Draw(image)
    margin = max(4, width // 12)
    size = max(8, height // 9)
    while True:
        font = load_font(size, font_path)
        lines = wrap_text(text.strip(), font, width - 2 * margin)
        line_height = int(size * 1.3)
        if line_height * len(lines) <= height - 2 * margin or size <= 8:
            break
        size = int(size * 0.85)
    top = (height - line_height * len(lines)) // 2
    for i, line in enumerate(lines):
        line_width = font.getlength(line)
        position = ((width - line_width) / 2, top + i * line_height)
        draw.text(position, line, font=font, fill=(245, 245, 240))
    return image


def placeholder_image(
    text: str, width: int = 1024, height: int = 576, font_path: str | None = None
) -> Image.Image:
    """The seed's ``generate_placeholder_image``: a keyframe to use when no text-to-image model can run."""
    return render_card(text, width, height, font_path=font_path)


def title_card_frames(
    text: str,
    num_frames: int,
    width: int,
    height: int,
    font_path: str | None = None,
) -> np.ndarray:
    """Frames of a title card that slowly zooms in (the seed's fallback clip).

    Args:
        text: the scene text to show.
        num_frames: how many frames (at least 1); with ``fps`` this sets the clip's length.
        width, height: frame size in pixels.
        font_path: a font file to prefer.

    Returns:
        uint8 array of shape (num_frames, height, width, 3).
    """
    if num_frames < 1:
        raise InvalidInput("num_frames", num_frames, "must be at least 1")
    _check_size(width, height)
    # Draw once, larger than the frame, then crop a shrinking window: a Ken Burns zoom that keeps the
    # text sharp and costs one resize per frame.
    scale = 1 + ZOOM_RANGE
    big = render_card(text, round(width * scale), round(height * scale), font_path=font_path)
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for i in range(num_frames):
        zoom = 1 + ZOOM_RANGE * i / max(1, num_frames - 1)
        box_w, box_h = big.width / zoom, big.height / zoom
        left = (big.width - box_w) / 2
        top = (big.height - box_h) / 2
        crop = big.resize(
            (width, height), Image.Resampling.BILINEAR, box=(left, top, left + box_w, top + box_h)
        )
        frames[i] = np.asarray(crop)
    return frames


def _check_size(width: int, height: int) -> None:
    for name, value in (("width", width), ("height", height)):
        if not isinstance(value, int) or value < 16:
            raise InvalidInput(name, value, "must be an integer of at least 16 pixels")
