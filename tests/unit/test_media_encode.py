"""Encoding frames to MP4, read back with a real decoder (PyAV)."""

from __future__ import annotations

import av
import numpy as np
import pytest
from PIL import Image

from core.errors import InvalidInput, MediaError
from engines.media import VideoProcessingConfig, VideoProcessor
from tests.fixtures.media import moving_square

pytestmark = pytest.mark.unit


def top_level_boxes(path) -> list[str]:
    """The MP4's top-level box types, in file order."""
    data = path.read_bytes()
    boxes, offset = [], 0
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset : offset + 4], "big")
        boxes.append(data[offset + 4 : offset + 8].decode("latin-1"))
        if size == 1:
            size = int.from_bytes(data[offset + 8 : offset + 16], "big")
        if size < 8:
            break
        offset += size
    return boxes


def test_frames_become_h264_yuv420p_faststart_mp4(processor, tmp_path):
    out = processor.frames_to_video(moving_square(12), tmp_path / "clip.mp4", fps=8)

    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        decoded = list(container.decode(stream))
    assert len(decoded) == 12
    assert float(decoded[-1].time) == pytest.approx(11 / 8, abs=1e-3)
    boxes = top_level_boxes(out)
    assert boxes.index("moov") < boxes.index("mdat")


def test_odd_size_is_made_even(processor, tmp_path):
    frames = np.full((3, 37, 51, 3), 128, dtype=np.uint8)
    info = processor.probe(processor.frames_to_video(frames, tmp_path / "odd.mp4"))
    assert (info.width, info.height) == (50, 36)


def test_pil_images_of_any_mode_are_accepted(processor, tmp_path):
    frames = [Image.new("RGBA", (32, 32), (200, 10, 10, 255)), Image.new("L", (32, 32), 90)]
    info = processor.probe(processor.frames_to_video(frames, tmp_path / "pil.mp4"))
    assert info.frames == 2


def test_bitrate_replaces_crf(tmp_path):
    noisy = np.random.default_rng(0).integers(0, 255, (8, 64, 64, 3), dtype=np.uint8)
    low = VideoProcessor(VideoProcessingConfig(preset="ultrafast", bitrate="20k"))
    high = VideoProcessor(VideoProcessingConfig(preset="ultrafast", crf=0))
    small = low.frames_to_video(noisy, tmp_path / "low.mp4").stat().st_size
    large = high.frames_to_video(noisy, tmp_path / "high.mp4").stat().st_size
    assert small * 2 < large


@pytest.mark.parametrize(
    ("frames", "param"),
    [
        ([], "frames"),
        (np.zeros((0, 8, 8, 3), np.uint8), "frames"),
        ([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 10, 3), np.uint8)], "frames[1]"),
        (np.zeros((2, 8, 8, 3), np.float32), "frames"),
        (np.zeros((2, 8, 8, 4), np.uint8), "frames"),
        ([np.zeros((8, 8), np.uint8)], "frames[0]"),
        (["not a frame"], "frames[0]"),
    ],
)
def test_bad_frames_name_the_parameter_and_leave_nothing(processor, tmp_path, frames, param):
    target = tmp_path / "bad.mp4"
    with pytest.raises(InvalidInput) as err:
        processor.frames_to_video(frames, target)
    assert err.value.param == param
    assert param in str(err.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fps", [0, -5, float("nan"), "8"])
def test_bad_fps_is_refused(processor, tmp_path, fps):
    with pytest.raises(InvalidInput, match="fps="):
        processor.frames_to_video(moving_square(2), tmp_path / "x.mp4", fps=fps)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_output_folder_is_named(processor, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    with pytest.raises(InvalidInput, match="output_path=") as err:
        processor.frames_to_video(moving_square(2), blocker / "clip.mp4")
    # A long value is shown shortened from its start (a tmp_path under pytest-xdist is long).
    message = str(err.value)
    assert "cannot create its folder" in message and str(blocker / "clip.mp4")[:40] in message


def test_ffmpeg_failure_keeps_its_message_and_leaves_no_partial_file(tmp_path):
    # The schema refuses unknown presets; bypassing it shows what a bad setting that reached ffmpeg gives.
    config = VideoProcessingConfig.model_construct(
        **{**VideoProcessingConfig().model_dump(), "preset": "bogus"}
    )
    target = tmp_path / "out.mp4"
    with pytest.raises(MediaError) as err:
        VideoProcessor(config).frames_to_video(moving_square(3), target)
    assert "bogus" in str(err.value).lower() or "preset" in str(err.value).lower()
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_untouched_when_encoding_fails(processor, tmp_path):
    target = tmp_path / "keep.mp4"
    target.write_bytes(b"previous result")
    with pytest.raises(InvalidInput):
        processor.frames_to_video([], target)
    assert target.read_bytes() == b"previous result"
