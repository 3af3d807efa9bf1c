"""Where a job's artifacts live: one folder per job under the storage root, with fixed file names.

Paths are built only from validated job ids and scene numbers, never from request text, so ffmpeg and
the content route only ever touch files the service wrote.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from core.errors import InvalidInput

JOB_ID = re.compile(r"video_[0-9a-f]{32}")  # always with fullmatch: `$` would let "...\n" through

CONTENT_TYPES = {
    "video": "video/mp4",
    "thumbnail": "image/jpeg",
    "spritesheet": "image/jpeg",
    "captions": "text/vtt; charset=utf-8",
    "audio": "audio/mp4",
}


class JobFiles:
    """The files of one job.

    Args:
        root: the storage root (config ``storage.root``).
        job_id: a job id as the service issues them (``video_`` and 32 hex digits).
    """

    def __init__(self, root: str | Path, job_id: str) -> None:
        if not is_job_id(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        self.folder = Path(root) / "jobs" / job_id

    def clip(self, index: int) -> Path:
        return self.folder / f"scene_{index:03d}.mp4"

    def segment(self, index: int, segment: int) -> Path:
        """One segment of a scene made of several model calls (``clip`` joins them)."""
        return self.folder / f"scene_{index:03d}_part_{segment:02d}.mp4"

    def inherited(self, index: int) -> Path:
        """A scene clip taken over from the video a remix or an extension starts from."""
        return self.folder / f"inherited_{index:03d}.mp4"

    def narration(self, index: int) -> Path:
        """A scene's narration (mono WAV at the voice's own rate)."""
        return self.folder / f"narration_{index:03d}.wav"

    def inherited_narration(self, index: int) -> Path:
        """A scene's narration taken over with its clip by an extension."""
        return self.folder / f"inherited_narration_{index:03d}.wav"

    @property
    def music(self) -> Path:
        """The music bed: the caller's upload, or a copy of a track from the configured folder."""
        return self.folder / "music.audio"

    @property
    def picture(self) -> Path:
        """The stitched picture before subtitles are burned in and the audio is added."""
        return self.folder / "picture.mp4"

    @property
    def subtitles(self) -> Path:
        """The ASS script burned-in subtitles are drawn from."""
        return self.folder / "subtitles.ass"

    @property
    def subtitled(self) -> Path:
        """The picture with subtitles burned in, before the audio is added."""
        return self.folder / "subtitled.mp4"

    def keyframe(self, index: int) -> Path:
        return self.folder / f"keyframe_{index:03d}.png"

    @property
    def reference(self) -> Path:
        return self.folder / "input_reference.png"

    def variant(self, name: str) -> Path:
        """The final artifact for a content variant: video, thumbnail, spritesheet, captions or audio."""
        files = {
            "video": "video.mp4",
            "thumbnail": "thumbnail.jpg",
            "spritesheet": "spritesheet.jpg",
            "captions": "captions.vtt",
            "audio": "audio.m4a",
        }
        return self.folder / files[name]

    def write_reference(self, png: bytes) -> None:
        """Store the caller's reference image (PNG bytes), creating the job's folder."""
        with atomic_output(self.reference, "input_reference") as temp:
            temp.write_bytes(png)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def is_job_id(text: str) -> bool:
    return JOB_ID.fullmatch(text) is not None


def job_folders(root: str | Path) -> Iterator[tuple[Path, float]]:
    """Every job folder under ``root`` with its last-modified time (folders not named as job ids are skipped)."""
    jobs = Path(root) / "jobs"
    if not jobs.is_dir():
        return
    with os.scandir(jobs) as entries:
        for entry in entries:
            if is_job_id(entry.name) and entry.is_dir(follow_symlinks=False):
                yield Path(entry.path), entry.stat(follow_symlinks=False).st_mtime


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], param: str = "output_path") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A failure never leaves a partial file at ``path`` (nor the temporary one).
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInput(param, str(path), f"cannot create its folder ({exc.strerror or exc})") from exc
    if not os.access(target.parent, os.W_OK):
        raise InvalidInput(param, str(path), "its folder is not writable")
    if target.is_dir():
        raise InvalidInput(param, str(path), "is a folder, not a file path")
    temp = target.with_name(f".{target.stem}.{uuid.uuid4().hex[:8]}.part{target.suffix}")
    try:
        yield temp
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
