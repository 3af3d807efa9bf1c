"""The audio track: each scene's voice at its place on the timeline, an optional music bed ducked under it.

One ffmpeg filter graph does the whole mix: voices delayed to where their scenes show, a music bed looped
or trimmed to the video and compressed by the voice (sidechain), faded out, loudness-normalised (EBU R128)
and written as 48 kHz stereo AAC. The picture is copied, not encoded again, when the mix is muxed in.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from core.errors import InvalidInput, MediaError
from core.files import atomic_output
from engines.media import ffmpeg

# What a music upload may be, by its first bytes: ffmpeg is told the format and probes nothing else.
MUSIC_FORMATS = ("wav", "mp3", "ogg", "flac", "m4a")
# A music file is checked by decoding its first CHECK_SECONDS (tens of milliseconds of work: a file that takes
# longer than CHECK_TIMEOUT_S is refused), at CHECK_RATE samples a second, and must hold MIN_MUSIC_S of
# samples, some of them audible.
CHECK_SECONDS, CHECK_RATE, CHECK_TIMEOUT_S = 30, 8000, 10
MIN_MUSIC_S = 0.5
# The quietest 400 ms block that counts as sound (-60 dBFS): well above EBU R128's -70 LUFS gate.
AUDIBLE_RMS = 10 ** (-60 / 20)
MUSIC_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # a track's name (its file stem), always with fullmatch


class AudioConfig(BaseModel):
    """How the narration and the music bed are mixed."""

    model_config = ConfigDict(extra="forbid")

    sample_rate: int = Field(48000, ge=8000, le=96000, description="Sample rate of the audio track.")
    bitrate: str = Field("160k", pattern=r"^[1-9][0-9]{1,3}k$", description="AAC bitrate.")
    loudness_lufs: float = Field(
        -16, ge=-40, le=-5, description="Integrated loudness of the mix (EBU R128; -16 suits phones and web)."
    )
    true_peak_db: float = Field(-1.5, ge=-9, le=0, description="Highest true peak of the mix, in dBTP.")
    music_folder: str | None = Field(
        None,
        description="Folder of music beds a request names by file stem (`music: calm` takes calm.mp3). "
        "Files: WAV, MP3, Ogg, FLAC or M4A.",
    )
    music_volume_db: float = Field(
        -14, ge=-40, le=0, description="Gain of the music bed before ducking, relative to its file."
    )
    duck_ratio: float = Field(
        8, ge=1, le=20, description="How hard the voice pushes the music down (sidechain compression ratio)."
    )
    duck_threshold: float = Field(
        0.02, gt=0, le=1, description="Voice level (linear) above which the music is ducked."
    )
    fade_out_s: float = Field(2.0, ge=0, le=10, description="The music's fade-out at the end of the video.")


def is_audible(samples: np.ndarray, rate: int) -> bool:
    """Whether mono float ``samples`` (in [-1, 1]) hold sound a loudness meter can measure: some 400 ms
    block louder than ``AUDIBLE_RMS``. A mix of nothing louder has no integrated loudness (EBU R128 gates
    blocks under -70 LUFS), and normalising it gives NaN, which the AAC encoder refuses."""
    block = max(1, int(rate * 0.4))
    if len(samples) == 0:
        return False
    padded = np.pad(samples.astype(np.float64), (0, -len(samples) % block))
    return bool(np.sqrt(np.mean(padded.reshape(-1, block) ** 2, axis=1)).max() > AUDIBLE_RMS)


@dataclass(frozen=True)
class Voice:
    """A scene's narration WAV and where on the video's timeline it starts, in seconds."""

    path: Path
    start: float


def mix(
    voices: list[Voice],
    duration: float,
    output_path: str | os.PathLike[str],
    config: AudioConfig,
    music: tuple[Path, str] | None = None,
    ffmpeg_path: str | None = None,
    *,
    timeout_s: float,
) -> Path:
    """Write the audio track of a ``duration``-second video as AAC in an M4A at ``output_path``.

    Args:
        voices: the narrations, each placed at its start.
        duration: the video's length; the track lasts exactly this.
        config: the mix settings.
        music: the music bed's file and its format (one of ``MUSIC_FORMATS``), or None.
        ffmpeg_path: the ffmpeg binary; default ``ffmpeg.ffmpeg_exe()``'s.
        timeout_s: how long the mix may run (``VideoProcessingConfig.ffmpeg_timeout_s(duration)``).
    """
    if not duration > 0:
        raise InvalidInput("duration", duration, "must be greater than 0")
    if not voices and music is None:
        raise InvalidInput("voices", voices, "a mix needs a voice or a music bed")
    inputs: list[str] = []
    graph: list[str] = []
    rate = config.sample_rate
    for i, voice in enumerate(voices):
        inputs += [*ffmpeg.INPUT_PROTOCOLS, "-f", "wav", "-i", str(voice.path)]
        delay = max(0, round(voice.start * 1000))
        graph.append(f"[{i}:a]aresample={rate},aformat=channel_layouts=mono,adelay={delay}:all=1,apad[v{i}]")
    end = f"atrim=end={duration:.4f}"
    if voices:
        joined = "".join(f"[v{i}]" for i in range(len(voices)))
        graph.append(f"{joined}amix=inputs={len(voices)}:normalize=0:duration=longest,{end}[voice]")
    if music is not None:
        path, kind = music
        if kind not in MUSIC_FORMATS:
            raise InvalidInput("music", kind, f"must be one of {', '.join(MUSIC_FORMATS)}")
        demuxer = "mov" if kind == "m4a" else kind
        # Looped, and read for no longer than the video. A file of no samples would loop for ever (its clock
        # never moves): check_music refuses one at create, and the time limit stops one that got here anyway.
        loop = ["-stream_loop", "-1", "-t", f"{duration + 1:.3f}"]
        inputs += [*loop, *ffmpeg.INPUT_PROTOCOLS, "-f", demuxer, "-i", str(path)]
        fade_start = max(0.0, duration - config.fade_out_s)
        graph.append(
            f"[{len(voices)}:a]aresample={rate},aformat=channel_layouts=mono,{end},"
            f"volume={config.music_volume_db}dB,"
            f"afade=t=out:st={fade_start:.4f}:d={min(config.fade_out_s, duration):.4f}[bed]"
        )
    if voices and music is not None:
        graph += [
            "[voice]asplit=2[speech][key]",
            f"[bed][key]sidechaincompress=threshold={config.duck_threshold}:ratio={config.duck_ratio}:"
            "attack=20:release=300[ducked]",
            "[speech][ducked]amix=inputs=2:normalize=0:duration=first[mixed]",
        ]
        last = "[mixed]"
    else:
        last = "[voice]" if voices else "[bed]"
    graph.append(
        f"{last}loudnorm=I={config.loudness_lufs}:TP={config.true_peak_db}:LRA=11,"
        f"aresample={rate},aformat=channel_layouts=stereo,apad,{end}[out]"
    )
    with atomic_output(output_path) as temp:
        ffmpeg.run(
            [
                *inputs,
                "-filter_complex",
                ";".join(graph),
                "-map",
                "[out]",
                "-c:a",
                "aac",
                "-b:a",
                config.bitrate,
                "-ar",
                str(rate),
                "-f",
                "ipod",  # M4A
                "-movflags",
                "+faststart",
                str(temp),
            ],
            timeout_s=timeout_s,
            ffmpeg=ffmpeg_path,
        )
    return Path(output_path)


def mux(
    picture: str | os.PathLike[str],
    audio: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    ffmpeg_path: str | None = None,
    *,
    timeout_s: float,
) -> Path:
    """The picture with the audio track, both copied as they are, into an MP4 at ``output_path``.

    ``timeout_s``: how long the mux may run (``VideoProcessingConfig.ffmpeg_timeout_s`` of the video's length).
    """
    with atomic_output(output_path) as temp:
        # fmt: off
        ffmpeg.run(
            [
                *ffmpeg.INPUT_PROTOCOLS, "-f", "mp4", "-i", str(picture),
                *ffmpeg.INPUT_PROTOCOLS, "-f", "mp4", "-i", str(audio),
                "-map", "0:v:0", "-map", "1:a:0", "-c", "copy", "-movflags", "+faststart", "-f", "mp4",
                str(temp),
            ],
            timeout_s=timeout_s,
            ffmpeg=ffmpeg_path,
        )
        # fmt: on
    return Path(output_path)


def sniff_music(head: bytes) -> str | None:
    """The format of an audio file from its first bytes (one of ``MUSIC_FORMATS``), or None."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:4] == b"fLaC":
        return "flac"
    if head[4:8] == b"ftyp":
        return "m4a"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "mp3"
    return None


def check_music(path: str | os.PathLike[str], kind: str, ffmpeg_path: str | None = None) -> float:
    """Decode the first seconds of a music file and return the seconds of sound they hold (at most
    ``CHECK_SECONDS``), so a file that cannot be read, or that holds next to nothing, is refused when it arrives.

    A file of no samples (a bare WAV or FLAC header, a header that promises hours and ends) would be accepted
    by a plain decode and then loop for ever in ``mix``; a fraction of a second loops into a buzz; a bed of
    silence has no loudness to normalise (a NaN the AAC encoder refuses) when no voice speaks over it.

    Raises:
        InvalidInput: naming `music`, with ffmpeg's reason or the seconds of sound found.
    """
    demuxer = "mov" if kind == "m4a" else kind
    try:
        # Decoded to mono 16-bit PCM at a low rate on stdout: only the count of samples matters.
        # fmt: off
        pcm = ffmpeg.run(
            [
                *ffmpeg.INPUT_PROTOCOLS, "-f", demuxer, "-i", str(path), "-t", str(CHECK_SECONDS), "-vn",
                "-ac", "1", "-ar", str(CHECK_RATE), "-f", "s16le", "-",
            ],
            timeout_s=CHECK_TIMEOUT_S,
            ffmpeg=ffmpeg_path,
        )
        # fmt: on
    except MediaError as exc:
        raise InvalidInput("music", kind, f"is not a readable {kind} audio file") from exc
    seconds = len(pcm) / (2 * CHECK_RATE)
    if seconds < MIN_MUSIC_S:
        raise InvalidInput(
            "music",
            kind,
            f"holds {seconds:.2f} s of {kind} audio that can be decoded; a music bed needs at least {MIN_MUSIC_S} s",
        )
    if not is_audible(np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768, CHECK_RATE):
        raise InvalidInput(
            "music", kind, f"is silent: its first {min(seconds, CHECK_SECONDS):g} s hold no sound"
        )
    return seconds
