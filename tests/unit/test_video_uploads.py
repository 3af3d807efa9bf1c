"""Uploaded videos (video to video): the last frame of a good MP4, MOV or WebM, and a hostile-file corpus,
built here, of which each must fail as one 400 naming the field, never as another exception (a 500)."""

from __future__ import annotations

import io
import os
import subprocess
from fractions import Fraction

import av
import imageio_ffmpeg
import numpy as np
import pytest

from core.errors import BadRequest
from core.status import KeyframeSource
from serve_app.videos import uploads
from serve_app.videos.uploads import decode_upload, last_video_frame
from tests.fixtures.media import video_bytes

pytestmark = pytest.mark.unit

PARAM = "input_reference"
MARKER = b"SECRET-UPLOAD-BYTES"  # in hostile payloads; must never show up in an error message
RED, GREEN = (220, 30, 30), (30, 200, 60)


def assert_color(image, color, tolerance=12) -> None:
    mean = np.asarray(image, dtype=float).reshape(-1, 3).mean(axis=0)
    assert np.abs(mean - color).max() < tolerance, (mean, color)


def refused(data: bytes, param: str = PARAM) -> BadRequest:
    with pytest.raises(BadRequest) as caught:
        decode_upload(data, param)
    error = caught.value
    assert (error.status, error.code, error.param) == (400, "invalid_image", param)
    assert error.message.startswith(f"{param}=")
    assert MARKER.decode() not in error.message
    return error


@pytest.mark.parametrize(
    ("container", "codec"),
    [("mp4", "libx264"), ("mov", "libx264"), ("webm", "libvpx-vp9"), ("webm", "libvpx"), ("mp4", "mpeg4")],
)
def test_the_last_frame_of_a_good_video_is_what_the_video_continues_from(container, codec):
    data = video_bytes([RED] * 9 + [GREEN], container, codec, size=(80, 48))
    image, source = decode_upload(data, PARAM)
    assert (image.mode, image.size, source) == ("RGB", (80, 48), KeyframeSource.INPUT_VIDEO)
    assert_color(image, GREEN)


def keyframes(data: bytes) -> int:
    with av.open(io.BytesIO(data)) as container:
        return sum(packet.is_keyframe for packet in container.demux(video=0) if packet.size)


def test_only_the_last_group_of_pictures_is_decoded_where_the_file_can_seek(monkeypatch):
    # A slow fade (no scene cut, which would start a group of its own) of 48 frames.
    fade = [(5 * i, 100, 100) for i in range(48)]
    grouped = video_bytes(fade, keyframe_every=8)
    one_group = video_bytes(fade, keyframe_every=100)
    assert (keyframes(grouped), keyframes(one_group)) == (6, 1)
    # A budget of 10 frames' pixels is enough for the last group of 8, not for all 48.
    monkeypatch.setattr(uploads, "MAX_DECODED_PIXELS", 10 * 64 * 48)
    assert_color(last_video_frame(grouped, PARAM), fade[-1])
    assert "decodes too much" in refused(one_group).message


def test_a_clip_stored_sideways_comes_out_as_players_show_it(tmp_path):
    # A phone's portrait clip: landscape frames and a display rotation (here set by FFmpeg's own CLI, the
    # one the media engine runs). Left half red, right half green; shown turned 90 degrees anticlockwise.
    frame = np.zeros((48, 64, 3), dtype=np.uint8)
    frame[:, :32], frame[:, 32:] = RED, GREEN
    stored, turned = tmp_path / "stored.mp4", tmp_path / "turned.mp4"
    stored.write_bytes(video_bytes([frame] * 3))
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    subprocess.run(
        [ffmpeg, "-loglevel", "error", "-display_rotation", "90", "-i", stored, "-c", "copy", turned],
        check=True,
    )
    image = last_video_frame(turned.read_bytes(), PARAM)
    assert image.size == (48, 64)
    assert_color(image.crop((0, 0, 48, 24)), GREEN)  # the right half went to the top
    assert_color(image.crop((0, 40, 48, 64)), RED)


def test_an_image_upload_is_still_an_image_reference():
    buffer = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (8, 8), GREEN).save(buffer, format="PNG")
    image, source = decode_upload(buffer.getvalue(), PARAM)
    assert source == KeyframeSource.REFERENCE
    assert_color(image, GREEN, tolerance=1)


def _audio_only() -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as output:
        stream = output.add_stream("aac", rate=16000)
        samples = np.zeros((1, 16000), dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = 16000
        output.mux(stream.encode(frame))
        output.mux(stream.encode())
    return buffer.getvalue()


def _header_without_frames() -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="webm") as output:
        stream = output.add_stream("libvpx-vp9", rate=12)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        output.start_encoding()
    return buffer.getvalue()


def _frames_larger_than_the_header_says() -> bytes:
    # 256x256 VP9 frames in a track that declares 64x48: only the decoder's own bound sees their size.
    encoder = av.CodecContext.create("libvpx-vp9", "w")
    encoder.width, encoder.height, encoder.pix_fmt = 256, 256, "yuv420p"
    encoder.time_base = Fraction(1, 12)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="webm") as output:
        stream = output.add_stream("libvpx-vp9", rate=12)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        frames = [av.VideoFrame.from_ndarray(np.zeros((256, 256, 3), np.uint8), format="rgb24")] * 2
        for pts, frame in enumerate(frames):
            frame.pts = pts
            for packet in encoder.encode(frame):
                packet.stream = stream
                output.mux(packet)
        for packet in encoder.encode():
            packet.stream = stream
            output.mux(packet)
    return buffer.getvalue()


HLS = b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n"
MP4 = video_bytes([RED] * 12)

HOSTILE = {
    "truncated MP4 (its index is at the end)": lambda: MP4[: len(MP4) // 2],
    "MP4 with an altered box type": lambda: MP4[:4] + b"ftyq" + MP4[8:],
    "an MP4 box, then garbage": lambda: b"\x00\x00\x00\x20ftypisom" + os.urandom(400) + MARKER,
    "a WebM's magic, then garbage": lambda: b"\x1a\x45\xdf\xa3" + os.urandom(400) + MARKER,
    "an HLS playlist": lambda: HLS,
    "an HLS playlist behind an MP4 box": lambda: b"\x00\x00\x00\x20ftypisom" + HLS,
    "an MP4 with no video track": _audio_only,
    "a WebM with a video track and no frames": _header_without_frames,
    "an MP4 with no track at all": lambda: video_bytes([]) or b"\x00\x00\x00\x20ftypisom",
    "an MJPEG MOV (a codec not taken)": lambda: video_bytes([RED] * 2, "mov", "mjpeg"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_video_is_a_400_naming_the_field(case):
    error = refused(HOSTILE[case]())
    assert "MP4, MOV or WebM" in error.message or "codec" in error.message


@pytest.mark.parametrize(
    ("codec", "says"),
    # H.264 declares its size in the file's header; MPEG-4 Part 2's probe decodes, and FFmpeg's bound stops it.
    [("libx264", "4096x2304"), ("mpeg4", "frames over 8294400 pixels")],
)
def test_frames_over_the_pixel_bound_are_refused_before_they_are_decoded(codec, says):
    # 4096x2304: 9.4 megapixels, over 3840x2160. One black frame encodes fast.
    data = video_bytes([(0, 0, 0)], "mp4", codec, size=(4096, 2304))
    assert says in refused(data).message


def test_frames_larger_than_the_header_says_are_refused_by_the_decoder(monkeypatch):
    monkeypatch.setattr(uploads, "MAX_VIDEO_PIXELS", 64 * 48)
    assert "frames over 3072 pixels" in refused(_frames_larger_than_the_header_says()).message


def test_a_video_longer_than_the_bound_is_refused_naming_its_length():
    data = video_bytes([RED] * 62, "mp4", "mpeg4", size=(16, 16), fps=1)  # 62 s
    assert "at most 60 s" in refused(data).message


def test_a_video_of_more_frames_than_the_bound_is_refused(monkeypatch):
    monkeypatch.setattr(uploads, "MAX_VIDEO_FRAMES", 10)
    assert "12 frames" in refused(MP4).message


def test_the_field_is_named_as_passed():
    refused(MP4[:100], "video")
