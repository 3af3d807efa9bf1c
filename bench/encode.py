"""Encoder benchmark: our H.264 encode against the plain ffmpeg command line, and OpenCV's mp4v for reference.

All three encode the same raw RGB frames. Ours and the command line run the same ffmpeg binary with the
same libx264 settings (preset, CRF, yuv420p, +faststart), so their ratio is the cost of our wrapper:
frame checks, the pipe and the temporary-file rename.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any

import av
import numpy as np

from bench.timing import interleaved, median
from engines.media import VideoProcessingConfig, VideoProcessor
from engines.media import ffmpeg as ffmpeg_runner

WIDTH, HEIGHT, FPS = 1024, 576, 7
# What browsers decode in an MP4, by the codec name PyAV reports (Chrome, Firefox and Safari alike).
# MPEG-4 Part 2 ("mpeg4", OpenCV's mp4v) is in none of them.
BROWSER_CODECS = {"h264", "vp9", "av1"}


def synthetic_frames(count: int, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """Deterministic frames that move like video: a drifting gradient, a moving disc and fine texture.

    Pure noise would be the encoder's worst case and a flat colour its best; neither is what SVD makes.
    """
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 24, size=(height, width, 1), dtype=np.uint8)
    ys, xs = np.mgrid[0:height, 0:width]
    frames = np.empty((count, height, width, 3), dtype=np.uint8)
    for t in range(count):
        cx, cy = (width * (0.2 + 0.6 * t / max(1, count - 1))), height / 2
        disc = ((xs - cx) ** 2 + (ys - cy) ** 2 < (height / 5) ** 2) * 90
        frames[t, ..., 0] = (xs + 6 * t) % 256
        frames[t, ..., 1] = (ys + 3 * t) % 256
        frames[t, ..., 2] = np.clip(disc + 60, 0, 255)
        frames[t] = np.clip(frames[t].astype(np.int16) + texture - 12, 0, 255)
    return frames


def cli_command(raw: Path, output: Path, config: VideoProcessingConfig, width: int, height: int) -> list[str]:
    """The command line a person would type to encode ``raw`` with our settings."""
    quality = ["-b:v", config.bitrate] if config.bitrate else ["-crf", str(config.crf)]
    # fmt: off
    return [
        ffmpeg_runner.ffmpeg_exe(config.ffmpeg_path), "-hide_banner", "-v", "error", "-y", "-nostdin",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(FPS), "-i", str(raw),
        "-c:v", config.codec, "-preset", config.preset, *quality,
        "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(output),
    ]
    # fmt: on


def opencv_mp4v(frames: np.ndarray, output: Path) -> None:
    """Write ``frames`` with OpenCV's VideoWriter and the 'mp4v' fourcc (what the seed planned)."""
    import cv2

    _, height, width, _ = frames.shape
    writer = cv2.VideoWriter(str(output), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (width, height))
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))  # OpenCV takes BGR
    finally:
        writer.release()


def stream_facts(path: Path) -> dict[str, Any]:
    """Codec, pixel format and frame count read back from the file with PyAV, and whether browsers play it."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        codec, pix_fmt = stream.codec_context.name, stream.codec_context.pix_fmt
        frames = sum(1 for _ in container.decode(stream))
    # 4:4:4 or 10-bit H.264 is outside what Firefox and Safari decode; 8-bit 4:2:0 plays everywhere.
    playable = codec in BROWSER_CODECS and pix_fmt in ("yuv420p", "yuvj420p")
    return {
        "codec": codec,
        "pix_fmt": pix_fmt,
        "frames": frames,
        "bytes": path.stat().st_size,
        "browser_playable": playable,
    }


def run(frame_counts: tuple[int, ...] = (25, 100), repeats: int = 7) -> dict[str, Any]:
    """Time ours, the CLI and OpenCV on each frame count; ``encode_ratio`` is the worst case's median of
    per-round ours/CLI ratios.

    Args:
        frame_counts: clip lengths to encode at 1024x576.
        repeats: timed rounds per clip length (after one untimed round); each round runs all three.
    """
    config = VideoProcessingConfig()
    processor = VideoProcessor(config)
    cases: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-encode-") as scratch:
        folder = Path(scratch)
        for count in frame_counts:
            frames = synthetic_frames(count)
            raw = folder / f"frames{count}.rgb"
            raw.write_bytes(frames.tobytes())  # the CLI's input; in the page cache after this write
            outputs = {name: folder / f"{name}{count}.mp4" for name in ("ours", "cli", "opencv")}
            command = cli_command(raw, outputs["cli"], config, WIDTH, HEIGHT)
            times = interleaved(
                {
                    "ours": lambda f=frames, o=outputs["ours"]: processor.frames_to_video(f, o, FPS),
                    "cli": lambda c=command: subprocess.run(c, check=True),
                    "opencv": lambda f=frames, o=outputs["opencv"]: opencv_mp4v(f, o),
                },
                repeats=repeats,
            )
            wall = {name: median([s.wall for s in samples]) for name, samples in times.items()}
            cpu = {name: median([s.cpu for s in samples]) for name, samples in times.items()}
            cases[str(count)] = {
                "frames": count,
                "size": f"{WIDTH}x{HEIGHT}",
                "wall_s": {name: [round(s.wall, 4) for s in samples] for name, samples in times.items()},
                "median_wall_s": wall,
                "median_cpu_s": cpu,
                # Each round times ours and the CLI back to back, under the same load: the median of those
                # paired ratios is steadier on a shared machine than a ratio of two separate medians.
                "ratio_ours_over_cli": median(
                    [ours.wall / cli.wall for ours, cli in zip(times["ours"], times["cli"], strict=True)]
                ),
                "ratio_of_medians": wall["ours"] / wall["cli"],
                "cpu_ratio_ours_over_cli": cpu["ours"] / cpu["cli"],
                "files": {name: stream_facts(path) for name, path in outputs.items()},
            }
    return {
        "encode_ratio": max(case["ratio_ours_over_cli"] for case in cases.values()),
        "settings": {"codec": config.codec, "preset": config.preset, "crf": config.crf, "fps": FPS},
        "repeats": repeats,
        "cases": cases,
    }
