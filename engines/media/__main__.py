"""`python -m engines.media OUT_DIR`: render a sample video with the media engine alone (no Ray, no models).

It writes three title-card scenes, cross-fades them into one MP4 and adds a poster, a spritesheet and
WebVTT captions: a quick check that ffmpeg, fonts and encoding work on this machine.
"""

from __future__ import annotations

import sys
from pathlib import Path

from engines.media import Cue, VideoProcessingConfig, VideoProcessor, write_webvtt

SCENES = [
    "A lighthouse keeper climbs the stairs at dusk.",
    "灯塔的光照亮了海面上的一头鲸鱼。",
    "The whale sings, and the sea glows back.",
]


def main(out_dir: Path) -> Path:
    processor = VideoProcessor(VideoProcessingConfig(preset="veryfast", fps=12))
    seconds, width, height = 2.0, 640, 360
    clips = [
        processor.title_card_clip(text, out_dir / f"scene_{i}.mp4", seconds, width, height)
        for i, text in enumerate(SCENES)
    ]
    final = processor.stitch(clips, out_dir / "video.mp4")
    frames = processor.sample_frames(final, processor.config.spritesheet_tiles)
    processor.write_thumbnail(frames[len(frames) // 2], out_dir / "thumbnail.jpg")
    processor.write_spritesheet(frames, out_dir / "spritesheet.jpg")
    step = seconds - processor.config.transition_seconds
    write_webvtt(
        [Cue(i * step, i * step + step, text) for i, text in enumerate(SCENES)], out_dir / "captions.vtt"
    )
    return final


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "out/sample")
    video = main(target)
    info = VideoProcessor.probe(video)
    print(
        f"Wrote {video} ({info.width}x{info.height}, {info.duration:.1f} s) with thumbnail, spritesheet, captions"
    )
