"""The job store on its own: list pages, and stores written by an earlier version of the schema."""

from __future__ import annotations

import sqlite3

from serve_app.store import JobRow, JobStore, SceneRow, now


def _job(number: int) -> JobRow:
    return JobRow(
        id=f"video_{number:032d}",
        status="queued",
        model="svd-xt",
        prompt=f"Story {number}.",
        size="64x64",
        seconds="2",
        request_json="{}",
        created_at=now(),
    )


def _scenes(job_id: str, count: int) -> list[SceneRow]:
    # Inserted in reverse so that the order must come from the query, not from insertion.
    return [
        SceneRow(job_id, idx, f"{job_id} scene {idx}", "a lake", 2.0, 127) for idx in reversed(range(count))
    ]


def test_a_list_page_reads_every_jobs_scenes_with_one_query(tmp_path):
    store = JobStore(tmp_path / "jobs.db")
    jobs = [store.create(_job(number)) for number in range(4)]
    for number, job in enumerate(jobs):
        store.set_scenes(job.id, _scenes(job.id, count=number))  # job 0 has none

    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    page, has_more = store.page(after=None, limit=3, order="desc")
    store._db.set_trace_callback(None)

    assert [job.id for job in page] == [jobs[3].id, jobs[2].id, jobs[1].id] and has_more
    for job in page:
        assert [scene.idx for scene in job.scenes] == list(range(len(job.scenes)))
        assert all(scene.job_id == job.id and scene.caption.startswith(job.id) for scene in job.scenes)
    assert [len(job.scenes) for job in page] == [3, 2, 1]
    assert sum("FROM scenes" in statement for statement in statements) == 1

    rest, has_more = store.page(after=jobs[1].id, limit=3, order="desc")
    assert [job.id for job in rest] == [jobs[0].id] and rest[0].scenes == [] and not has_more
    assert store.get(jobs[2].id).scenes == page[1].scenes


def test_a_store_from_before_job_leases_gains_their_columns_and_keeps_its_jobs(tmp_path):
    path = tmp_path / "jobs.db"
    store = JobStore(path)
    job = store.create(_job(7))
    store.set_scenes(job.id, _scenes(job.id, count=2))
    store.update(job.id, status="completed", progress=100)
    store.close()
    # The first released schema had no leases: take their columns away again.
    with sqlite3.connect(path) as db:
        db.execute("ALTER TABLE jobs DROP COLUMN runner_id")
        db.execute("ALTER TABLE jobs DROP COLUMN lease_until")

    reopened = JobStore(path)

    kept = reopened.get(job.id)
    assert (kept.status, kept.progress, [s.idx for s in kept.scenes]) == ("completed", 100, [0, 1])
    assert (kept.runner_id, kept.lease_until) == (None, None)
    fresh = reopened.create(_job(8))
    assert reopened.claimable() == [fresh.id]
    assert reopened.claim(fresh.id, "runner-1", lease_s=30)  # the lease columns work
    assert reopened.claimable() == [] and not reopened.claim(fresh.id, "runner-2", lease_s=30)
    JobStore(path).close()  # opening an up-to-date store again changes nothing
