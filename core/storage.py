"""Where artifacts are kept: a local folder (the default) or an object store behind an fsspec URL.

Artifacts are named by keys such as ``jobs/<id>/video.mp4``. The stages make them with ffmpeg, which
reads and writes only local files, so every process works in a local folder, its scratch:

- On a local folder (`LocalStorage`) the scratch *is* the store: a file written is kept, nothing moves.
- With an object store (`ObjectStorage`, ``s3://bucket/prefix``) each process has a scratch folder of its
  own. What a stage writes there is uploaded (`put`); what it reads is downloaded first (`fetch`). A
  process never reads another's scratch, so no node needs a folder that another node mounts.

Both kinds pickle small (a URL and a folder), so a deployment can be bound with one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import shutil
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from core.errors import StorageUnavailable
from core.patience import patiently

T = TypeVar("T")

logger = logging.getLogger("ray.serve")

# The empty object that says a job's folder exists in an object store, which has no folders.
FOLDER_MARKER = ".folder"


@dataclasses.dataclass(frozen=True)
class StoredObject:
    """What the content route needs to serve an object: its size, an entity tag, when it was written."""

    size: int
    etag: str
    modified: float


@dataclasses.dataclass
class StoredContent:
    """A finished video's file in an object store, found (its size and entity tag read) before any header.

    The video service finds it; the content route streams it (``serve_app.api.downloads``).
    """

    storage: Storage
    key: str
    object: StoredObject
    media_type: str
    filename: str


class Storage(ABC):
    """Artifacts by key, with the local scratch folder a process makes them in."""

    remote: bool

    @property
    @abstractmethod
    def scratch(self) -> Path:
        """The local folder this process writes job files in (``<scratch>/<key>``)."""

    @abstractmethod
    def put(self, key: str, path: Path) -> None:
        """Keep the local file ``path`` as ``key``."""

    @abstractmethod
    def fetch(self, key: str, path: Path) -> bool:
        """Bring ``key`` to the local file ``path`` (whole, or not at all); False when nothing is kept there."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def stat(self, key: str) -> StoredObject | None: ...

    @abstractmethod
    def read(self, key: str, start: int, end: int) -> bytes:
        """Bytes ``start`` to ``end`` (exclusive) of ``key``; FileNotFoundError when it is gone."""

    @abstractmethod
    def copy(self, source: str, target: str) -> None:
        """Keep ``source`` also as ``target``; FileNotFoundError when ``source`` is gone."""

    @abstractmethod
    def move(self, source: str, target: str) -> None:
        """Rename ``source`` to ``target`` where it exists (a run that already did finds it renamed)."""

    @abstractmethod
    def make_folder(self, prefix: str) -> None: ...

    @abstractmethod
    def has_folder(self, prefix: str) -> bool: ...

    @abstractmethod
    def delete_folder(self, prefix: str) -> None:
        """Delete every key under ``prefix``; nothing there is not an error."""

    @abstractmethod
    def folders(self, prefix: str) -> dict[str, float]:
        """The folders directly under ``prefix`` by name, with when anything in each was last written."""

    def presign(self, key: str, seconds: int) -> str | None:
        """A URL that reads ``key`` for ``seconds`` without credentials; None where the store has none."""
        return None

    def forget(self, prefix: str) -> None:  # noqa: B027 - nothing to drop where the scratch is the store
        """Drop this process's local copies under ``prefix`` (they are kept in the store)."""


class LocalStorage(Storage):
    """Artifacts in a folder; on a cluster, a volume that every node mounts."""

    remote = False

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    @property
    def scratch(self) -> Path:
        return self.root

    def _path(self, key: str) -> Path:
        return self.root / key

    def put(self, key: str, path: Path) -> None:
        target = self._path(key)
        if path != target:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)

    def fetch(self, key: str, path: Path) -> bool:
        source = self._path(key)
        if path == source:
            return path.is_file()
        try:
            shutil.copyfile(source, path)
        except FileNotFoundError:
            return False
        return True

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def stat(self, key: str) -> StoredObject | None:
        try:
            info = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return StoredObject(info.st_size, f'"{info.st_mtime_ns:x}-{info.st_size:x}"', info.st_mtime)

    def read(self, key: str, start: int, end: int) -> bytes:
        with open(self._path(key), "rb") as file:
            file.seek(start)
            return file.read(max(0, end - start))

    def copy(self, source: str, target: str) -> None:
        """A hard link where the filesystem allows (a clip shared by a remix costs no space), else a copy."""
        path = self._path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(self._path(source), path)
        except FileExistsError:
            pass
        except FileNotFoundError:
            raise  # the source is gone (an OSError, but no copy would help)
        except OSError:  # another filesystem, or one without hard links
            shutil.copyfile(self._path(source), path)

    def move(self, source: str, target: str) -> None:
        if self._path(source).is_file():
            os.replace(self._path(source), self._path(target))

    def make_folder(self, prefix: str) -> None:
        self._path(prefix).mkdir(parents=True, exist_ok=True)

    def has_folder(self, prefix: str) -> bool:
        return self._path(prefix).is_dir()

    def delete_folder(self, prefix: str) -> None:
        shutil.rmtree(self._path(prefix), ignore_errors=True)

    def folders(self, prefix: str) -> dict[str, float]:
        try:
            with os.scandir(self._path(prefix)) as entries:
                return {
                    entry.name: entry.stat(follow_symlinks=False).st_mtime
                    for entry in entries
                    if entry.is_dir(follow_symlinks=False)
                }
        except FileNotFoundError:
            return {}


# An object store that refuses connections or does not answer (down, or hung): one attempt gives up after
# CONNECT_TIMEOUT_S without a connection or READ_TIMEOUT_S without an answer (botocore's defaults are 60 s,
# with retries on top: minutes). A patient storage (the stages') tries again, backing off, for up to
# PATIENCE_S; an impatient one (the ingress's) for up to IMPATIENCE_S (a connection the store dropped is
# made again), then refuses with `StorageUnavailable`, a 503 with Retry-After, and for DOWN_S after that
# without trying.
CONNECT_TIMEOUT_S = 3
READ_TIMEOUT_S = 5
PATIENCE_S = 45.0
IMPATIENCE_S = 1.0
DOWN_S = 2.0


class ObjectStorage(Storage):
    """Artifacts in an object store named by an fsspec URL (``s3://bucket/prefix``).

    Credentials and the endpoint come from the store's standard environment (for S3: ``AWS_ACCESS_KEY_ID``,
    ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``), never from the URL.

    Args:
        url: where the keys live: the bucket and an optional prefix.
        scratch: the local folder under which each process keeps a scratch folder of its own.
    """

    remote = True
    # A process drops its copies of a job not touched for this long (a job that failed mid-way).
    SCRATCH_TTL_S = 3600.0

    def __init__(self, url: str, scratch: str | Path | None = None, patient: bool = True) -> None:
        self.url = url.rstrip("/")
        self.protocol, self.base = self.url.split("://", 1)
        self.scratch_root = Path(scratch) if scratch else Path(tempfile.gettempdir()) / "storyreel-scratch"
        self.patient = patient
        self.patience_s = PATIENCE_S if patient else IMPATIENCE_S
        self._pruned_at = 0.0
        self._down_until = 0.0

    def __repr__(self) -> str:
        return f"ObjectStorage({self.url!r})"

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("fs", None)  # a client is made again in the process that unpickles it
        state.pop("scratch", None)  # and a scratch folder of that process's own
        return state

    @functools.cached_property
    def fs(self) -> Any:
        import fsspec

        # Listings are not cached: another process writes and deletes the same keys.
        options: dict[str, Any] = {"use_listings_cache": False, "skip_instance_cache": True}
        if self.protocol in ("s3", "s3a"):
            options["config_kwargs"] = {
                # Presigned URLs in Signature Version 4: botocore would sign them in version 2 for an endpoint
                # of its own (MinIO, Ceph) or us-east-1, which AWS refuses for buckets made since June 2020.
                "signature_version": "s3v4",
                "connect_timeout": CONNECT_TIMEOUT_S,
                "read_timeout": READ_TIMEOUT_S,
                "retries": {"total_max_attempts": 1},  # `_reaching` tries again, within a patience
            }
        fs = fsspec.filesystem(self.protocol, **options)
        if hasattr(fs, "retries"):
            fs.retries = 1  # s3fs's own retries of timeouts (5, backing off): `_reaching`'s instead
        return fs

    def _reaching(self, operation: Callable[[], T]) -> T:
        """Run ``operation`` (calls on ``fs``); an object store that refuses or does not answer is tried
        again, backing off, within ``patience_s``, then named as `StorageUnavailable`."""
        if time.monotonic() < self._down_until:
            raise StorageUnavailable("the object store is unreachable; try again shortly")
        try:
            return patiently(operation, _unreachable(), self.patience_s, self._warn if self.patient else None)
        except _unreachable() as exc:
            if not self.patient:
                self._down_until = time.monotonic() + DOWN_S
            raise StorageUnavailable(
                f"the object store is unreachable ({type(exc).__name__}); try again shortly"
            ) from exc

    def _warn(self, error: BaseException) -> None:
        logger.warning("object store unreachable (%s); trying again for %g s", error, self.patience_s)

    @functools.cached_property
    def scratch(self) -> Path:
        """This process's folder under ``scratch_root``, made on first use. The folders of processes that
        are gone (a replica that crashed or was replaced) are removed then, so restarts leave no files."""
        folder = self.scratch_root / f"process-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        folder.mkdir(parents=True, exist_ok=True)
        for other in self.scratch_root.glob("process-*-*"):
            pid = other.name.split("-")[1]
            if other != folder and pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(other, ignore_errors=True)
        return folder

    def _path(self, key: str) -> str:
        return f"{self.base}/{key}"

    def put(self, key: str, path: Path) -> None:
        self._reaching(lambda: self.fs.put_file(str(path), self._path(key)))

    def fetch(self, key: str, path: Path) -> bool:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            self._reaching(lambda: self.fs.get_file(self._path(key), str(temp)))
            os.replace(temp, path)
        except FileNotFoundError:
            return False
        finally:
            temp.unlink(missing_ok=True)
        return True

    def exists(self, key: str) -> bool:
        return bool(self._reaching(lambda: self.fs.exists(self._path(key))))

    def stat(self, key: str) -> StoredObject | None:
        try:
            info = self._reaching(lambda: self.fs.info(self._path(key)))
        except FileNotFoundError:
            return None
        if info.get("type") != "file":
            return None
        etag = str(info.get("ETag") or f'"{info.get("size")}"')
        modified = info.get("LastModified")
        return StoredObject(int(info["size"]), etag, modified.timestamp() if modified else time.time())

    def read(self, key: str, start: int, end: int) -> bytes:
        return bytes(self._reaching(lambda: self.fs.cat_file(self._path(key), start=start, end=end)))

    def copy(self, source: str, target: str) -> None:
        self._reaching(lambda: self.fs.copy(self._path(source), self._path(target)))

    def move(self, source: str, target: str) -> None:
        try:
            self._reaching(lambda: self.fs.copy(self._path(source), self._path(target)))
        except FileNotFoundError:
            return
        self._reaching(lambda: self.fs.rm_file(self._path(source)))

    def make_folder(self, prefix: str) -> None:
        self._reaching(lambda: self.fs.pipe_file(self._path(f"{prefix}/{FOLDER_MARKER}"), b""))

    def has_folder(self, prefix: str) -> bool:
        return self.exists(f"{prefix}/{FOLDER_MARKER}")

    def delete_folder(self, prefix: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._reaching(lambda: self.fs.rm(self._path(prefix), recursive=True))

    def folders(self, prefix: str) -> dict[str, float]:
        """One listing of every key under ``prefix`` (pages of 1000), grouped by the folder each is in."""
        base = self._path(prefix).rstrip("/") + "/"
        try:
            found = self._reaching(lambda: self.fs.find(base, detail=True))
        except FileNotFoundError:
            return {}
        latest: dict[str, float] = {}
        for path, info in found.items():
            name, _, rest = path[len(base) :].partition("/") if path.startswith(base) else ("", "", "")
            modified = info.get("LastModified")
            if name and rest:
                stamp = modified.timestamp() if modified else time.time()
                latest[name] = max(latest.get(name, 0.0), stamp)
        return latest

    def presign(self, key: str, seconds: int) -> str | None:
        return str(self.fs.sign(self._path(key), expiration=seconds))

    def forget(self, prefix: str) -> None:
        shutil.rmtree(self.scratch / prefix, ignore_errors=True)
        self._prune()

    def _prune(self) -> None:
        """Drop this process's copies of jobs not touched for ``SCRATCH_TTL_S`` (at most every tenth of it)."""
        if time.monotonic() - self._pruned_at < self.SCRATCH_TTL_S / 10:
            return
        self._pruned_at = time.monotonic()
        cutoff = time.time() - self.SCRATCH_TTL_S
        for folder in (self.scratch / "jobs").glob("*"):
            with contextlib.suppress(OSError):
                if folder.stat().st_mtime < cutoff:
                    shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def open_storage(
    root: str | Path | Storage, scratch: str | Path | None = None, patient: bool = True
) -> Storage:
    """A `Storage` for a storage root: an fsspec URL (``s3://bucket/prefix``) or a local folder.

    ``patient``: an object store's outage is waited out (the stages); False: refused at once (the ingress).
    """
    if isinstance(root, Storage):
        return root
    if is_url(str(root)):
        return ObjectStorage(str(root), scratch, patient)
    return LocalStorage(root)


@functools.cache
def _unreachable() -> tuple[type[BaseException], ...]:
    """The errors of an object store that refuses connections or does not answer in time (those of the
    clients installed: botocore's and aiohttp's come with s3fs)."""
    import asyncio

    from fsspec.exceptions import FSTimeoutError

    errors: list[type[BaseException]] = [asyncio.TimeoutError, FSTimeoutError]
    with contextlib.suppress(ImportError):
        import botocore.exceptions

        # Refused, or no connection in time; no answer in time, or a connection cut mid-answer.
        errors += [botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError]
    with contextlib.suppress(ImportError):
        import aiohttp

        errors.append(aiohttp.ClientConnectionError)
    return tuple(errors)


def is_url(root: str) -> bool:
    return "://" in root


def check_url(url: str) -> None:
    """Raise ValueError saying why fsspec cannot open ``url`` (an unknown scheme, a missing package)."""
    import fsspec
    from fsspec.registry import known_implementations

    protocol, _, rest = url.partition("://")
    if protocol in ("file", "local"):
        raise ValueError(f"{url!r}: give a local folder as a path, not a {protocol}:// URL")
    if protocol not in known_implementations:
        raise ValueError(f"{url!r}: fsspec knows no {protocol}:// storage (s3://bucket/prefix, say)")
    if not rest.strip("/"):
        raise ValueError(f"{url!r}: name a bucket (and optionally a prefix) after {protocol}://")
    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError as exc:
        raise ValueError(f"{url!r}: {exc}") from None
