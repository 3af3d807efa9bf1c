"""Uploaded reference images: a hostile-upload corpus, built here, that must each fail as one 400.

Every bad upload must raise ``BadRequest`` with code ``invalid_image`` and the field it came in, never
another exception (that would be a 500). Good uploads in any mode come out upright, RGB and full size.
"""

from __future__ import annotations

import base64
import io
import os
import struct
import zlib

import pytest
from PIL import Image, ImageFile

from core.errors import BadRequest
from serve_app.videos.uploads import ACCEPTED_FORMATS, MAX_PIXELS, decode_data_url, decode_image, encode_png

pytestmark = pytest.mark.unit

PARAM = "input_reference"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MARKER = b"SECRET-UPLOAD-BYTES"  # in hostile payloads; must never show up in an error message


def _save(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _noise(size=(64, 64)) -> Image.Image:
    # Noise does not compress, so half the file is half the pixels: truncation lands inside the data.
    return Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_with_chunk(kind: bytes, data: bytes) -> bytes:
    png = _save(Image.new("RGB", (4, 4), "red"), "PNG")
    before_idat = png.index(b"IDAT") - 4  # the chunk's length field
    return png[:before_idat] + _chunk(kind, data) + png[before_idat:]


def _png_header_only(width: int, height: int) -> bytes:
    # A valid IHDR declaring the size, one tiny IDAT, IEND: a few dozen bytes claiming a huge image.
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _chunk(b"IEND", b"")
    )


def _animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (8, 8), color) for color in ("red", "green", "blue")]
    return _save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def _jpeg_with_app1(payload: bytes) -> bytes:
    jpeg = _save(Image.new("RGB", (8, 4), "red"), "JPEG")
    segment = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return jpeg[:2] + segment + jpeg[2:]  # right after SOI


def _data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


HOSTILE = {
    "empty": lambda: b"",
    "random garbage": lambda: os.urandom(512) + MARKER,
    "truncated PNG": lambda: (data := _save(_noise(), "PNG"))[: len(data) // 2],
    "truncated JPEG": lambda: (data := _save(_noise(), "JPEG", quality=95))[: len(data) // 2],
    "PNG with an altered signature": lambda: b"\x89PNX" + _save(_noise((8, 8)), "PNG")[4:],
    "JPEG behind a PNG signature": lambda: PNG_SIGNATURE + _save(_noise((8, 8)), "JPEG"),
    # Used to reach ImageOps.exif_transpose and fail there as a 500.
    "PNG with a garbage eXIf chunk": lambda: _png_with_chunk(b"eXIf", MARKER * 2),
    "PNG declaring 100000x100000": lambda: _png_header_only(100_000, 100_000),
    "PNG declaring 8000x6000": lambda: _png_header_only(8_000, 6_000),  # under Pillow's limit, over ours
    "GIF": lambda: _save(Image.new("RGB", (1, 1)), "GIF"),
    "BMP": lambda: _save(Image.new("RGB", (1, 1)), "BMP"),
    "TIFF": lambda: _save(Image.new("RGB", (1, 1)), "TIFF"),
    "ICO": lambda: _save(Image.new("RGB", (1, 1)), "ICO"),
    "PPM": lambda: _save(Image.new("RGB", (1, 1)), "PPM"),
    "animated PNG": lambda: _animated("PNG"),
    "animated WebP": lambda: _animated("WEBP"),
}


def _refused(call, *args) -> BadRequest:
    with pytest.raises(BadRequest) as caught:
        call(*args)
    error = caught.value
    assert error.code == "invalid_image"
    assert error.param == args[-1]
    assert error.status == 400
    assert error.message.startswith(f"{args[-1]}=")
    assert MARKER.decode() not in error.message
    return error


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_upload_is_a_400_naming_the_field(case):
    error = _refused(decode_image, HOSTILE[case](), PARAM)
    assert "PNG, JPEG or WebP" in error.message or "megapixels" in error.message


def test_the_field_is_named_as_passed():
    _refused(decode_image, b"not an image", "input_reference.image_url")


@pytest.mark.parametrize("case", ["PNG declaring 100000x100000", "PNG declaring 8000x6000"])
def test_a_huge_declared_size_is_refused_as_too_large(case):
    assert (
        f"at most {MAX_PIXELS // 1_000_000} megapixels"
        in _refused(decode_image, HOSTILE[case](), PARAM).message
    )


@pytest.mark.parametrize("case", ["animated PNG", "animated WebP"])
def test_an_animation_is_refused_as_one(case):
    assert "animation" in _refused(decode_image, HOSTILE[case](), PARAM).message


def test_a_jpeg_with_a_malformed_exif_segment_decodes_or_is_a_400():
    # Pillow 13 drops EXIF it cannot parse in a JPEG; another version may raise. Either way, no 500.
    data = _jpeg_with_app1(b"Exif\x00\x00" + MARKER)
    try:
        image = decode_image(data, PARAM)
    except BadRequest as error:
        assert error.code == "invalid_image" and error.param == PARAM
    else:
        assert (image.mode, image.size) == ("RGB", (8, 4))


@pytest.mark.parametrize(
    "url",
    [
        _data_url(_save(Image.new("RGB", (1, 1)), "GIF"), "image/gif"),
        _data_url(b"hello", "text/plain"),
        "data:image/png," + "A" * 60,  # not base64
        "https://example.com/cat.png",
        "",
    ],
    ids=["gif", "text", "no-base64", "http", "empty"],
)
def test_a_data_url_of_another_kind_is_refused(url):
    error = _refused(decode_data_url, url, "input_reference.image_url")
    assert len(url) <= 40 or url[:41] not in error.message  # only the first 40 characters are shown


def test_invalid_base64_is_refused():
    error = _refused(decode_data_url, "data:image/png;base64,iVBORw0KGgo$$$not*base64", "image_url")
    assert "base64" in error.message


def test_a_data_url_of_non_image_bytes_is_refused():
    _refused(decode_data_url, _data_url(MARKER * 4), "image_url")


def test_a_data_url_of_a_hostile_image_is_refused():
    _refused(decode_data_url, _data_url(HOSTILE["PNG with a garbage eXIf chunk"]()), "image_url")


GOOD = [
    ("PNG", "RGB"),
    ("PNG", "RGBA"),
    ("PNG", "L"),
    ("PNG", "LA"),
    ("PNG", "P"),
    ("PNG", "1"),
    ("PNG", "I;16"),
    ("JPEG", "RGB"),
    ("JPEG", "L"),
    ("JPEG", "CMYK"),
    ("WEBP", "RGB"),
    ("WEBP", "RGBA"),
    ("WEBP", "L"),
    ("WEBP", "P"),
]


@pytest.mark.parametrize(("fmt", "mode"), GOOD, ids=[f"{fmt}-{mode}" for fmt, mode in GOOD])
def test_an_accepted_image_decodes_to_rgb_at_its_size(fmt, mode):
    assert fmt in ACCEPTED_FORMATS
    image = decode_image(_save(Image.new(mode, (7, 5)), fmt), PARAM)
    assert (image.mode, image.size) == ("RGB", (7, 5))
    assert not isinstance(image, ImageFile.ImageFile)  # loaded, and detached from the upload's buffer


def test_16_bit_greyscale_is_scaled_not_clipped_to_white():
    image = decode_image(_save(Image.new("I;16", (2, 2), 40_000), "PNG"), PARAM)
    assert image.getpixel((0, 0)) == (156, 156, 156)  # 40000 / 256


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    image = decode_image(_save(Image.new("RGB", (16, 8)), "JPEG", exif=exif), PARAM)
    assert image.size == (8, 16)


def test_a_data_url_decodes_whatever_the_case_of_its_media_type():
    url = _data_url(_save(Image.new("RGBA", (3, 2)), "PNG"), "IMAGE/PNG")
    image = decode_data_url(url, "image_url")
    assert (image.mode, image.size) == ("RGB", (3, 2))


def test_encode_png_round_trips():
    image = decode_image(_save(_noise((9, 6)), "WEBP", lossless=True), PARAM)
    with Image.open(io.BytesIO(encode_png(image))) as stored:
        assert stored.format == "PNG"
        assert (stored.mode, stored.size) == ("RGB", (9, 6))
        assert stored.tobytes() == image.tobytes()
