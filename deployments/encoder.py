"""Encoder: the CPU side of a job as a Ray Serve deployment (scene clips, the final video and its extras)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np
from ray import serve

from core.files import JobFiles
from engines.fallback import SceneResult
from engines.media import Cue, VideoProcessingConfig, VideoProcessor, write_webvtt


@dataclass
class EncodedScene:
    """A scene clip on disk; the frames stay behind except the last, which continuity needs."""

    path: str
    frames: int
    fps: float
    last_frame: np.ndarray


@dataclass
class FinalVideo:
    video: str
    thumbnail: str
    spritesheet: str
    captions: str | None
    duration: float


@serve.deployment(
    ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=4, graceful_shutdown_timeout_s=120
)
class Encoder:
    """Writes scene clips and assembles the final video, poster, spritesheet and captions.

    Args:
        config: the `video_processing` section of the app config.
        storage_root: the storage folder shared with the ingress.
    """

    def __init__(self, config: VideoProcessingConfig, storage_root: str) -> None:
        self.processor = VideoProcessor(config)
        self.storage_root = storage_root

    async def encode_scene(self, job_id: str, index: int, scene: SceneResult, fps: float) -> EncodedScene:
        """Interpolate (if configured) and encode one scene's frames to its clip file."""
        return await asyncio.to_thread(self._encode_scene, job_id, index, scene, fps)

    async def finish(
        self, job_id: str, captions: list[str], size: tuple[int, int], with_captions: bool
    ) -> FinalVideo:
        """Stitch the job's scene clips into the final video and write its poster, spritesheet and captions.

        Args:
            job_id: the job whose clips (one per caption, in order) are on disk.
            captions: each scene's caption text.
            size: (width, height) of the final video.
            with_captions: whether to write the WebVTT file.
        """
        return await asyncio.to_thread(self._finish, job_id, captions, size, with_captions)

    def _encode_scene(self, job_id: str, index: int, scene: SceneResult, fps: float) -> EncodedScene:
        files = self._files(job_id)
        factor = self.processor.config.interpolation_factor
        frames = self.processor.interpolate_frames(scene.frames, factor)
        path = self.processor.frames_to_video(frames, files.clip(index), fps * factor)
        return EncodedScene(str(path), len(frames), fps * factor, scene.frames[-1].copy())

    def _finish(
        self, job_id: str, captions: list[str], size: tuple[int, int], with_captions: bool
    ) -> FinalVideo:
        files = self._files(job_id)
        clips = [files.clip(i) for i in range(len(captions))]
        video = self.processor.stitch(clips, files.variant("video"), size=size)
        cues = [
            Cue(start, end, text)
            for (start, end), text in zip(self.processor.timeline(clips), captions, strict=True)
        ]
        frames = self.processor.sample_frames(video, self.processor.config.spritesheet_tiles)
        thumbnail = self.processor.write_thumbnail(frames[len(frames) // 2], files.variant("thumbnail"))
        spritesheet = self.processor.write_spritesheet(frames, files.variant("spritesheet"))
        vtt = write_webvtt(cues, files.variant("captions")) if with_captions else None
        return FinalVideo(
            video=str(video),
            thumbnail=str(thumbnail),
            spritesheet=str(spritesheet),
            captions=str(vtt) if vtt else None,
            duration=self.processor.probe(video).duration,
        )

    def _files(self, job_id: str) -> JobFiles:
        """The job's files; its folder must exist (the runner makes it), so a write that comes after a DELETE
        or an expiry does not bring the folder back with a file in it."""
        files = JobFiles(self.storage_root, job_id)
        if not files.folder.is_dir():
            raise JobFolderGone(f"job {job_id} has no folder: it was deleted or expired meanwhile")
        return files


class JobFolderGone(Exception):
    """The job whose files were to be written no longer exists."""
