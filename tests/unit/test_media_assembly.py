"""Interpolation, stitching, title cards, stills and captions."""

from __future__ import annotations

import numpy as np
import pytest
import webvtt

from core.errors import InvalidInput
from engines.media import (
    Cue,
    VideoProcessingConfig,
    VideoProcessor,
    render_card,
    title_card_frames,
    write_webvtt,
)
from tests.fixtures.media import moving_square, square_center_x

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("factor", [2, 4])
def test_interpolated_frames_lie_between_their_neighbours(processor, factor):
    frames = moving_square(5, step=8)
    out = processor.interpolate_frames(frames, factor)

    assert len(out) == (len(frames) - 1) * factor + 1
    np.testing.assert_array_equal(out[::factor][0], frames[0])
    for i in range(len(frames) - 1):
        left, right = square_center_x(frames[i]), square_center_x(frames[i + 1])
        for k in range(1, factor):
            middle = out[i * factor + k]
            x = square_center_x(middle)
            assert left < x < right, f"frame {i * factor + k} at x={x} is not between {left} and {right}"
            # Not a copy of a neighbour, and not a cross-fade (which would show two half-bright squares).
            assert not np.array_equal(middle, frames[i]) and not np.array_equal(middle, frames[i + 1])
            assert (middle[:, :, 0] > 200).sum() >= 0.5 * (frames[i][:, :, 0] > 200).sum()


def test_factor_one_is_a_no_op(processor):
    frames = moving_square(4)
    np.testing.assert_array_equal(processor.interpolate_frames(frames, 1), frames)


@pytest.mark.parametrize("factor", [0, -2, 1.5])
def test_bad_factor_is_refused(processor, factor):
    with pytest.raises(InvalidInput, match="factor="):
        processor.interpolate_frames(moving_square(3), factor)


def test_crossfade_stitch_lasts_the_sum_less_the_transitions(processor, tmp_path):
    a = processor.frames_to_video(moving_square(16), tmp_path / "a.mp4", fps=8)  # 2.0 s
    # Another size and frame rate: normalised to the first clip's.
    b = processor.frames_to_video(moving_square(24, height=48, width=80, step=2), tmp_path / "b.mp4", fps=12)
    c = processor.title_card_clip("The end", tmp_path / "c.mp4", seconds=1.5, width=96, height=64, fps=8)

    out = processor.stitch([a, b, c], tmp_path / "final.mp4", transition="crossfade", transition_seconds=0.5)

    info = processor.probe(out)
    assert (info.width, info.height, info.fps) == (96, 64, 8.0)
    assert info.duration == pytest.approx(2.0 + 2.0 + 1.5 - 2 * 0.5, abs=1 / 8 + 1e-6)


def test_cut_stitch_lasts_the_sum(processor, tmp_path):
    clips = [processor.frames_to_video(moving_square(8), tmp_path / f"{i}.mp4", fps=8) for i in range(3)]
    info = processor.probe(processor.stitch(clips, tmp_path / "final.mp4", transition="cut"))
    assert info.frames == 24


def test_stitch_refuses_missing_clips(processor, tmp_path):
    with pytest.raises(InvalidInput, match=r"clips\[0\]"):
        processor.stitch([tmp_path / "missing.mp4"], tmp_path / "final.mp4")
    with pytest.raises(InvalidInput, match="clips="):
        processor.stitch([], tmp_path / "final.mp4")


def test_title_card_moves_gently_and_has_the_asked_length(processor, tmp_path):
    frames = title_card_frames("A lighthouse at dusk", 12, 128, 72)
    assert frames.shape == (12, 72, 128, 3)
    changes = [np.abs(frames[i + 1].astype(int) - frames[i]).mean() for i in range(11)]
    assert all(0 < change < 8 for change in changes)  # moving every frame, never jumping
    clip = processor.title_card_clip(
        "A lighthouse at dusk", tmp_path / "card.mp4", seconds=2, width=128, height=72
    )
    assert processor.probe(clip).frames == 16


def ink(image) -> np.ndarray:
    """Where text was drawn: pixels much brighter than the dark background."""
    return np.asarray(image.convert("L")) > 160


def test_cjk_text_renders_as_distinct_glyphs():
    texts = ["你好世界", "灯塔看守人", "こんにちは", "안녕하세요"]
    masks = [ink(render_card(text, 320, 180, color=(20, 20, 20))) for text in texts]
    for text, mask in zip(texts, masks, strict=True):
        assert mask.sum() > 100, f"{text!r} drew nothing"
    # A font without these glyphs draws the same box for every character: equal-length strings would match.
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            assert (masks[i] != masks[j]).sum() > 200, f"{texts[i]!r} and {texts[j]!r} look the same"


def test_box_glyphs_would_be_caught():
    # Two strings of unassigned code points draw as identical boxes: the check above tells them apart.
    a = ink(render_card("\U000e0101\U000e0102", 320, 180, color=(20, 20, 20)))
    b = ink(render_card("\U000e0103\U000e0104", 320, 180, color=(20, 20, 20)))
    assert (a != b).sum() <= 200


def test_long_text_wraps_inside_the_card():
    mask = ink(render_card("word " * 60 + "长" * 80, 200, 120, color=(20, 20, 20)))
    assert mask.sum() > 0
    margin = 200 // 12
    assert not mask[:, : margin - 2].any() and not mask[:, -(margin - 2) :].any()


def test_thumbnail_and_spritesheet(processor, tmp_path):
    from PIL import Image

    frames = moving_square(30)
    thumb = Image.open(processor.write_thumbnail(frames[10], tmp_path / "poster.jpg"))
    assert thumb.format == "JPEG" and thumb.size == (96, 64)
    sheet_path = VideoProcessor(
        VideoProcessingConfig(spritesheet_columns=4, spritesheet_tiles=10, spritesheet_tile_width=48)
    ).write_spritesheet(frames, tmp_path / "sprites.jpg")
    sheet = Image.open(sheet_path)
    assert sheet.size == (4 * 48, 3 * 32)


def test_sample_frames_reads_back_the_video(processor, tmp_path):
    clip = processor.frames_to_video(moving_square(10), tmp_path / "a.mp4")
    picked = processor.sample_frames(clip, 4)
    assert picked.shape == (4, 64, 96, 3)
    assert square_center_x(picked[0]) < square_center_x(picked[-1])


def test_captions_parse_as_webvtt(tmp_path):
    cues = [
        Cue(0, 2.5, "灯塔看守人 <在黄昏>"),
        Cue(2.5, 61.25, "A whale\n\nsings & glows --> bright"),
        Cue(61.25, 3725.0, "終わり"),
    ]
    path = write_webvtt(cues, tmp_path / "captions.vtt")

    parsed = webvtt.read(str(path))
    assert [c.start for c in parsed] == ["00:00:00.000", "00:00:02.500", "00:01:01.250"]
    assert parsed[2].end == "01:02:05.000"
    assert "灯塔看守人" in parsed[0].text and "终" not in parsed[0].text
    assert parsed[1].text.count("\n") <= 1


def test_bad_cue_times_are_refused(tmp_path):
    with pytest.raises(InvalidInput, match=r"cues\[0\]"):
        write_webvtt([Cue(3, 1, "backwards")], tmp_path / "c.vtt")
    assert not (tmp_path / "c.vtt").exists()
