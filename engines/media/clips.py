"""ClipEncoder: a job's media work on its files (scene clips, the final video, poster, spritesheet, captions).

Plain Python: the Encoder deployment wraps it, and in-process runs call it directly.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from core.errors import JobGone
from core.files import JobFiles
from core.status import Variant
from core.storage import Storage, open_storage
from engines.media import audio, subtitles
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
        interpolation: the interpolation factor the job asked for (1, 2 or 4); None: the config's.
    """

    job_id: str
    index: int
    fps: float
    keep_last_frame: bool = False
    segment: int = 0
    segments: int = 1
    interpolation: int | None = None


@dataclass
class EncodedScene:
    """A scene clip on disk; of its frames only the last comes back, and only when asked for."""

    path: str
    frames: int
    fps: float
    last_frame_png: bytes | None = None


@dataclass
class SpokenScene:
    """A scene's narration as the stitch places it (its WAV is the job's ``narration(index)`` file).

    Args:
        sentences: (text, start, end) of each sentence, in seconds into the narration.
        lead: silence in the scene before the voice starts.
    """

    sentences: list[tuple[str, float, float]]
    lead: float


@dataclass
class StitchRequest:
    """The final video of a job whose clips are on disk (one per caption, in order).

    Args:
        job_id: the job.
        captions: each scene's caption text.
        size: (width, height) of the final video.
        with_captions: whether to write the WebVTT file.
        spoken: each scene's narration, or None for a silent scene; empty: a silent video.
        music: the format of the job's music file (``JobFiles.music``) when it has a music bed.
        burn_subtitles: draw the captions into the picture as well.
    """

    job_id: str
    captions: list[str]
    size: tuple[int, int]
    with_captions: bool
    spoken: list[SpokenScene | None] = field(default_factory=list)
    music: str | None = None
    burn_subtitles: bool = False

    @property
    def has_audio(self) -> bool:
        return self.music is not None or any(scene is not None for scene in self.spoken)


@dataclass
class FinalVideo:
    video: str
    thumbnail: str
    spritesheet: str
    captions: str | None
    duration: float
    audio: str | None = None


class ClipEncoder:
    """Writes scene clips and assembles the final video and its extras under the storage root.

    Args:
        config: the `video_processing` section of the app config.
        storage: where the job files are kept (a path: a local folder).
    """

    def __init__(self, config: VideoProcessingConfig, storage: Storage | str | Path) -> None:
        self.processor = VideoProcessor(config)
        self.storage = open_storage(storage)

    def encode_scene(self, request: EncodeRequest, frames: np.ndarray) -> EncodedScene:
        """Interpolate (if asked for or configured) and encode one scene's frames (or one segment's) to its file.

        Returns the scene's clip, or for a segment before the last, the segment's file.
        """
        files = self._files(request.job_id)
        factor = request.interpolation or self.processor.config.interpolation_factor
        fps = request.fps * factor
        made = self.processor.interpolate_frames(frames, factor)
        if request.segment == request.segments - 1 and factor > 1:
            # N frames interpolate to (N - 1) * factor + 1; holding the last one factor - 1 more keeps the
            # scene N / fps long, as without interpolation (so a video lasts what was asked either way).
            made = np.concatenate([made, np.repeat(made[-1:], factor - 1, axis=0)])
        last = png_bytes(frames[-1]) if request.keep_last_frame else None
        if request.segments == 1:
            path = self.processor.frames_to_video(made, files.clip(request.index), fps)
            files.keep(path)
            return EncodedScene(str(path), len(made), fps, last)
        if request.segment > 0:
            made = made[1:]  # the previous segment's last frame, which this one started from
        path = self.processor.frames_to_video(made, files.segment(request.index, request.segment), fps)
        files.keep(path)
        if request.segment < request.segments - 1:
            return EncodedScene(str(path), len(made), fps, last)
        # Earlier segments may have been encoded elsewhere (another replica, or before a restart).
        parts = [files.local(files.segment(request.index, k)) for k in range(request.segments)]
        clip = self.processor.stitch(parts, files.clip(request.index), transition="cut", fps=fps)
        files.keep(clip)
        frames_in_clip = sum(self.processor.probe(part).frames for part in parts)
        return EncodedScene(str(clip), frames_in_clip, fps, last)

    def stitch(self, request: StitchRequest) -> FinalVideo:
        """Stitch the clips into the final video and write its poster, spritesheet and captions; burn the
        subtitles in and add the audio track (voices, music bed) when the request has them."""
        files = self._files(request.job_id)
        try:
            return self._stitch(files, request)
        finally:
            files.forget()  # every file it made is kept; the next job needs the scratch space

    def _stitch(self, files: JobFiles, request: StitchRequest) -> FinalVideo:
        clips = [files.local(files.clip(i)) for i in range(len(request.captions))]
        video = files.variant(Variant.VIDEO)
        finishing = request.burn_subtitles or request.has_audio
        picture = self.processor.stitch(clips, files.picture if finishing else video, size=request.size)
        spans = self.processor.timeline(clips)
        cues = self._cues(request, spans)
        if request.burn_subtitles:
            picture = self._burn(files, picture, cues)
        duration = self.processor.probe(picture).duration
        track = None
        if request.has_audio:
            config = self.processor.config
            track = self._mix(files, request, spans, duration)
            audio.mux(picture, track, video, config.ffmpeg_path, timeout_s=config.ffmpeg_timeout_s(duration))
        elif picture != video:
            os.replace(picture, video)
        for leftover in (files.picture, files.subtitled):
            leftover.unlink(missing_ok=True)
        frames = self.processor.sample_frames(video, self.processor.config.spritesheet_tiles)
        # The poster: the middle of the middle scene (the video's own middle may fall inside a cross-fade).
        start, end = spans[len(spans) // 2]
        poster = frames[min(len(frames) - 1, round((start + end) / 2 / duration * (len(frames) - 1)))]
        thumbnail = self.processor.write_thumbnail(poster, files.variant(Variant.THUMBNAIL))
        spritesheet = self.processor.write_spritesheet(frames, files.variant(Variant.SPRITESHEET))
        vtt = write_webvtt(cues, files.variant(Variant.CAPTIONS)) if request.with_captions else None
        # The video last: once it is kept, the content route can serve every variant of it.
        files.keep(*(path for path in (track, thumbnail, spritesheet, vtt) if path is not None), video)
        return FinalVideo(
            video=str(video),
            thumbnail=str(thumbnail),
            spritesheet=str(spritesheet),
            captions=str(vtt) if vtt else None,
            duration=duration,
            audio=str(track) if track else None,
        )

    @staticmethod
    def _cues(request: StitchRequest, spans: list[tuple[float, float]]) -> list[Cue]:
        """A cue per spoken sentence, timed to the voice; a silent scene's caption over the whole scene."""
        cues = []
        for i, ((start, end), text) in enumerate(zip(spans, request.captions, strict=True)):
            spoken = request.spoken[i] if i < len(request.spoken) else None
            if spoken is None:
                cues.append(Cue(start, end, text))
                continue
            voice = start + spoken.lead
            cues += [Cue(voice + begin, voice + finish, said) for said, begin, finish in spoken.sentences]
        return cues

    def _burn(self, files: JobFiles, picture: Path, cues: list[Cue]) -> Path:
        config = self.processor.config
        font = subtitles.subtitle_font(config.font_path)
        info = self.processor.probe(picture)
        script = subtitles.write_ass(cues, info.width, info.height, config.subtitles, font, files.subtitles)
        burned = subtitles.burn(
            picture,
            script,
            font,
            files.subtitled,
            self.processor.encoder_args(),
            config.ffmpeg_path,
            timeout_s=config.ffmpeg_timeout_s(info.duration),
        )
        picture.unlink(missing_ok=True)
        return burned

    def _mix(
        self, files: JobFiles, request: StitchRequest, spans: list[tuple[float, float]], duration: float
    ) -> Path:
        voices = [
            audio.Voice(files.local(files.narration(i)), spans[i][0] + spoken.lead)
            for i, spoken in enumerate(request.spoken)
            if spoken is not None
        ]
        music = (files.local(files.music), request.music) if request.music is not None else None
        config = self.processor.config
        return audio.mix(
            voices,
            duration,
            files.variant(Variant.AUDIO),
            config.audio,
            music,
            config.ffmpeg_path,
            timeout_s=config.ffmpeg_timeout_s(duration),
        )

    def _files(self, job_id: str) -> JobFiles:
        """The job's files; its folder must exist (the runner makes it), so a write that comes after a DELETE
        or an expiry does not bring the folder back with a file in it."""
        files = JobFiles(self.storage, job_id)
        if not files.exists():
            raise JobGone(f"job {job_id} has no folder: it was deleted or expired meanwhile")
        return files


def png_bytes(frame: np.ndarray) -> bytes:
    """One RGB frame as PNG bytes (lossless, and a fraction of the raw array for the next scene's start)."""
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
