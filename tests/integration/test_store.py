"""The job store's suite, run on both databases: SQLite (a file) and PostgreSQL (a real server started for
the session). Each semantic the service relies on is asserted the same way on both: list pages, one
conditional UPDATE per lease, idempotency by a unique key, counts by status, a job ending once, the webhook
outbox, and stores written by an earlier version of the schema."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from serve_app.store.jobs import IdempotencyConflict, JobRow, JobStore, QueueFull, SceneRow, now

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a store lives: a SQLite file, or a fresh database on the session's PostgreSQL server."""
    if request.param == "sqlite":
        return str(tmp_path / "jobs.db")
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def store(target: str):
    store = JobStore(target)
    yield store
    store.close()


def _job(number: int, **changes) -> JobRow:
    return JobRow(
        id=f"video_{number:032d}",
        status="queued",
        model="svd-xt",
        prompt=f"Story {number}.",
        size="64x64",
        seconds="2",
        request_json="{}",
        created_at=now(),
        **changes,
    )


def _scenes(job_id: str, count: int) -> list[SceneRow]:
    # Inserted in reverse so that the order must come from the query, not from insertion.
    return [
        SceneRow(job_id, idx, f"{job_id} scene {idx}", "a lake", 2.0, 127) for idx in reversed(range(count))
    ]


def _drop_columns(target: str, table: str, columns: list[str]) -> None:
    """Take columns away, as a store written before they existed lacks them."""
    if target.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(target, autocommit=True) as db:
            for column in columns:
                db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        return
    with sqlite3.connect(target) as db:
        for column in columns:
            db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")


def test_a_list_page_reads_every_jobs_scenes_with_one_query(store):
    jobs = [store.create(_job(number)) for number in range(4)]
    for number, job in enumerate(jobs):
        store.set_scenes(job.id, _scenes(job.id, count=number))  # job 0 has none

    statements: list[str] = []
    store._db.trace = statements.append
    page, has_more = store.page(after=None, limit=3, order="desc")
    store._db.trace = None

    assert [job.id for job in page] == [jobs[3].id, jobs[2].id, jobs[1].id] and has_more
    for job in page:
        assert [scene.idx for scene in job.scenes] == list(range(len(job.scenes)))
        assert all(scene.job_id == job.id and scene.caption.startswith(job.id) for scene in job.scenes)
    assert [len(job.scenes) for job in page] == [3, 2, 1]
    assert sum("FROM scenes" in statement for statement in statements) == 1

    rest, has_more = store.page(after=jobs[1].id, limit=3, order="desc")
    assert [job.id for job in rest] == [jobs[0].id] and rest[0].scenes == [] and not has_more
    oldest, has_more = store.page(after=None, limit=2, order="asc")
    assert [job.id for job in oldest] == [jobs[0].id, jobs[1].id] and has_more
    assert store.get(jobs[2].id).scenes == page[1].scenes
    with pytest.raises(KeyError):
        store.page(after="video_unknown", limit=3, order="desc")


def test_a_store_from_before_job_leases_gains_their_columns_and_keeps_its_jobs(target):
    store = JobStore(target)
    job = store.create(_job(7))
    store.set_scenes(job.id, _scenes(job.id, count=2))
    store.update(job.id, status="completed", progress=100)
    store.close()
    # The first released schema had no leases: take their columns away again.
    _drop_columns(target, "jobs", ["runner_id", "lease_until"])

    reopened = JobStore(target)

    kept = reopened.get(job.id)
    assert (kept.status, kept.progress, [s.idx for s in kept.scenes]) == ("completed", 100, [0, 1])
    assert (kept.runner_id, kept.lease_until) == (None, None)
    fresh = reopened.create(_job(8))
    assert reopened.claimable() == [fresh.id]
    assert reopened.claim(fresh.id, "runner-1", lease_s=30)  # the lease columns work
    assert reopened.claimable() == [] and not reopened.claim(fresh.id, "runner-2", lease_s=30)
    reopened.close()
    JobStore(target).close()  # opening an up-to-date store again changes nothing


def test_an_idempotency_key_is_unique_and_names_the_job_it_belongs_to(store):
    first = store.create(_job(1, idempotency_key="key-1", request_hash="a"))

    with pytest.raises(IdempotencyConflict) as conflict:
        store.create(_job(2, idempotency_key="key-1", request_hash="b"))

    assert conflict.value.existing.id == first.id
    assert store.get_by_key("key-1").id == first.id and store.get(_job(2).id) is None
    store.create(_job(3))  # no key: never a conflict
    store.create(_job(4))
    assert store.counts() == {"queued": 3}


def test_of_runners_racing_for_a_lease_exactly_one_wins_and_an_expired_lease_is_taken_over(target, store):
    # Each runner has a store of its own (its own connection), as JobRunner replicas in separate processes
    # do: a lock inside one store would serialise the claims by itself, so only the database can decide.
    runners, rounds = 6, 8
    racers = [JobStore(target) for _ in range(runners)]
    barrier = threading.Barrier(runners)

    def race(racer: JobStore, runner: str, job_id: str, won: list[str], errors: list[BaseException]) -> None:
        barrier.wait()
        try:
            if racer.claim(job_id, runner, lease_s=30):
                won.append(runner)
        except BaseException as exc:  # noqa: BLE001 - shown in the assertion below
            errors.append(exc)

    try:
        for number in range(rounds):
            job = store.create(_job(number))
            won: list[str] = []
            errors: list[BaseException] = []
            threads = [
                threading.Thread(target=race, args=(racer, f"runner-{i}", job.id, won, errors))
                for i, racer in enumerate(racers)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert errors == [] and len(won) == 1, f"round {number}: {won} won, {errors}"
            assert store.is_running(job.id, won[0])
    finally:
        for racer in racers:
            racer.close()

    assert store.renew(job.id, won[0], lease_s=30)
    assert not store.renew(job.id, "runner-x", lease_s=30)
    store.update(job.id, lease_until=0.0)  # the winner died: its lease ran out
    assert store.claimable() == [job.id]
    assert store.claim(job.id, "runner-x", lease_s=30) and not store.is_running(job.id, won[0])
    store.release(job.id, "runner-x")
    assert store.claimable() == [job.id]


def test_a_job_ends_once_and_its_unfinished_scenes_end_with_it(store):
    job = store.create(_job(1, webhook_url="https://example.com/hook"))
    store.set_scenes(job.id, _scenes(job.id, count=2))
    store.update_scene(job.id, 0, status="completed", progress=100)

    assert store.finish(job.id, "cancelled", retention_s=60)
    assert not store.finish(job.id, "completed", retention_s=60)  # the cancel stands
    store.advance(job.id, progress=50)  # a runner's late write changes nothing
    store.update_scene(job.id, 1, progress=80)

    ended = store.get(job.id)
    assert (ended.status, ended.progress) == ("cancelled", 0)
    assert [(s.status, s.progress) for s in ended.scenes] == [("completed", 100), ("cancelled", 0)]
    assert ended.expires_at == ended.completed_at + 60
    assert store.expired(before=ended.expires_at + 1, retention_s=60) == [job.id]
    assert store.expired(before=ended.expires_at, retention_s=60) == []


def test_the_webhook_outbox_hands_each_event_to_one_runner_until_it_is_delivered(store):
    job = store.create(_job(1, webhook_url="https://example.com/hook"))
    silent = store.create(_job(2))
    store.finish(job.id, "completed", retention_s=60)
    store.finish(silent.id, "failed", retention_s=60)  # no webhook_url: no event

    [event] = store.due_webhooks(hold_s=30)
    assert (event.job_id, event.event, event.status) == (job.id, "video.completed", "pending")
    assert store.due_webhooks(hold_s=30) == []  # held for the runner that took it
    store.webhook_attempted(event.id, "HTTP 500", retry_in=0.0)
    [again] = store.due_webhooks(hold_s=30)
    assert (again.id, again.attempts, again.last_error) == (event.id, 1, "HTTP 500")
    store.webhook_attempted(event.id, None, retry_in=None)

    state = store.webhook_states([job.id, silent.id])
    assert list(state) == [job.id]
    assert (state[job.id].status, state[job.id].attempts, state[job.id].last_error) == (
        "delivered",
        2,
        "HTTP 500",
    )
    assert store.prune_webhooks(before=now() + 1) == 1


def test_queue_positions_counts_and_deletes(store):
    jobs = [store.create(_job(number)) for number in range(4)]
    store.update(jobs[1].id, status="in_progress", started_at=now())

    assert store.queue_positions([job.id for job in jobs]) == {jobs[0].id: 0, jobs[2].id: 1, jobs[3].id: 2}
    assert store.counts() == {"queued": 3, "in_progress": 1}
    assert store.existing([jobs[0].id, "video_gone", jobs[3].id]) == {jobs[0].id, jobs[3].id}

    store.set_scenes(jobs[0].id, _scenes(jobs[0].id, count=3))
    assert store.delete(jobs[0].id) and not store.delete(jobs[0].id)
    assert store.get(jobs[0].id) is None and store.counts() == {"queued": 2, "in_progress": 1}
    store.update(jobs[1].id, status="completed", completed_at=now() + 4)
    assert store.pace() == (4.0, 0)


def test_a_bad_postgresql_address_is_a_clear_error_without_the_password():
    with pytest.raises(ConnectionError, match=r"storage.database: .*user:\*\*\*@127.0.0.1:1/") as error:
        JobStore("postgresql://user:secret@127.0.0.1:1/storyreel?connect_timeout=1")
    assert "secret" not in str(error.value)


def test_storage_database_takes_a_sqlite_path_or_a_postgresql_url():
    from pydantic import ValidationError

    from serve_app.config import StorageConfig

    assert StorageConfig(root="/data").database_url == "/data/jobs.sqlite3"
    url = "postgresql://storyreel@db:5432/storyreel"
    assert StorageConfig(database=url).database_url == url
    with pytest.raises(ValueError, match="PostgreSQL URL"):
        StorageConfig(database=url).database_path  # noqa: B018 - the property raises
    with pytest.raises(ValidationError, match=r"storage.database=mysql://\.\.\.: only postgresql://"):
        StorageConfig(database="mysql://root@db/storyreel")


@pytest.mark.slow
def test_on_postgresql_a_write_of_one_process_reaches_the_listeners_of_another(postgres_url):
    import queue

    writer, reader = JobStore(postgres_url), JobStore(postgres_url)  # as a runner and an ingress replica
    heard: queue.Queue[str] = queue.Queue()
    reader.add_listener(heard.put)
    try:
        job = writer.create(_job(1))
        writer.update(job.id, progress=10)

        assert heard.get(timeout=10) == job.id
        assert heard.get(timeout=10) == job.id  # one notice per write
    finally:
        writer.close()
        reader.close()


@pytest.mark.slow
def test_on_postgresql_a_write_that_does_not_commit_is_not_announced(postgres_url):
    import queue

    writer, reader = JobStore(postgres_url), JobStore(postgres_url)
    heard: queue.Queue[str] = queue.Queue()
    reader.add_listener(heard.put)
    try:
        first = writer.create(_job(1, idempotency_key="same"))
        with pytest.raises(IdempotencyConflict):  # rolled back: its NOTIFY went with it
            writer.create(_job(2, idempotency_key="same"))
        writer.update(first.id, progress=10)

        assert [heard.get(timeout=10), heard.get(timeout=10)] == [first.id, first.id]
        with pytest.raises(queue.Empty):
            heard.get(timeout=1)
    finally:
        writer.close()
        reader.close()


@pytest.mark.slow
def test_on_sqlite_a_write_of_one_process_reaches_the_listeners_of_another(tmp_path):
    import queue

    # Two stores on one file, each with its own connection, as the ingress and the runner have.
    path = tmp_path / "jobs.sqlite3"
    writer, reader = JobStore(path), JobStore(path)
    heard: queue.Queue[str] = queue.Queue()
    reader.add_listener(heard.put)
    try:
        first = writer.create(_job(1, idempotency_key="same"))
        with pytest.raises(IdempotencyConflict):  # rolled back: its announcement went with it
            writer.create(_job(2, idempotency_key="same"))
        assert heard.get(timeout=10) == first.id
        writer.update(first.id, progress=10)
        assert heard.get(timeout=10) == first.id
        reader.update(first.id, progress=20)  # the reader's own write: its store tells it once, at once
        assert heard.get(timeout=1) == first.id
        with pytest.raises(queue.Empty):
            heard.get(timeout=1)
    finally:
        writer.close()
        reader.close()


def test_an_event_stream_on_sqlite_wakes_for_another_processes_write_without_polling(
    local_config, monkeypatch
):
    _stream_wakes_for_a_write_of_another_store(local_config, local_config.storage.database_path, monkeypatch)


@pytest.mark.slow
def test_an_event_stream_wakes_for_another_processes_write_without_polling(
    local_config, postgres_url, monkeypatch
):
    _stream_wakes_for_a_write_of_another_store(local_config, postgres_url, monkeypatch)


def _stream_wakes_for_a_write_of_another_store(local_config, database, monkeypatch):
    import asyncio
    import json

    from serve_app.videos import events as event_hub
    from tests.fixtures.jobs import job_row, service_with

    # Streams poll every minute here: one that sees the write within seconds was woken by the notice.
    monkeypatch.setattr(event_hub, "EVENT_POLL_S", 60.0)
    local_config.storage.database = str(database)
    service = service_with(local_config)
    runner_side = JobStore(database)  # the JobRunner's store, in another process in the service
    video_id = "video_" + "a" * 32
    runner_side.create(job_row(video_id, "queued"))

    def data(event: str) -> dict:
        return json.loads(event.split("data: ", 1)[1])

    async def follow() -> tuple[dict, dict]:
        stream = service.events(video_id)
        try:
            assert (await anext(stream)).startswith("retry:")
            first = data(await anext(stream))
            runner_side.update(video_id, status="in_progress", progress=40)
            second = data(await asyncio.wait_for(anext(stream), timeout=10))
            return first, second
        finally:
            await stream.aclose()

    try:
        first, second = asyncio.run(follow())
    finally:
        runner_side.close()
        service.store.close()

    assert (first["status"], first["progress"]) == ("queued", 0)
    assert (second["status"], second["progress"]) == ("in_progress", 40)


def test_concurrent_creates_from_several_replicas_stop_exactly_at_the_queue_cap(target):
    # Several stores, each with its own connection, as separate ingress replicas (processes) have: a lock
    # inside one store would not serialise them; only the database can.
    cap, replicas, creates = 64, 8, 40
    first = JobStore(target)
    stores = [first] + [JobStore(target) for _ in range(replicas - 1)]
    try:
        for number in range(cap - 1):
            first.create(_job(number))
        barrier = threading.Barrier(creates)
        outcomes: list[str] = []

        def create(number: int) -> None:
            barrier.wait()
            try:
                stores[number % replicas].create(_job(1000 + number), max_queued=cap)
                outcomes.append("created")
            except QueueFull as full:
                outcomes.append(f"refused at {full.queued}")
            except Exception as exc:  # noqa: BLE001 - shown in the assertion below
                outcomes.append(repr(exc))

        threads = [threading.Thread(target=create, args=(number,)) for number in range(creates)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert sorted(outcomes) == ["created"] + [f"refused at {cap}"] * (creates - 1)
        assert first.counts() == {"queued": cap}
    finally:
        for store in stores:
            store.close()


def test_the_queue_cap_counts_only_queued_jobs_and_a_key_already_used_is_its_replay(store):
    store.create(_job(1, idempotency_key="retry", request_hash="a"))
    store.create(_job(2))
    store.update(_job(2).id, status="in_progress")

    with pytest.raises(QueueFull) as full:
        store.create(_job(3), max_queued=1)
    # A retry whose first try made the job that filled the queue gets that job, not a refusal.
    with pytest.raises(IdempotencyConflict) as conflict:
        store.create(_job(4, idempotency_key="retry", request_hash="a"), max_queued=1)
    store.create(_job(5), max_queued=2)

    assert full.value.queued == 1 and conflict.value.existing.id == _job(1).id
    assert store.get(_job(3).id) is None and store.get(_job(4).id) is None
    assert store.counts() == {"queued": 2, "in_progress": 1}


def test_on_postgresql_every_connection_busy_is_refused_as_unavailable_but_not_taken_for_an_outage(
    postgres_url,
):
    from core.errors import StoreUnavailable
    from serve_app.store.databases import WAIT_S, open_database

    database = open_database(postgres_url, pool_size=1)
    holding, release = threading.Event(), threading.Event()

    def hold_the_only_connection() -> None:
        with database.read():
            holding.set()
            release.wait(timeout=30)

    holder = threading.Thread(target=hold_the_only_connection)
    holder.start()
    try:
        assert holding.wait(timeout=10)
        with pytest.raises(StoreUnavailable), database.read():  # waits WAIT_S for a connection, then 503
            pass
    finally:
        release.set()
        holder.join()
    # Overloaded, not away: the next call is not refused unasked, and finds the connection free.
    with database.read() as session:
        assert session.execute("SELECT 1 AS one").fetchone()["one"] == 1
    database.close()
    assert WAIT_S <= 5  # a request is answered, not left hanging
