"""A full disk under the job files (a real tmpfs of 4 MiB, mounted here: the tests run as root, as CI does).

A job that meets it fails with `storage_full`, and a create that must write an upload is a 507 that stores
nothing; what was stored before keeps its bytes, the API keeps answering, and once space returns the next job
completes. The job store is on another disk, as `storage.database` advises."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import pickle
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from core.files import JobFiles
from serve_app.api import ingress
from tests.fixtures.jobs import completed, service_with

pytestmark = pytest.mark.integration


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.fail("a full disk is a tmpfs this test mounts: run it as root (CI does)")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Write to ``disk`` until it is full; the file that filled it."""
    filler = disk / "filler"
    with open(filler, "wb") as file:
        try:
            while True:
                file.write(b"\0" * 65536)
                file.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def png() -> bytes:
    buffer = io.BytesIO()
    Image.frombytes("RGB", (256, 256), os.urandom(256 * 256 * 3)).save(buffer, format="PNG")
    return buffer.getvalue()


def ended(client: TestClient, video_id: str) -> dict:
    deadline = time.monotonic() + 60  # guards against a hang only
    while (video := client.get(f"/v1/videos/{video_id}").json())["status"] not in ("completed", "failed"):
        assert time.monotonic() < deadline, video
        time.sleep(0.1)
    return video


def video_digest(config, video_id: str) -> str:
    return hashlib.sha256(JobFiles(config.storage.root, video_id).variant("video").read_bytes()).hexdigest()


def test_a_full_disk_fails_the_job_as_storage_full_and_once_space_returns_the_next_completes(
    local_config, disk, tmp_path
):
    storage = local_config.storage.model_copy(
        update={"root": str(disk / "storage"), "database": str(tmp_path / "jobs.sqlite3")}
    )
    config = local_config.model_copy(update={"storage": storage})
    service = service_with(config)
    ingress.install(service)
    body = {"prompt": "A fox. The sea.", "seconds": 2}
    # As a server answers: the 507 is sent, not raised into the test (Starlette raises an unexpected error
    # into its caller after answering it).
    with TestClient(ingress.app, raise_server_exceptions=False) as client:
        before = completed(client, client.post("/v1/videos", json=body).json()["id"])
        kept = video_digest(config, before["id"])
        filler = fill(disk)

        # A create that must store an upload: refused, and nothing of it is stored.
        refused = client.post(
            "/v1/videos", data={"prompt": "A fox."}, files={"input_reference": ("a.png", png())}
        )
        assert refused.status_code == 507, refused.text
        assert refused.json()["error"]["code"] == "storage_full"
        assert len(service.store.page(None, 10, "desc")[0]) == 1
        assert [folder.name for folder in (disk / "storage" / "jobs").iterdir()] == [before["id"]]

        # A job that meets the full disk while it runs fails, saying so.
        failing = client.post("/v1/videos", json=body)
        assert failing.status_code == 200, failing.text
        video = ended(client, failing.json()["id"])
        assert (video["status"], video["error"]["code"]) == ("failed", "storage_full"), video["error"]
        assert "storage is full" in video["error"]["message"]
        assert not JobFiles(config.storage.root, video["id"]).variant("video").exists()

        # The API answers, what was stored keeps its bytes, and with space again the next job completes.
        assert client.get(f"/v1/videos/{before['id']}").json()["status"] == "completed"
        assert video_digest(config, before["id"]) == kept
        filler.unlink()
        after = completed(client, client.post("/v1/videos", json=body).json()["id"])
        assert after["status"] == "completed"


def test_a_full_disk_is_told_apart_however_it_reached_the_job():
    from core.errors import MediaError, classify

    # ffmpeg's words, on an error that crossed processes (Ray pickles what a deployment raises).
    ffmpeg = MediaError("ffmpeg failed", "av_interleaved_write_frame(): No space left on device")
    assert classify(pickle.loads(pickle.dumps(ffmpeg))).code == "storage_full"
    # An OSError behind another error; a quota is the same.
    try:
        try:
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
        except OSError as exc:
            raise RuntimeError("could not keep the clip") from exc
    except RuntimeError as wrapped:
        assert classify(wrapped).code == "storage_full"
    assert classify(OSError(errno.EACCES, "Permission denied")).code == "internal_error"
    assert classify(MediaError("ffmpeg failed", "Invalid data found")).code == "media_error"
