"""A finished video's files for download: opened locally, found in the object store, or presigned."""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

from core.errors import Conflict, NotFound
from core.files import VARIANT_FILES, JobFiles
from core.status import JobStatus, Variant
from core.storage import Storage, StoredContent
from serve_app.config import StorageConfig
from serve_app.store.jobs import JobRow


@dataclass
class Content:
    """A finished video's file, opened: a DELETE that comes after cannot take it from a download."""

    file: BinaryIO
    media_type: str
    filename: str


def open_content(
    config: StorageConfig, storage: Storage, job: JobRow, variant: str
) -> Content | StoredContent | str:
    """The file of a finished video's ``variant`` with its media type and download name: opened (on
    local storage), found in the object store, or (with ``storage.presign``) a presigned URL to it.

    Args:
        config: the storage settings (``presign``, ``presign_seconds``).
        storage: where the job's files are kept.
        job: the video's row; 409 (``not_ready``) unless it is completed.
        variant: a content variant's name; 404 when the video has no such file.
    """
    video_id = job.id
    if job.status != JobStatus.COMPLETED:
        raise Conflict(
            f"video {video_id} is {job.status}; content is ready when it is completed", code="not_ready"
        )
    files = JobFiles(storage, video_id)
    path = files.variant(variant)
    media_type = VARIANT_FILES[Variant(variant)].media_type
    missing = NotFound(f"video {video_id} has no {variant}", param="variant")
    if not storage.remote:
        try:
            file = path.open("rb")
        except (FileNotFoundError, NotADirectoryError):  # none made, or deleted since the row was read
            raise missing from None
        return Content(file, media_type, f"{video_id}{path.suffix}")
    stored = storage.stat(files.key(path))
    if stored is None:
        raise missing
    if config.presign:
        url = storage.presign(files.key(path), config.presign_seconds)
        if url is not None:
            return url
    return StoredContent(storage, files.key(path), stored, media_type, f"{video_id}{path.suffix}")
