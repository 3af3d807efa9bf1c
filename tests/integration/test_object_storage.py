"""Artifacts in an object store: a real S3-compatible server (moto in server mode) reached over HTTP by s3fs.

In process, the ingress, the runner's recipe, the encoder and the narrator each open the storage on their
own, so each has a scratch folder of its own: a job that completes here passed every file between its
stages through the store, as it must between nodes that share no folder.
"""

from __future__ import annotations

import asyncio
import io
import os
import pickle
import time
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import fsspec
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from core.files import JobFiles, job_folders
from core.storage import LocalStorage, ObjectStorage, Storage
from engines.media import VideoProcessor
from engines.narrator.narrator import write_wav
from serve_app.api import ingress
from serve_app.api.downloads import byte_range
from serve_app.config import AppConfig
from serve_app.protocol import CreateVideoRequest, ExtendRequest, RemixRequest, SceneSpec
from tests.fixtures.jobs import completed, job_row, runners, service_with
from tests.support.s3 import CREDENTIALS, query_signature

pytestmark = pytest.mark.integration

JOB = "video_" + "1" * 32


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path) -> Storage:
    if request.param == "local":
        return LocalStorage(tmp_path / "storage")
    return ObjectStorage(request.getfixturevalue("s3_root"), tmp_path / "scratch")


@pytest.fixture
def on_s3(local_config: AppConfig, s3_root: str, tmp_path: Path) -> AppConfig:
    """The in-process settings with artifacts in a bucket, the job store in a local SQLite file."""
    storage = {"root": s3_root, "scratch": str(tmp_path / "scratch"), "database": str(tmp_path / "jobs.db")}
    return local_config.model_copy(update={"storage": local_config.storage.model_validate(storage)})


def bucket_keys(config: AppConfig, job_id: str) -> set[str]:
    fs = fsspec.filesystem("s3", skip_instance_cache=True, use_listings_cache=False)
    base = config.storage.root.split("://", 1)[1] + f"/jobs/{job_id}/"
    return {path[len(base) :] for path in fs.find(base)}


def png(width: int = 64, height: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


# -- the interface, on both kinds ----------------------------------------------------------------------


def test_a_kept_file_reads_back_whole_and_in_ranges(storage, tmp_path):
    made = storage.scratch / "jobs" / JOB / "clip.mp4"
    made.parent.mkdir(parents=True, exist_ok=True)
    made.write_bytes(bytes(range(256)) * 40)
    storage.put(f"jobs/{JOB}/clip.mp4", made)

    assert storage.exists(f"jobs/{JOB}/clip.mp4") and not storage.exists(f"jobs/{JOB}/other.mp4")
    stored = storage.stat(f"jobs/{JOB}/clip.mp4")
    assert stored is not None and stored.size == 10240 and stored.etag
    assert storage.stat(f"jobs/{JOB}/other.mp4") is None
    assert storage.read(f"jobs/{JOB}/clip.mp4", 250, 260) == bytes([250, 251, 252, 253, 254, 255, 0, 1, 2, 3])
    elsewhere = tmp_path / "elsewhere" / "clip.mp4"
    elsewhere.parent.mkdir()
    assert storage.fetch(f"jobs/{JOB}/clip.mp4", elsewhere) and elsewhere.read_bytes() == made.read_bytes()
    assert not storage.fetch(f"jobs/{JOB}/other.mp4", tmp_path / "elsewhere" / "other.mp4")
    assert not (tmp_path / "elsewhere" / "other.mp4").exists()  # nothing half-written either


def test_copies_moves_and_folders(storage):
    made = storage.scratch / "jobs" / JOB / "a.wav"
    made.parent.mkdir(parents=True, exist_ok=True)
    made.write_bytes(b"voice")
    other = "video_" + "2" * 32
    storage.make_folder(f"jobs/{JOB}")
    storage.put(f"jobs/{JOB}/a.wav", made)
    storage.copy(f"jobs/{JOB}/a.wav", f"jobs/{other}/b.wav")
    with pytest.raises(FileNotFoundError):
        storage.copy(f"jobs/{JOB}/gone.wav", f"jobs/{other}/c.wav")
    storage.move(f"jobs/{other}/b.wav", f"jobs/{other}/c.wav")
    storage.move(f"jobs/{other}/b.wav", f"jobs/{other}/c.wav")  # done already: nothing to do

    assert storage.read(f"jobs/{other}/c.wav", 0, 100) == b"voice" and not storage.exists(
        f"jobs/{other}/b.wav"
    )
    assert storage.has_folder(f"jobs/{JOB}") and set(storage.folders("jobs")) == {JOB, other}
    assert abs(storage.folders("jobs")[JOB] - time.time()) < 600
    storage.delete_folder(f"jobs/{JOB}")
    storage.delete_folder(f"jobs/{'video_' + '3' * 32}")  # nothing there: not an error
    assert not storage.has_folder(f"jobs/{JOB}") and not storage.exists(f"jobs/{JOB}/a.wav")
    assert set(job_folders(storage)) == {other}


def test_an_object_store_pickles_small_and_each_process_gets_a_scratch_folder_of_its_own(s3_root, tmp_path):
    storage = ObjectStorage(s3_root, tmp_path)
    storage.make_folder(f"jobs/{JOB}")  # a client made, and a scratch folder
    scratch = storage.scratch
    copy = pickle.loads(pickle.dumps(storage))
    assert len(pickle.dumps(storage)) < 1000
    assert copy.has_folder(f"jobs/{JOB}") and copy.scratch != scratch and copy.scratch.parent == tmp_path


def test_a_process_removes_the_scratch_folders_of_processes_that_are_gone(tmp_path):
    import subprocess
    import sys

    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    gone = tmp_path / f"process-{int(ended.stdout)}-0badc0de"
    living = tmp_path / f"process-{os.getppid()}-feedface"  # this test's parent: alive
    for folder in (gone, living):
        (folder / "jobs" / JOB).mkdir(parents=True)
        (folder / "jobs" / JOB / "scene_000.mp4").write_bytes(b"clip")
    (tmp_path / "notes").mkdir()  # not a process's folder: left alone

    scratch = ObjectStorage("s3://bucket/prefix", tmp_path).scratch  # made on first use; no store is reached

    assert scratch.is_dir() and scratch.name.startswith(f"process-{os.getpid()}-")
    assert not gone.exists() and (living / "jobs" / JOB / "scene_000.mp4").is_file()
    assert (tmp_path / "notes").is_dir()


@pytest.mark.parametrize(
    "header, size, expected",
    [
        (None, 100, None),
        ("bytes=0-9", 100, (0, 10)),
        ("bytes=90-", 100, (90, 100)),
        ("bytes=-10", 100, (90, 100)),
        ("bytes=-500", 100, (0, 100)),
        ("bytes=50-5000", 100, (50, 100)),
        ("bytes=100-", 100, "unsatisfiable"),
        ("bytes=-0", 100, "unsatisfiable"),
        ("bytes=9-0", 100, None),  # malformed: the whole object
        ("bytes=0-1,5-6", 100, None),  # several ranges: the whole object
        ("items=0-9", 100, None),
        ("bytes=-", 100, None),
        ("bytes=0-" + "9" * 5000, 100, None),  # no number that long: the whole object, not an error
        (" bytes=0-9 ", 100, (0, 10)),
    ],
)
def test_the_range_a_header_asks_for(header, size, expected):
    assert byte_range(header, size) == expected


@pytest.fixture(params=["local", "s3"])
def serving(request, local_config):
    """A service holding one completed video of 1000 known bytes, in a folder or in a bucket."""
    config = local_config if request.param == "local" else request.getfixturevalue("on_s3")
    service = service_with(config)
    files = JobFiles(service.storage, JOB)
    files.create()
    files.variant("video").write_bytes(bytes(range(250)) * 4)
    files.keep(files.variant("video"))
    service.store.create(job_row(JOB, "completed"))
    ingress.install(service)
    return service


@pytest.mark.parametrize(
    "header",
    [
        "bytes=5-1",  # last before first
        "bytes=abc",
        "bytes=",
        "bytes=-",
        "items=0-1",  # a unit this server does not know
        "bytes=0-1,5-6",  # several ranges
        "bytes=0-1, 0-1",
        "bytes 0-1",
        "bytes=1-2-3",
        "bytes=0-" + "9" * 40,
    ],
)
def test_a_malformed_range_is_ignored_alike_on_both_kinds_of_storage(serving, header):
    with TestClient(ingress.app) as client:
        response = client.get(f"/v1/videos/{JOB}/content", headers={"range": header})
    assert response.status_code == 200, response.text
    assert response.content == bytes(range(250)) * 4 and "content-range" not in response.headers


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5000-6000", "bytes=-0"])
def test_a_range_past_the_end_is_a_416_in_the_envelope_on_both_kinds_of_storage(serving, header):
    with TestClient(ingress.app) as client:
        response = client.get(f"/v1/videos/{JOB}/content", headers={"range": header})
        # A client whose copy is of another version gets the whole file, whatever range it asked for.
        stale = client.get(f"/v1/videos/{JOB}/content", headers={"range": header, "if-range": '"old"'})
    assert response.status_code == 416 and response.headers["content-range"] == "bytes */1000"
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("range_not_satisfiable", "range")
    assert "1000 bytes" in error["message"]
    assert stale.status_code == 200 and len(stale.content) == 1000


@pytest.mark.parametrize(
    "header, start, end",
    [("bytes=10-19", 10, 20), ("Bytes=990-", 990, 1000), ("bytes=-5", 995, 1000), ("bytes=0-99999", 0, 1000)],
)
def test_a_range_is_served_alike_on_both_kinds_of_storage(serving, header, start, end):
    with TestClient(ingress.app) as client:
        response = client.get(f"/v1/videos/{JOB}/content", headers={"range": header})
        validator = client.get(f"/v1/videos/{JOB}/content").headers["etag"]
        current = client.get(f"/v1/videos/{JOB}/content", headers={"range": header, "if-range": validator})
    assert response.status_code == 206 and response.content == (bytes(range(250)) * 4)[start:end]
    assert response.headers["content-range"] == f"bytes {start}-{end - 1}/1000"
    assert current.status_code == 206 and current.content == response.content


# -- jobs -----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_job_passes_every_file_through_the_store_and_is_served_from_it_with_ranges(on_s3, tmp_path):
    service = service_with(on_s3)
    ingress.install(service)
    with TestClient(ingress.app) as client:
        made = client.post(
            "/v1/videos",
            data={"prompt": "Dawn. Dusk.", "seconds": "2"},
            files={"input_reference": ("red.png", png(), "image/png")},
        )
        assert made.status_code == 200, made.text
        video_id = made.json()["id"]
        completed(client, video_id)
        whole = client.get(f"/v1/videos/{video_id}/content")
        head = client.get(f"/v1/videos/{video_id}/content", headers={"range": "bytes=0-99"})
        tail = client.get(f"/v1/videos/{video_id}/content", headers={"range": "bytes=-10"})
        past = client.get(f"/v1/videos/{video_id}/content", headers={"range": "bytes=99999999-"})
        stale = client.get(
            f"/v1/videos/{video_id}/content", headers={"range": "bytes=0-9", "if-range": '"another"'}
        )
        poster = client.get(f"/v1/videos/{video_id}/content", params={"variant": "thumbnail"})
        keys = bucket_keys(on_s3, video_id)
        deleted = client.delete(f"/v1/videos/{video_id}")
        assert deleted.status_code == 200
        assert bucket_keys(on_s3, video_id) == set()
        gone = client.get(f"/v1/videos/{video_id}/content")

    assert {"video.mp4", "thumbnail.jpg", "spritesheet.jpg", "captions.vtt", "input_reference.png"} <= keys
    assert {"scene_000.mp4", "scene_001.mp4"} <= keys
    size = int(whole.headers["content-length"])
    assert whole.status_code == 200 and len(whole.content) == size and whole.content[4:8] == b"ftyp"
    assert whole.headers["accept-ranges"] == "bytes" and whole.headers["content-type"] == "video/mp4"
    assert f"filename*=utf-8''{video_id}.mp4" in whole.headers["content-disposition"]
    assert head.status_code == 206 and head.content == whole.content[:100]
    assert head.headers["content-range"] == f"bytes 0-99/{size}"
    assert tail.status_code == 206 and tail.content == whole.content[-10:]
    assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{size}"
    assert stale.status_code == 200 and stale.content == whole.content
    assert poster.status_code == 200 and poster.content[:2] == b"\xff\xd8"
    assert gone.status_code == 404
    # Every stage dropped its copies when it was done with them.
    assert not any(path.is_file() for path in (tmp_path / "scratch").rglob(f"*{video_id}*/*"))


@pytest.mark.slow
def test_with_presign_the_content_route_redirects_to_the_store(on_s3):
    on_s3.storage.presign = True
    service = service_with(on_s3)
    ingress.install(service)
    with TestClient(ingress.app) as client:
        video_id = client.post("/v1/videos", json={"prompt": "Dawn.", "seconds": 1}).json()["id"]
        completed(client, video_id)
        redirect = client.get(f"/v1/videos/{video_id}/content", follow_redirects=False)
    assert redirect.status_code == 307
    location = redirect.headers["location"]
    fetched = httpx.get(location)  # no credentials: the signature is the permission
    assert fetched.status_code == 200 and fetched.content[4:8] == b"ftyp"
    # The test server serves any presigned URL: the signature is checked here, against the store's secret.
    query = dict(parse_qsl(urlsplit(location).query))
    assert query["X-Amz-Credential"].startswith(CREDENTIALS["AWS_ACCESS_KEY_ID"] + "/")
    assert query["X-Amz-Expires"] == str(on_s3.storage.presign_seconds)
    assert query["X-Amz-Signature"] == query_signature(location, CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
    assert query["X-Amz-Signature"] != query_signature(location, "another-secret")
    assert (
        fetched.content
        == JobFiles(service.storage, video_id)
        .local(JobFiles(service.storage, video_id).variant("video"))
        .read_bytes()
    )


@pytest.mark.slow
def test_a_narrated_long_video_with_music_remixed_and_extended_on_the_store(on_s3, tmp_path):
    """Narrations, a music bed, scenes of several segments, a remix's copied clips and an extension's last
    frame: every file one stage hands another goes through the bucket."""
    config = on_s3.model_copy(
        update={
            "narration": on_s3.narration.model_copy(update={"backend": "espeak"}),
            "limits": on_s3.limits.model_copy(update={"max_frames_per_segment": 4}),
        }
    )
    rate = 22050
    write_wav(tmp_path / "bed.wav", 0.2 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate), rate)
    scenes = [SceneSpec(caption="A fox runs.", duration_s=2), SceneSpec(caption="It sleeps.", duration_s=2)]

    async def scenario():
        service = service_with(config)
        body = CreateVideoRequest(prompt="A fox.", scenes=scenes, seed=3)
        source = await service.create(body, None, None, music=(tmp_path / "bed.wav").read_bytes())
        await runners(service).finished(source.id)
        changed = [scenes[0], SceneSpec(caption="It wakes.", duration_s=2)]
        remix = await service.remix(source.id, RemixRequest(prompt="A fox wakes.", scenes=changed))
        await runners(service).finished(remix.id)
        extension = await service.extend(ExtendRequest(prompt="It runs home.", seconds=2, video=source.id))
        await runners(service).finished(extension.id)
        return service, source.id, remix.id, extension.id

    service, source_id, remix_id, extension_id = asyncio.run(scenario())
    source, remix, extension = (service.retrieve(i).model_dump() for i in (source_id, remix_id, extension_id))
    for video in (source, remix, extension):
        assert video["status"] == "completed", video["error"]
        assert "audio" in video["variants"]
    assert all(scene["narration"]["narrator"] == "espeak" for scene in source["scenes"])
    assert [scene["source_video_id"] for scene in remix["scenes"]] == [source_id, None]
    assert extension["extended_from_video_id"] == source_id and float(extension["seconds"]) > 3.5
    keys = bucket_keys(config, source_id)
    assert {"narration_000.wav", "narration_001.wav", "music.audio", "audio.m4a"} <= keys
    assert {"scene_000_part_00.mp4", "scene_000_part_01.mp4"} <= keys  # 2 s at 4 fps in calls of 4 frames
    files = JobFiles(service.storage, extension_id)
    length = VideoProcessor.probe(files.local(files.variant("video"))).duration
    assert length == pytest.approx(float(extension["seconds"]), abs=0.3)


@pytest.mark.slow
def test_the_sweep_removes_objects_of_jobs_without_a_row_and_of_expired_jobs(on_s3, monkeypatch):
    from serve_app.jobs import runner

    service = service_with(on_s3)
    orphan = JobFiles(service.storage, "video_" + "e" * 32)
    orphan.create()
    orphan.reference.write_bytes(png())
    orphan.keep(orphan.reference)
    monkeypatch.setattr(runner, "ORPHAN_GRACE_S", -60.0)  # every folder is old enough: only rows count

    async def scenario():
        video = await service.create(CreateVideoRequest(prompt="Dawn.", seconds=1), None, None)
        await runners(service).finished(video.id)
        runners(service).worker.sweep()
        return video.id

    video_id = asyncio.run(scenario())
    assert service.retrieve(video_id).status == "completed"
    assert bucket_keys(on_s3, orphan.prefix.split("/")[1]) == set()
    assert "video.mp4" in bucket_keys(on_s3, video_id)  # a job with a row keeps its files


def test_an_object_store_root_needs_a_database_and_presign_needs_an_object_store(tmp_path):
    from pydantic import ValidationError

    from serve_app.config import StorageConfig

    with pytest.raises(ValidationError, match="storage.database is required"):
        StorageConfig(root="s3://bucket/prefix")
    with pytest.raises(ValidationError, match="storage.presign=true needs an object store root"):
        StorageConfig(root=str(tmp_path), presign=True)
    with pytest.raises(ValidationError, match="fsspec knows no nosuch:// storage"):
        StorageConfig(root="nosuch://bucket", database="jobs.db")
    with pytest.raises(ValidationError, match="give a local folder as a path"):
        StorageConfig(root="file:///srv/storage", database="jobs.db")
    with pytest.raises(ValidationError, match="name a bucket"):
        StorageConfig(root="s3://", database="jobs.db")
    assert isinstance(StorageConfig(root="s3://b/p", database="jobs.db").open(), ObjectStorage)
    assert isinstance(StorageConfig(root=str(tmp_path)).open(), LocalStorage)
