"""VideoProcessor: the seed's video processor, done the way users need it.

Every video the service writes goes through here: scene clips, interpolation, the final stitch with
transitions, the title-card fallback clip, the poster, the spritesheet and the captions.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import av
import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from core.errors import InvalidInput, MediaError
from core.files import atomic_output
from engines.media import ffmpeg
from engines.media.audio import AudioConfig
from engines.media.cards import title_card_frames
from engines.media.frames import Frames, as_frame_array
from engines.media.subtitles import SubtitleStyle

Preset = Literal[
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"
]


class VideoProcessingConfig(BaseModel):
    """How videos are encoded and assembled (the seed's VIDEO_PROCESSING_CONFIG)."""

    model_config = ConfigDict(extra="forbid")

    output_format: Literal["mp4"] = Field("mp4", description="Container of every video written. MP4 only.")
    codec: Literal["libx264"] = Field(
        "libx264", description="Video codec: H.264 through libx264, which every browser plays (yuv420p)."
    )
    crf: int = Field(
        20,
        ge=0,
        le=51,
        description="Constant rate factor: lower is better quality and larger files; 18-23 is visually good. "
        "Ignored when `bitrate` is set.",
    )
    bitrate: str | None = Field(
        None,
        pattern=r"^[1-9][0-9]*(\.[0-9]+)?[kKmM]?$",
        description="Target bitrate such as '5000k' (the seed's setting); replaces `crf` when set.",
    )
    preset: Preset = Field(
        "medium",
        description="libx264 speed/size trade-off: 'ultrafast' encodes several times faster, files grow 2-3x.",
    )
    fps: float = Field(
        7.0,
        gt=0,
        le=120,
        description="Default frame rate of clips before interpolation. The service passes each job's own rate "
        "(the request's `fps`, else `video.fps`), so this matters only to direct use of the engine.",
    )
    interpolation_factor: Literal[1, 2, 4] = Field(
        1,
        description="Motion-compensated frame interpolation (ffmpeg minterpolate): 2 or 4 creates real in-between "
        "frames and multiplies the frame rate; 1 turns it off. Costs CPU time roughly linear in output frames.",
    )
    transition: Literal["cut", "crossfade"] = Field(
        "crossfade", description="How scenes join in the final video."
    )
    transition_seconds: float = Field(
        0.5, ge=0, le=5, description="Length of each cross-fade; the final video is shorter by this per join."
    )
    spritesheet_columns: int = Field(5, ge=1, le=20, description="Tiles per row of the spritesheet.")
    spritesheet_tiles: int = Field(20, ge=1, le=400, description="Frames sampled into the spritesheet.")
    spritesheet_tile_width: int = Field(
        192, ge=16, le=1024, description="Width of one spritesheet tile (pixels)."
    )
    jpeg_quality: int = Field(88, ge=1, le=100, description="JPEG quality of the thumbnail and spritesheet.")
    font_path: str | None = Field(
        None, description="Font file for title cards; default the first installed font that covers CJK."
    )
    ffmpeg_path: str | None = Field(
        None, description="ffmpeg binary; default the one shipped by imageio-ffmpeg, else the system's."
    )
    ffmpeg_timeout_base_s: float = Field(
        60,
        gt=0,
        le=86400,
        description="Time limit of every ffmpeg run, before what its media adds (`ffmpeg_timeout_per_media_s`). "
        "Past its limit an ffmpeg is killed (with anything it started) and the job fails with `media_error`.",
    )
    ffmpeg_timeout_per_media_s: float = Field(
        20,
        ge=0,
        le=3600,
        description="Seconds an ffmpeg run may take per second of media it reads or writes, on top of "
        "`ffmpeg_timeout_base_s`. The default leaves room for `preset: veryslow` and interpolation on a slow "
        "CPU; a stitch of a 60 s video may run 21 minutes.",
    )
    audio: AudioConfig = Field(
        default_factory=AudioConfig, description="The audio track: narration and music bed."
    )
    subtitles: SubtitleStyle = Field(
        default_factory=SubtitleStyle, description="Burned-in subtitles (`burn_subtitles` on a request)."
    )

    def ffmpeg_timeout_s(self, media_s: float) -> float:
        """How long one ffmpeg run that reads or writes ``media_s`` seconds of media may take."""
        return self.ffmpeg_timeout_base_s + self.ffmpeg_timeout_per_media_s * max(0.0, media_s)


@dataclass(frozen=True)
class VideoInfo:
    """What a written video holds, read back from its container."""

    width: int
    height: int
    fps: float
    frames: int

    @property
    def duration(self) -> float:
        return self.frames / self.fps


class VideoProcessor:
    """Encodes, interpolates and stitches video with ffmpeg. Holds no state besides its config.

    Args:
        config: encoding and assembly settings; default ``VideoProcessingConfig()``.
    """

    def __init__(self, config: VideoProcessingConfig | None = None) -> None:
        self.config = config or VideoProcessingConfig()

    # -- encoding -------------------------------------------------------------------------------

    def frames_to_video(
        self, frames: Frames, output_path: str | os.PathLike[str], fps: float | None = None
    ) -> Path:
        """Encode ``frames`` to an H.264 MP4 at ``output_path``.

        Args:
            frames: PIL images or (H, W, 3) uint8 arrays, or one (T, H, W, 3) uint8 array, all one size.
            output_path: where the MP4 goes; written under a temporary name and renamed when complete.
            fps: frame rate; default ``config.fps``.

        Odd widths or heights lose their last pixel column or row (yuv420p needs even sizes).
        """
        array = as_frame_array(frames)
        fps = self._check_fps(fps)
        _, height, width, _ = array.shape
        # fmt: off
        args = [
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", _rate(fps), "-i", "pipe:0",
            "-vf", "crop=trunc(iw/2)*2:trunc(ih/2)*2",
            *self.encoder_args(),
        ]
        # fmt: on
        with atomic_output(output_path) as temp:
            ffmpeg.stream(
                [*args, str(temp)],
                _frame_bytes(array),
                timeout_s=self.config.ffmpeg_timeout_s(len(array) / fps),
                ffmpeg=self.config.ffmpeg_path,
            )
        return Path(output_path)

    def interpolate_frames(self, frames: Frames, factor: int | None = None) -> np.ndarray:
        """Insert ``factor - 1`` motion-compensated frames between each pair of frames.

        N frames become (N - 1) * factor + 1; play them at ``fps * factor`` for the same motion. The new
        frames are estimated from block motion (ffmpeg minterpolate), not copies and not cross-fades.

        Args:
            frames: as for ``frames_to_video``.
            factor: 1 (no-op), 2 or 4; default ``config.interpolation_factor``.
        """
        factor = self.config.interpolation_factor if factor is None else factor
        if not isinstance(factor, int) or factor < 1:
            raise InvalidInput("factor", factor, "must be an integer of at least 1")
        array = as_frame_array(frames)
        if factor == 1 or len(array) < 2:
            return array
        _, height, width, _ = array.shape
        # minterpolate holds back its last output frames at end of stream; two copies of the last frame
        # flush them, and the extra frames they produce are cut below.
        padded = np.concatenate([array, array[-1:], array[-1:]])
        # fmt: off
        raw = ffmpeg.run(
            [
                "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", "1", "-i", "pipe:0",
                "-vf", f"minterpolate=fps={factor}:mi_mode=mci:mc_mode=aobmc:me_mode=bidir:vsbmc=1",
                "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1",
            ],
            stdin=padded.tobytes(),
            # At `-r 1` each input frame is a second of media to ffmpeg, and minterpolate's work grows with them.
            timeout_s=self.config.ffmpeg_timeout_s(len(padded)),
            ffmpeg=self.config.ffmpeg_path,
        )
        # fmt: on
        out = np.frombuffer(raw, dtype=np.uint8).reshape(-1, height, width, 3)
        wanted = (len(array) - 1) * factor + 1
        if len(out) < wanted:
            raise MediaError(f"interpolation returned {len(out)} frames, expected {wanted}")
        return out[:wanted].copy()

    def title_card_clip(
        self,
        text: str,
        output_path: str | os.PathLike[str],
        seconds: float,
        width: int,
        height: int,
        fps: float | None = None,
    ) -> Path:
        """The fallback clip: ``text`` on colour, slowly zooming, ``seconds`` long, encoded to ``output_path``."""
        fps = self._check_fps(fps)
        if not seconds > 0:
            raise InvalidInput("seconds", seconds, "must be greater than 0")
        frames = title_card_frames(text, max(1, round(seconds * fps)), width, height, self.config.font_path)
        return self.frames_to_video(frames, output_path, fps)

    # -- assembly -------------------------------------------------------------------------------

    def stitch(
        self,
        clips: list[Path],
        output_path: str | os.PathLike[str],
        transition: Literal["cut", "crossfade"] | None = None,
        transition_seconds: float | None = None,
        size: tuple[int, int] | None = None,
        fps: float | None = None,
    ) -> Path:
        """Join ``clips`` into one MP4, with cuts or cross-fades between them.

        Clips of other sizes are scaled to fit and letterboxed; other frame rates are resampled.

        Args:
            clips: MP4 files this engine wrote, in order.
            output_path: the final video.
            transition: 'cut' or 'crossfade'; default ``config.transition``.
            transition_seconds: cross-fade length, shortened to half the shortest clip; default from config.
            size: (width, height) of the result; default the first clip's.
            fps: frame rate of the result; default the first clip's.

        The result lasts the sum of the clips less one transition per join.
        """
        if not clips:
            raise InvalidInput("clips", [], "needs at least one clip")
        infos = []
        for i, clip in enumerate(clips):
            if not Path(clip).is_file():
                raise InvalidInput(f"clips[{i}]", str(clip), "no such file")
            infos.append(self.probe(clip))
        width, height = size or (infos[0].width, infos[0].height)
        width, height = width // 2 * 2, height // 2 * 2
        fps = fps or infos[0].fps
        fade = self._fade(infos, transition, transition_seconds)

        inputs: list[str] = []
        graph = []
        for i, clip in enumerate(clips):
            inputs += [*ffmpeg.INPUT_PROTOCOLS, "-f", "mp4", "-i", str(clip)]
            graph.append(
                f"[{i}:v]scale={width}:{height}:force_original_aspect_ratio=decrease,"
                f"pad={width}:{height}:(ow-iw)/2:(oh-ih)/2,setsar=1,fps={_rate(fps)},format=yuv420p[v{i}]"
            )
        graph += _join_filters(infos, fade)
        with atomic_output(output_path) as temp:
            ffmpeg.run(
                [
                    *inputs,
                    "-filter_complex",
                    ";".join(graph),
                    "-map",
                    "[out]",
                    *self.encoder_args(),
                    str(temp),
                ],
                timeout_s=self.config.ffmpeg_timeout_s(sum(info.duration for info in infos)),
                ffmpeg=self.config.ffmpeg_path,
            )
        return Path(output_path)

    def timeline(
        self,
        clips: list[Path],
        transition: Literal["cut", "crossfade"] | None = None,
        transition_seconds: float | None = None,
    ) -> list[tuple[float, float]]:
        """When each clip shows in ``stitch``'s result: (start, end) seconds, a join split mid-fade.

        Use it to time captions to the stitched video.
        """
        infos = [self.probe(clip) for clip in clips]
        fade = self._fade(infos, transition, transition_seconds)
        spans, start = [], 0.0
        for i, info in enumerate(infos):
            visible = info.duration - (fade / 2 if i > 0 else 0) - (fade / 2 if i < len(infos) - 1 else 0)
            spans.append((start, start + visible))
            start += visible
        return spans

    def _fade(
        self, infos: list[VideoInfo], transition: str | None, transition_seconds: float | None
    ) -> float:
        """The cross-fade length stitch uses: configured, capped at half the shortest clip; 0 for cuts."""
        if (transition or self.config.transition) != "crossfade":
            return 0.0
        fade = self.config.transition_seconds if transition_seconds is None else transition_seconds
        return min(fade, min(info.duration for info in infos) / 2)

    # -- stills and captions --------------------------------------------------------------------

    def write_thumbnail(self, frame: np.ndarray | Image.Image, output_path: str | os.PathLike[str]) -> Path:
        """Save one frame as the poster JPEG."""
        image = Image.fromarray(as_frame_array([frame], "frame")[0])
        with atomic_output(output_path) as temp:
            image.save(temp, format="JPEG", quality=self.config.jpeg_quality)
        return Path(output_path)

    def write_spritesheet(self, frames: Frames, output_path: str | os.PathLike[str]) -> Path:
        """Save a grid of evenly sampled frames (``config.spritesheet_tiles`` at most) as one JPEG."""
        array = as_frame_array(frames)
        count = min(len(array), self.config.spritesheet_tiles)
        picks = array[np.linspace(0, len(array) - 1, count).round().astype(int)]
        tile_w = self.config.spritesheet_tile_width
        tile_h = max(2, round(tile_w * array.shape[1] / array.shape[2]))
        columns = min(self.config.spritesheet_columns, count)
        sheet = Image.new("RGB", (columns * tile_w, math.ceil(count / columns) * tile_h))
        for i, frame in enumerate(picks):
            tile = Image.fromarray(frame).resize((tile_w, tile_h), Image.Resampling.BILINEAR)
            sheet.paste(tile, ((i % columns) * tile_w, (i // columns) * tile_h))
        with atomic_output(output_path) as temp:
            sheet.save(temp, format="JPEG", quality=self.config.jpeg_quality)
        return Path(output_path)

    # -- reading back ---------------------------------------------------------------------------

    @staticmethod
    def probe(path: str | os.PathLike[str]) -> VideoInfo:
        """Size, frame rate and frame count of a video this engine wrote."""
        try:
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                frames = stream.frames or sum(1 for _ in container.decode(stream))
                return VideoInfo(stream.width, stream.height, float(stream.average_rate or 0), frames)
        except (av.error.FFmpegError, IndexError) as exc:
            raise MediaError(f"cannot read video {path}", str(exc)) from exc

    @staticmethod
    def sample_frames(path: str | os.PathLike[str], count: int) -> np.ndarray:
        """Decode ``count`` evenly spaced frames of a video (for posters and spritesheets of long videos)."""
        total = VideoProcessor.probe(path).frames
        wanted = set(np.linspace(0, total - 1, min(count, total)).round().astype(int).tolist())
        picked = []
        with av.open(str(path)) as container:
            for index, frame in enumerate(container.decode(video=0)):
                if index in wanted:
                    picked.append(frame.to_ndarray(format="rgb24"))
        return np.stack(picked)

    # -- helpers --------------------------------------------------------------------------------

    def _check_fps(self, fps: float | None) -> float:
        fps = self.config.fps if fps is None else fps
        if isinstance(fps, bool) or not isinstance(fps, int | float) or not 0 < fps <= 240:
            raise InvalidInput("fps", fps, "must be a number in (0, 240]")
        return float(fps)

    def encoder_args(self) -> list[str]:
        quality = ["-b:v", self.config.bitrate] if self.config.bitrate else ["-crf", str(self.config.crf)]
        # fmt: off
        return [
            "-c:v", self.config.codec, "-preset", self.config.preset, *quality,
            "-pix_fmt", "yuv420p", "-movflags", "+faststart", "-f", self.config.output_format,
        ]
        # fmt: on


def _join_filters(infos: list[VideoInfo], fade: float) -> list[str]:
    """Filter-graph lines that join the normalised streams [v0], [v1], ... into [out]."""
    count = len(infos)
    if count == 1:
        return ["[v0]null[out]"]
    if fade <= 0:
        return ["".join(f"[v{i}]" for i in range(count)) + f"concat=n={count}:v=1:a=0[out]"]
    lines, previous, elapsed = [], "[v0]", 0.0
    for i in range(1, count):
        elapsed += infos[i - 1].duration - fade
        label = "[out]" if i == count - 1 else f"[x{i}]"
        lines.append(f"{previous}[v{i}]xfade=transition=fade:duration={fade:.4f}:offset={elapsed:.4f}{label}")
        previous = label
    return lines


def _frame_bytes(array: np.ndarray) -> Iterator[bytes]:
    for frame in array:
        yield frame.tobytes()


def _rate(fps: float) -> str:
    return str(int(fps)) if float(fps).is_integer() else f"{fps:.6f}"
