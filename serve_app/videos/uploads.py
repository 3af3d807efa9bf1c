"""Decode an uploaded reference image or video, refusing anything the API does not take, as a 400.

The API takes one still PNG, JPEG or WebP image of at most ``MAX_PIXELS`` pixels, as a file upload or a
base64 ``data:`` URL; or, as a file upload, an MP4, MOV or WebM video within the ``MAX_VIDEO_*`` bounds,
of which only the last frame is kept (video to video: the new video continues from it). ``decode_image``
and ``last_video_frame`` either return a picture upright, in RGB and fully decoded, or raise ``BadRequest``
with code ``invalid_image``: a hostile or broken upload fails the request, never a job, and never as a 500.
Messages name the field and what is accepted; they never echo the uploaded bytes.

These functions are synchronous and CPU-bound (decoding a large image takes a while): call them from a
worker thread (``asyncio.to_thread``), not on the event loop.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import re
from typing import Any

import av
from PIL import Image, ImageOps, PngImagePlugin

from core.errors import BadRequest, InvalidInput
from core.files import REFERENCE_SOURCE_KEY
from core.status import KeyframeSource

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP")
MAX_PIXELS = 40_000_000  # refused before decoding: a small file can declare a huge image

# Videos: the container is chosen from the first bytes and named to FFmpeg, so no other demuxer (an HLS or
# concat playlist, which would open further files) ever reads an upload; the codec is one of a short list.
VIDEO_CODECS = ("h264", "hevc", "vp8", "vp9", "av1", "mpeg4", "prores")
MAX_VIDEO_PIXELS = 3840 * 2160  # per frame, declared and decoded (FFmpeg's `max_pixels`)
MAX_VIDEO_SECONDS = 60.0  # as the container declares it
MAX_VIDEO_FRAMES = 3600  # as the stream declares it, and decoded
# What finding the last frame may decode, in pixels: the work it takes, whatever the frames' size. From the
# last keyframe on, a usual clip needs a small part of it; a stream with no keyframe but its first needs all.
MAX_DECODED_PIXELS = 2**32

_ACCEPTED = "a PNG, JPEG or WebP image"
_ACCEPTED_FILES = "a PNG, JPEG or WebP image, or an MP4, MOV or WebM video"
# QuickTime/MP4 files start with a box: its size, then its type; `ftyp` in every MP4, older MOVs start with
# others. WebM is Matroska, which starts with EBML's magic number.
_QUICKTIME_BOXES = (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip")
_EBML = b"\x1a\x45\xdf\xa3"
_DATA_URL = re.compile(r"data:image/(?:png|jpeg|webp);base64,", re.IGNORECASE)


def decode_upload(data: bytes, param: str) -> tuple[Image.Image, KeyframeSource]:
    """An uploaded file as the picture a video starts from, with what it was: an image
    (`KeyframeSource.REFERENCE`, see ``decode_image``) or a video's last frame (`KeyframeSource.INPUT_VIDEO`,
    see ``last_video_frame``)."""
    if video_container(data) is not None:
        return last_video_frame(data, param), KeyframeSource.INPUT_VIDEO
    return decode_image(data, param, send=_ACCEPTED_FILES), KeyframeSource.REFERENCE


def decode_image(data: bytes, param: str, send: str = _ACCEPTED) -> Image.Image:
    """The uploaded image, upright (EXIF orientation applied), in RGB, loaded and detached from ``data``.

    Args:
        data: the uploaded file's bytes.
        param: the request field it came in, named in errors (``input_reference``).
        send: what an error says to send instead of an unreadable file; default "a PNG, JPEG or WebP image".

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
        raise _invalid(param, value, f"not a readable image; send {send}") from exc


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


def video_container(data: bytes) -> str | None:
    """The FFmpeg demuxer for an upload whose first bytes are an MP4/MOV's or a WebM's, else None."""
    if data[4:8] in _QUICKTIME_BOXES:
        return "mov"
    if data.startswith(_EBML):
        return "matroska"
    return None


def last_video_frame(data: bytes, param: str) -> Image.Image:
    """The last frame of an uploaded MP4, MOV or WebM video, in RGB, turned as players show it.

    Bounded before and while decoding: the declared size, length and frame count, the decoded frames' size
    (FFmpeg refuses larger ones itself) and the pixels decoded in all. Only the video's last group of
    pictures is decoded where the container can seek.

    Raises:
        BadRequest: code ``invalid_image``, for anything but a readable video of one of ``VIDEO_CODECS``
            within the bounds, with at least one frame.
    """
    container_format = video_container(data)
    if container_format is None:
        raise _invalid(
            param, f"<{len(data)} bytes>", f"not a readable image or video; send {_ACCEPTED_FILES}"
        )
    try:
        # `max_pixels` bounds the decoders the demuxer opens to probe the streams. No upload opens another
        # file (`io_open`): the two demuxers have no playlists, and QuickTime's references are off (FFmpeg's
        # default `enable_drefs`).
        options = {"max_pixels": str(MAX_VIDEO_PIXELS)}
        with av.open(
            io.BytesIO(data), format=container_format, options=options, io_open=_no_other_files
        ) as container:
            frame = _last_frame(container, param)
            # As players show it: a phone's portrait clip is stored sideways with a display rotation
            # (counter-clockwise degrees, as PIL's `rotate` takes them).
            return (
                frame.to_image().rotate(frame.rotation, expand=True) if frame.rotation else frame.to_image()
            )
    except BadRequest:
        raise
    # FFmpeg's errors, and whatever else a broken file makes the bindings raise, are the upload's.
    except Exception as exc:
        raise _invalid(
            param,
            f"<{len(data)} bytes>",
            f"not a readable video, or one with frames over {MAX_VIDEO_PIXELS} pixels; send {_ACCEPTED_FILES}",
        ) from exc


def _last_frame(container: Any, param: str) -> Any:
    if not container.streams.video:
        raise _invalid(
            param, "<a file with no video track>", f"must hold a video track; send {_ACCEPTED_FILES}"
        )
    stream = container.streams.video[0]
    codec = stream.codec_context.name
    if codec not in VIDEO_CODECS:
        raise _invalid(param, codec, f"the video's codec must be one of {', '.join(VIDEO_CODECS)}")
    width, height = stream.codec_context.width, stream.codec_context.height
    if width * height > MAX_VIDEO_PIXELS:
        raise _invalid(
            param, f"{width}x{height}", f"a video's frames may have at most {MAX_VIDEO_PIXELS} pixels"
        )
    seconds = (container.duration or 0) / av.time_base
    if seconds > MAX_VIDEO_SECONDS:
        raise _invalid(param, f"{seconds:.1f} s", f"a video may last at most {MAX_VIDEO_SECONDS:g} s")
    if stream.frames > MAX_VIDEO_FRAMES:
        raise _invalid(
            param, f"{stream.frames} frames", f"a video may have at most {MAX_VIDEO_FRAMES} frames"
        )
    # The decoder that decodes below is not the one that probed the stream: it needs the bound too. It refuses
    # a frame larger than this whatever the header said (a probe refused by the bound leaves the size at 0x0).
    stream.codec_context.options = {"max_pixels": str(MAX_VIDEO_PIXELS)}
    budget = _DecodeBudget(param)
    last = None
    if container.duration:
        # From the last keyframe before the end; a file that cannot seek there is decoded from its start.
        with contextlib.suppress(av.FFmpegError):
            container.seek(container.duration, backward=True)
            last = _last_decoded(container, stream, budget)
    if last is None:
        container.seek(0)
        last = _last_decoded(container, stream, budget)
    if last is None:
        raise _invalid(param, "<0 frames>", f"the video has no frames; send {_ACCEPTED_FILES}")
    return last


def _no_other_files(url: str, flags: int, options: dict[str, str]) -> Any:
    raise PermissionError(f"an uploaded video may not open other files ({url[:40]!r})")


class _DecodeBudget:
    """The pixels finding a last frame may still decode (`MAX_DECODED_PIXELS` in all)."""

    def __init__(self, param: str) -> None:
        self.param = param
        self.left = MAX_DECODED_PIXELS

    def spend(self, frame: Any) -> None:
        self.left -= frame.width * frame.height
        if self.left < 0:
            raise _invalid(
                self.param,
                "<a long group of pictures>",
                "finding its last frame decodes too much of it; send a shorter clip or one with more keyframes",
            )


def _last_decoded(container: Any, stream: Any, budget: _DecodeBudget) -> Any:
    last = None
    for frame in container.decode(stream):
        budget.spend(frame)
        last = frame
    return last


def encode_png(image: Image.Image, source: KeyframeSource = KeyframeSource.REFERENCE) -> bytes:
    """``image`` as PNG bytes, the lossless form the service stores a reference in, marked with what it came
    from (`core.files.REFERENCE_SOURCE_KEY`): the caller's image, or the last frame of the caller's video."""
    info = PngImagePlugin.PngInfo()
    info.add_text(REFERENCE_SOURCE_KEY, source)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
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
