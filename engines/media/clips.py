"""ClipEncoder: a job's media work on its files (scene clips, the final video, poster, spritesheet, captions).

Plain Python: the Encoder deployment wraps it, and in-process runs call it directly.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from core.errors import JobGone
from core.files import JobFiles
from core.status import Variant
from engines.media.captions import Cue, write_webvtt
from engines.media.processor import VideoProcessingConfig, VideoProcessor


@dataclass
class EncodeRequest:
    """One scene's clip to write, or one segment of it.

    A scene longer than one model call is made of ``segments``, each starting from the last frame of the
    one before. Each segment is written to its own file (the checkpoint of a resumed job); the last one
    joins them all into the scene's clip.

    Args:
        job_id, index: whose scene, and which.
        fps: the frame rate the frames were made for (interpolation multiplies it).
        keep_last_frame: return the frames' last frame (as PNG bytes), for what comes next to start from.
        segment: which segment of the scene these frames are (from 0).
        segments: how many segments the scene has.
    """

    job_id: str
    index: int
    fps: float
    keep_last_frame: bool = False
    segment: int = 0
    segments: int = 1


@dataclass
class EncodedScene:
    """A scene clip on disk; of its frames only the last comes back, and only when asked for."""

    path: str
    frames: int
    fps: float
    last_frame_png: bytes | None = None


@dataclass
class StitchRequest:
    """The final video of a job whose clips are on disk (one per caption, in order).

    Args:
        job_id: the job.
        captions: each scene's caption text.
        size: (width, height) of the final video.
        with_captions: whether to write the WebVTT file.
    """

    job_id: str
    captions: list[str]
    size: tuple[int, int]
    with_captions: bool


@dataclass
class FinalVideo:
    video: str
    thumbnail: str
    spritesheet: str
    captions: str | None
    duration: float


class ClipEncoder:
    """Writes scene clips and assembles the final video and its extras under the storage root.

    Args:
        config: the `video_processing` section of the app config.
        storage_root: the storage folder the job files live in.
    """

    def __init__(self, config: VideoProcessingConfig, storage_root: str | Path) -> None:
        self.processor = VideoProcessor(config)
        self.storage_root = storage_root

    def encode_scene(self, request: EncodeRequest, frames: np.ndarray) -> EncodedScene:
        """Interpolate (if configured) and encode one scene's frames (or one segment's) to its file.

        Returns the scene's clip, or for a segment before the last, the segment's file.
        """
        files = self._files(request.job_id)
        factor = self.processor.config.interpolation_factor
        fps = request.fps * factor
        made = self.processor.interpolate_frames(frames, factor)
        if request.segment == request.segments - 1 and factor > 1:
            # N frames interpolate to (N - 1) * factor + 1; holding the last one factor - 1 more keeps the
            # scene N / fps long, as without interpolation (so a video lasts what was asked either way).
            made = np.concatenate([made, np.repeat(made[-1:], factor - 1, axis=0)])
        last = png_bytes(frames[-1]) if request.keep_last_frame else None
        if request.segments == 1:
            path = self.processor.frames_to_video(made, files.clip(request.index), fps)
            return EncodedScene(str(path), len(made), fps, last)
        if request.segment > 0:
            made = made[1:]  # the previous segment's last frame, which this one started from
        path = self.processor.frames_to_video(made, files.segment(request.index, request.segment), fps)
        if request.segment < request.segments - 1:
            return EncodedScene(str(path), len(made), fps, last)
        parts = [files.segment(request.index, k) for k in range(request.segments)]
        clip = self.processor.stitch(parts, files.clip(request.index), transition="cut", fps=fps)
        frames_in_clip = sum(self.processor.probe(part).frames for part in parts)
        return EncodedScene(str(clip), frames_in_clip, fps, last)

    def stitch(self, request: StitchRequest) -> FinalVideo:
        """Stitch the clips into the final video and write its poster, spritesheet and captions."""
        files = self._files(request.job_id)
        clips = [files.clip(i) for i in range(len(request.captions))]
        video = self.processor.stitch(clips, files.variant(Variant.VIDEO), size=request.size)
        spans = self.processor.timeline(clips)
        cues = [Cue(start, end, text) for (start, end), text in zip(spans, request.captions, strict=True)]
        frames = self.processor.sample_frames(video, self.processor.config.spritesheet_tiles)
        # The poster: the middle of the middle scene (the video's own middle may fall inside a cross-fade).
        start, end = spans[len(spans) // 2]
        duration = self.processor.probe(video).duration
        poster = frames[min(len(frames) - 1, round((start + end) / 2 / duration * (len(frames) - 1)))]
        thumbnail = self.processor.write_thumbnail(poster, files.variant(Variant.THUMBNAIL))
        spritesheet = self.processor.write_spritesheet(frames, files.variant(Variant.SPRITESHEET))
        vtt = write_webvtt(cues, files.variant(Variant.CAPTIONS)) if request.with_captions else None
        return FinalVideo(
            video=str(video),
            thumbnail=str(thumbnail),
            spritesheet=str(spritesheet),
            captions=str(vtt) if vtt else None,
            duration=duration,
        )

    def _files(self, job_id: str) -> JobFiles:
        """The job's files; its folder must exist (the runner makes it), so a write that comes after a DELETE
        or an expiry does not bring the folder back with a file in it."""
        files = JobFiles(self.storage_root, job_id)
        if not files.folder.is_dir():
            raise JobGone(f"job {job_id} has no folder: it was deleted or expired meanwhile")
        return files


def png_bytes(frame: np.ndarray) -> bytes:
    """One RGB frame as PNG bytes (lossless, and a fraction of the raw array for the next scene's start)."""
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
