"""The service on a PostgreSQL job store and an S3 bucket through real Ray Serve: two ingress replicas share
them, and one of them killed while jobs run neither stops nor restarts any job; PostgreSQL restarted, then
stopped for 20 s, mid-job loses nothing either. No folder is shared: every replica stages its files in a
scratch folder of its own."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest

from tests.fixtures.serve import REPLICAS, Deployed, cpu_profile, deployed
from tests.support.cluster import cluster
from tests.support.faults import FaultyProxy, faulty_proxy
from tests.support.postgres import PostgresServer, ServerMissing, new_database, running_server
from tests.support.s3 import new_bucket

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

APP = "pg"


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    """A server of this module's own: its fault test stops it, and no other module's tests may see that."""
    try:
        with running_server() as server:
            yield server
    except ServerMissing as missing:
        pytest.fail(str(missing))


@pytest.fixture(scope="module")
def database(server: PostgresServer) -> str:
    return new_database(server.url)


@pytest.fixture(scope="module")
def bucket(s3_server) -> str:
    return new_bucket(s3_server) + "/artifacts"


@pytest.fixture(scope="module")
def s3_proxy(s3_server) -> Iterator[FaultyProxy]:
    """Between the replicas and the S3 server: the object store fault test turns it off and hangs it."""
    with faulty_proxy(urlsplit(s3_server["AWS_ENDPOINT_URL"]).port) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[str]:
    """A Ray cluster of this module's own, not the session's: under `make test` the module then runs in the
    worker beside the one with every shared app (tests/conftest.py), which it would otherwise hold up by
    its faults' minute of waiting."""
    with cluster(log_to_driver=True) as url:
        yield url


@pytest.fixture(scope="module")
def app(own_cluster, database, bucket, s3_server, s3_proxy, tmp_path_factory) -> Iterator[Deployed]:
    config = cpu_profile(tmp_path_factory.mktemp("unused"))
    config.storage = config.storage.model_validate(
        {"root": bucket, "database": database, "scratch": str(tmp_path_factory.mktemp("scratch"))}
    )
    options = {"VideoAPI": {"num_replicas": 2, **REPLICAS["VideoAPI"]}}
    env = s3_server | {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{s3_proxy.port}"}
    with deployed(own_cluster, config, APP, options, env=env) as app:
        yield app


def _stored(database: str, video_ids: list[str]) -> dict[str, tuple[str, int]]:
    with psycopg.connect(database) as db:
        rows = db.execute("SELECT id, status, attempts FROM jobs WHERE id = ANY(%s)", [video_ids]).fetchall()
    return {row[0]: (row[1], row[2]) for row in rows}


def _ingress_replicas() -> list:
    import ray

    names = [
        actor["name"]
        for actor in ray.util.list_named_actors(all_namespaces=True)
        if f"{APP}#VideoAPI#" in actor["name"]
    ]
    return [ray.get_actor(name, namespace="serve") for name in names]


def test_two_ingress_replicas_share_the_store_and_losing_one_loses_no_job(app, database):
    import ray
    from ray import serve

    assert serve.status().applications[APP].deployments["VideoAPI"].replica_states.get("RUNNING") == 2
    ids = [
        app.client.post(
            "/v1/videos", json={"prompt": f"Story {n}. It ends.", "seconds": 2, "seed": n}
        ).json()["id"]
        for n in range(6)
    ]
    stored = _stored(database, ids)
    assert set(stored) == set(ids)  # every create, whichever replica took it, is in the one store
    assert any(status in ("queued", "in_progress") for status, _ in stored.values())  # the premise: mid-run

    ray.kill(_ingress_replicas()[0], no_restart=True)

    deadline = time.monotonic() + 180
    while any(status != "completed" for status, _ in _stored(database, ids).values()):
        assert time.monotonic() < deadline, _stored(database, ids)
        time.sleep(0.25)
    assert all(attempts == 1 for _, attempts in _stored(database, ids).values())  # none restarted
    for video_id in ids:  # the remaining replica (and Serve's replacement) answer for every video
        video = app.wait(video_id, timeout_s=60)
        assert video["status"] == "completed" and video["scenes"]
    listed = app.client.get("/v1/videos", params={"limit": 100}).json()["data"]
    assert {video["id"] for video in listed} == set(ids)
    for video_id in ids:  # streamed from the bucket by whichever replica answers
        whole = app.client.get(f"/v1/videos/{video_id}/content")
        assert whole.status_code == 200 and whole.content[4:8] == b"ftyp"
        ranged = app.client.get(f"/v1/videos/{video_id}/content", headers={"range": "bytes=100-199"})
        assert ranged.status_code == 206 and ranged.content == whole.content[100:200]


def _scenes(database: str, video_id: str) -> list[tuple[int, str, int]]:
    with psycopg.connect(database) as db:
        rows = db.execute(
            "SELECT idx, status, attempts FROM scenes WHERE job_id = %s ORDER BY idx", [video_id]
        ).fetchall()
    return [tuple(row) for row in rows]


def test_a_postgres_restart_and_a_20_s_stop_mid_job_lose_nothing(app, server, database):
    video_id = app.client.post(
        "/v1/videos", json={"prompt": "One. Two. Three. Four. Five.", "seconds": 10, "seed": 7}
    ).json()["id"]
    app.poll(video_id, lambda video: any(scene["status"] == "completed" for scene in video["scenes"]))
    events = httpx.Client(base_url=app.url, timeout=httpx.Timeout(10, read=60))
    with events.stream("GET", f"/v1/videos/{video_id}/events") as stream:
        lines = stream.iter_lines()
        assert next(lines).startswith("retry:")

        assert app.client.get(f"/v1/videos/{video_id}").json()["status"] == "in_progress"  # the premise
        server.restart()  # every connection of every replica is cut at once
        server.stop()
        stopped = time.monotonic()
        refused = []
        while time.monotonic() - stopped < 20:
            asked = time.monotonic()
            polled = app.client.get(f"/v1/videos/{video_id}")
            created = app.client.post("/v1/videos", json={"prompt": "Not now.", "seconds": 2})
            assert time.monotonic() - asked < 15  # answered, not left hanging
            refused += [polled, created]
            time.sleep(1)
        server.start()

        for answer in refused:
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"]["code"] == "store_unavailable"
            assert int(answer.headers["retry-after"]) > 0
        # The stream stayed open through the outage and goes on to the end.
        statuses = [json.loads(line[5:])["status"] for line in lines if line.startswith("data:")]
        assert statuses[-1] in ("completed", "failed")  # the end; which one is checked below

    video = app.wait(video_id, timeout_s=120)
    assert video["status"] == "completed", video["error"]
    scenes = _scenes(database, video_id)
    assert len(scenes) >= 2 and all(status == "completed" for _, status, _ in scenes)
    assert all(attempts == 1 for _, _, attempts in scenes), scenes  # no scene made twice
    assert _stored(database, [video_id])[video_id] == ("completed", 1)  # the job was never restarted
    # The store answers again on every replica, and takes new jobs.
    again = app.client.post("/v1/videos", json={"prompt": "After the outage.", "seconds": 2}).json()
    assert app.wait(again["id"])["status"] == "completed"


@pytest.mark.parametrize("fault", ["down", "hang"])
def test_an_object_store_down_or_hung_for_20_s_mid_job_loses_nothing(app, database, s3_proxy, fault):
    done = app.client.post("/v1/videos", json={"prompt": "Kept.", "seconds": 2}).json()["id"]
    assert app.wait(done)["status"] == "completed"
    video_id = app.client.post(
        "/v1/videos", json={"prompt": "One. Two. Three. Four. Five.", "seconds": 10, "seed": 11}
    ).json()["id"]
    app.poll(video_id, lambda video: any(scene["status"] == "completed" for scene in video["scenes"]))
    assert app.client.get(f"/v1/videos/{video_id}").json()["status"] == "in_progress"  # the premise

    getattr(s3_proxy, fault)()  # refuse every connection, or accept and never answer
    started = time.monotonic()
    downloads = []
    try:
        while time.monotonic() - started < 20:
            asked = time.monotonic()
            downloads.append(app.client.get(f"/v1/videos/{done}/content"))
            assert time.monotonic() - asked < 15  # answered, not left hanging
            # Polls read the job store, not the bucket: they go on as before.
            assert app.client.get(f"/v1/videos/{video_id}").status_code == 200
            time.sleep(1)
    finally:
        s3_proxy.restore()
    restored = time.monotonic()

    for answer in downloads:
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["code"] == "storage_unavailable"
        assert int(answer.headers["retry-after"]) > 0
    video = app.wait(video_id, timeout_s=120)
    # As a client told to come back after Retry-After does (the ingress refuses for a moment without asking).
    time.sleep(max(0.0, int(downloads[-1].headers["retry-after"]) - (time.monotonic() - restored)))
    assert video["status"] == "completed", video["error"]
    scenes = _scenes(database, video_id)
    assert len(scenes) >= 2 and all(attempts == 1 for _, _, attempts in scenes), scenes  # none made twice
    assert _stored(database, [video_id])[video_id] == ("completed", 1)
    whole = app.client.get(f"/v1/videos/{video_id}/content")
    assert whole.status_code == 200 and whole.content[4:8] == b"ftyp"
    assert app.client.get(f"/v1/videos/{done}/content").status_code == 200
