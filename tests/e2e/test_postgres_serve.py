"""The service on a PostgreSQL job store and an S3 bucket through real Ray Serve: two ingress replicas share
them, and one of them killed while jobs run neither stops nor restarts any job. No folder is shared: every
replica stages its files in a scratch folder of its own."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest

from tests.fixtures.serve import REPLICAS, Deployed, cpu_profile, deployed
from tests.support.postgres import new_database
from tests.support.s3 import new_bucket

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

APP = "pg"


@pytest.fixture(scope="module")
def database(postgres_server) -> str:
    return new_database(postgres_server)


@pytest.fixture(scope="module")
def bucket(s3_server) -> str:
    return new_bucket(s3_server) + "/artifacts"


@pytest.fixture(scope="module")
def app(serve_cluster, database, bucket, s3_server, tmp_path_factory) -> Iterator[Deployed]:
    config = cpu_profile(tmp_path_factory.mktemp("unused"))
    config.storage = config.storage.model_validate(
        {"root": bucket, "database": database, "scratch": str(tmp_path_factory.mktemp("scratch"))}
    )
    options = {"VideoAPI": {"num_replicas": 2, **REPLICAS["VideoAPI"]}}
    with deployed(serve_cluster, config, APP, options, env=s3_server) as app:
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
