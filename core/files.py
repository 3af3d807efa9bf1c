"""Where a job's artifacts live: one folder per job (key prefix ``jobs/<id>``), with fixed file names.

Paths are built only from validated job ids and scene numbers, never from request text, so ffmpeg and
the content route only ever touch files the service wrote. A stage writes a file in its scratch folder
and `keep`s it; a stage that reads a file another process made asks for its `local` copy first. On local
storage both are free: the scratch folder is the store.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from core.errors import InvalidInput
from core.status import Variant
from core.storage import Storage, open_storage

JOB_ID = re.compile(r"video_[0-9a-f]{32}")  # always with fullmatch: `$` would let "...\n" through
# The PNG text key of a stored reference that says what it came from (a `KeyframeSource` value): the last frame
# of an uploaded video is marked so, and the mark goes wherever the file is copied (a remix, an extension).
REFERENCE_SOURCE_KEY = "storyreel-keyframe-source"


@dataclass(frozen=True)
class VariantFile:
    """How a content variant is kept and served.

    Attributes:
        filename: its name in the job's folder; a download is named for the video with its suffix.
        media_type: the ``Content-Type`` it is served with.
    """

    filename: str
    media_type: str

    @property
    def suffix(self) -> str:
        """``.mp4``: what a download of it ends with."""
        return Path(self.filename).suffix


# The one table of the finished video's files: the job's folder, the content route, the CLI and the demo read it.
VARIANT_FILES: dict[Variant, VariantFile] = {
    Variant.VIDEO: VariantFile("video.mp4", "video/mp4"),
    Variant.THUMBNAIL: VariantFile("thumbnail.jpg", "image/jpeg"),
    Variant.SPRITESHEET: VariantFile("spritesheet.jpg", "image/jpeg"),
    Variant.CAPTIONS: VariantFile("captions.vtt", "text/vtt; charset=utf-8"),
    Variant.AUDIO: VariantFile("audio.m4a", "audio/mp4"),
}


class JobFiles:
    """The files of one job.

    Args:
        storage: where artifacts are kept; a path stands for a local folder (config ``storage.root``).
        job_id: a job id as the service issues them (``video_`` and 32 hex digits).
    """

    def __init__(self, storage: Storage | str | Path, job_id: str) -> None:
        if not is_job_id(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        self.storage = open_storage(storage)
        self.prefix = f"jobs/{job_id}"
        self.folder = self.storage.scratch / self.prefix

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
        return self.folder / VARIANT_FILES[Variant(name)].filename

    def write_reference(self, png: bytes) -> None:
        """Store the caller's reference image (PNG bytes, see `REFERENCE_SOURCE_KEY`), creating the job's
        folder."""
        with atomic_output(self.reference, "input_reference") as temp:
            temp.write_bytes(png)
        self.keep(self.reference)

    # -- kept files -----------------------------------------------------------------------------

    def key(self, path: Path) -> str:
        return f"{self.prefix}/{path.name}"

    def keep(self, *paths: Path) -> None:
        """Keep files written in the scratch folder (upload them to an object store)."""
        for path in paths:
            self.storage.put(self.key(path), path)

    def local(self, path: Path) -> Path:
        """``path``, downloaded first when another process made it; FileNotFoundError when none did."""
        if not path.is_file() and not self.storage.fetch(self.key(path), path):
            raise FileNotFoundError(f"{self.prefix} has no {path.name}")
        return path

    def has(self, path: Path) -> bool:
        """Whether the job's file ``path`` is kept (here or in the store)."""
        return path.is_file() or self.storage.exists(self.key(path))

    def move(self, source: Path, target: Path) -> None:
        """Rename a kept file (a run that already did finds it renamed)."""
        if self.storage.remote and source.is_file():
            os.replace(source, target)
        self.storage.move(self.key(source), self.key(target))

    def take(self, other: JobFiles, source: Path, target: Path) -> None:
        """Keep ``other``'s file ``source`` as this job's ``target``; FileNotFoundError when it is gone."""
        self.storage.copy(other.key(source), self.key(target))

    # -- the folder -----------------------------------------------------------------------------

    def create(self) -> None:
        """Make the job's folder: the stages write only into a job whose folder exists."""
        self.storage.make_folder(self.prefix)
        self.folder.mkdir(parents=True, exist_ok=True)

    def exists(self) -> bool:
        """False once the job was deleted or expired: a late write must not bring its folder back."""
        return self.storage.has_folder(self.prefix)

    def forget(self) -> None:
        """Drop this process's copies of the job's files (they stay kept); nothing on local storage."""
        self.storage.forget(self.prefix)

    def remove(self) -> None:
        self.storage.delete_folder(self.prefix)
        shutil.rmtree(self.folder, ignore_errors=True)


def is_job_id(text: str) -> bool:
    return JOB_ID.fullmatch(text) is not None


def job_folders(storage: Storage | str | Path) -> dict[str, float]:
    """Every job's folder by job id, with when it was last written (folders not named as job ids are skipped)."""
    folders = open_storage(storage).folders("jobs")
    return {name: modified for name, modified in folders.items() if is_job_id(name)}


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
