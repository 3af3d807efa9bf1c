"""What a create brings besides its fields, checked before a job is stored: the reference (an image, or a
video's last frame), the music bed (an upload or a track of the deployment's folder), and the hash that ties
an idempotency key to a body."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import tempfile
from pathlib import Path

from core.errors import InvalidInput, bad_value
from core.files import JobFiles, atomic_output
from core.status import KeyframeSource
from engines.media import audio
from serve_app.config import AppConfig
from serve_app.protocol import CreateVideoRequest
from serve_app.videos import uploads


async def music_bed(
    config: AppConfig, request: CreateVideoRequest, upload: bytes | None
) -> Path | bytes | None:
    """The music bed a request asks for, checked: the uploaded bytes (``upload``), or the named track's file.

    A track of the music folder is checked as an upload is: an operator's empty or broken file is a 400
    now, not a job that fails (or, without ffmpeg's time limit, never ends) at its stitch.
    """
    ffmpeg_path = config.video_processing.ffmpeg_path
    if upload is not None:
        await asyncio.to_thread(check_music, upload, f"<{len(upload)} bytes>", ffmpeg_path)
        return upload
    if request.music is None:
        return None
    folder = config.video_processing.audio.music_folder
    if folder is None:
        raise bad_value(
            "music",
            request.music,
            "this deployment has no music folder (video_processing.audio.music_folder)",
        )
    tracks = await asyncio.to_thread(music_tracks, folder)
    if request.music not in tracks:
        names = ", ".join(sorted(tracks)[:20]) or "none"
        raise bad_value("music", request.music, f"no such track; the music folder has: {names}")
    await asyncio.to_thread(check_music, tracks[request.music], request.music, ffmpeg_path)
    return tracks[request.music]


def request_hash(request: CreateVideoRequest, reference: bytes | None, music: bytes | None = None) -> str:
    """What an Idempotency-Key is tied to: the request's fields and the bytes of its uploads."""
    digest = hashlib.sha256(request.model_dump_json().encode())
    if reference is not None:
        digest.update(hashlib.sha256(reference).digest())
    if music is not None:
        digest.update(b"music" + hashlib.sha256(music).digest())
    return digest.hexdigest()


def music_tracks(folder: str) -> dict[str, Path]:
    """The music beds of the configured folder by file stem (WAV, MP3, Ogg, FLAC, M4A files)."""
    path = Path(folder)
    if not path.is_dir():
        return {}
    suffixes = {f".{kind}" for kind in audio.MUSIC_FORMATS}
    return {
        entry.stem: entry
        for entry in sorted(path.iterdir())
        if entry.suffix.lower() in suffixes and entry.is_file() and audio.MUSIC_NAME.fullmatch(entry.stem)
    }


def check_music(music: bytes | Path, shown: str, ffmpeg_path: str | None) -> None:
    """Refuse a music bed (an upload's bytes, or a track's file) that is not a WAV, MP3, Ogg, FLAC or M4A file
    ffmpeg can decode to at least ``audio.MIN_MUSIC_S`` of sound: a 400 naming `music`, showing ``shown``.

    The format comes from the first bytes, as the stitch takes it from the job's copy.
    """
    with tempfile.TemporaryDirectory() as scratch:
        if isinstance(music, bytes):
            path = Path(scratch) / "music.audio"
            path.write_bytes(music)
        else:
            path = music
        with open(path, "rb") as file:
            kind = audio.sniff_music(file.read(16))
        if kind is None:
            raise bad_value("music", shown, "is not a WAV, MP3, Ogg, FLAC or M4A file")
        try:
            audio.check_music(path, kind, ffmpeg_path)
        except InvalidInput as exc:
            raise bad_value("music", shown, exc.reason) from None


def write_music(files: JobFiles, music: bytes | Path) -> None:
    """The job's music bed: the caller's upload, or a copy of a track of the music folder."""
    with atomic_output(files.music, "music") as temp:
        if isinstance(music, bytes):
            temp.write_bytes(music)
        else:
            shutil.copyfile(music, temp)
    files.keep(files.music)


async def reference_as_png(
    request: CreateVideoRequest, upload: bytes | None, param: str = "input_reference"
) -> bytes | None:
    """The request's reference (an image upload or data URL, or the last frame of an uploaded video) as
    upright RGB PNG bytes marked with what it came from, or None.

    Decoding a large image or a video takes a while: it runs off the event loop. ``param`` names the upload's
    field in errors.
    """
    if request.input_reference is not None:
        url = request.input_reference.image_url
        image = await asyncio.to_thread(uploads.decode_data_url, url, "input_reference.image_url")
        source = KeyframeSource.REFERENCE
    elif upload is not None:
        image, source = await asyncio.to_thread(uploads.decode_upload, upload, param)
    else:
        return None
    return await asyncio.to_thread(uploads.encode_png, image, source)
