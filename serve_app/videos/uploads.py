"""Decode an uploaded reference image, refusing anything the API does not take, as a 400.

The API takes one still PNG, JPEG or WebP image of at most ``MAX_PIXELS`` pixels, as a file upload or a
base64 ``data:`` URL. ``decode_image`` either returns it upright, in RGB and fully decoded, or raises
``BadRequest`` with code ``invalid_image``: a hostile or broken upload fails the request, never a job,
and never as a 500. Messages name the field and what is accepted; they never echo the uploaded bytes.

These functions are synchronous and CPU-bound (decoding a large image takes a while): call them from a
worker thread (``asyncio.to_thread``), not on the event loop.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from typing import Any

from PIL import Image, ImageOps

from core.errors import BadRequest, InvalidInput

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP")
MAX_PIXELS = 40_000_000  # refused before decoding: a small file can declare a huge image

_ACCEPTED = "a PNG, JPEG or WebP image"
_DATA_URL = re.compile(r"data:image/(?:png|jpeg|webp);base64,", re.IGNORECASE)


def decode_image(data: bytes, param: str) -> Image.Image:
    """The uploaded image, upright (EXIF orientation applied), in RGB, loaded and detached from ``data``.

    Args:
        data: the uploaded file's bytes.
        param: the request field it came in, named in errors (``input_reference``).

    Raises:
        BadRequest: code ``invalid_image``, for anything but one readable still PNG, JPEG or WebP image
            of at most ``MAX_PIXELS`` pixels.
    """
    value = f"<{len(data)} bytes>"
    too_large = f"must be at most {MAX_PIXELS // 1_000_000} megapixels"
    try:
        # `formats=` stops Pillow from trying its other plugins: each is more parser for hostile input.
        with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as image:
            # Only the header has been read so far; the declared size decides before any pixel is.
            if image.width * image.height > MAX_PIXELS:
                raise _invalid(param, f"{image.width}x{image.height}", too_large)
            if getattr(image, "n_frames", 1) > 1:
                raise _invalid(param, value, f"must be a still image, not an animation; send {_ACCEPTED}")
            return _decoded(image)
    except BadRequest:
        raise
    # Pillow's own, larger limit is checked while opening, before ours. The warning (between its two
    # limits) is an exception only where warnings are errors; it is not made one here because
    # `warnings.catch_warnings` is not thread-safe, and those sizes are over MAX_PIXELS anyway.
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _invalid(param, value, too_large) from exc
    # Pillow's parsers raise many kinds of exception on broken input (OSError, SyntaxError, ValueError,
    # struct.error, EOFError, ...), none of them a server fault: every one is the upload's.
    except Exception as exc:
        raise _invalid(param, value, f"not a readable image; send {_ACCEPTED}") from exc


def decode_data_url(url: str, param: str) -> Image.Image:
    """The image in a ``data:image/<png|jpeg|webp>;base64,...`` URL, as ``decode_image`` returns it.

    Raises:
        BadRequest: code ``invalid_image``, for any other URL, invalid base64, or a bad image.
    """
    prefix = _DATA_URL.match(url)
    if prefix is None:
        raise _invalid(param, url[:40], "must be a data URL: data:image/<png|jpeg|webp>;base64,<data>")
    try:
        # `validate=True`: without it, b64decode drops any character outside the alphabet silently.
        data = base64.b64decode(url[prefix.end() :], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _invalid(param, url[:40], "the data after 'base64,' is not valid base64") from exc
    return decode_image(data, param)


def encode_png(image: Image.Image) -> bytes:
    """``image`` as PNG bytes: the lossless form the service stores a reference image in."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _decoded(image: Image.Image) -> Image.Image:
    # One guarded step: pixels are only read here, and a malformed EXIF block only fails here.
    image.load()
    upright = ImageOps.exif_transpose(image)
    if upright.mode.startswith("I"):
        # 16-bit greyscale (PNG): convert() would clip every value over 255 to white; scale it instead.
        upright = upright.convert("I").point(lambda v: v / 256).convert("L")
    # convert() returns a new image, so nothing keeps a reference to the upload's buffer.
    return upright.convert("RGB")


def _invalid(param: str, value: Any, reason: str) -> BadRequest:
    return BadRequest(str(InvalidInput(param, value, reason)), param=param, code="invalid_image")
