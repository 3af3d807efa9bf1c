"""The job store: jobs and their scenes in SQLite (WAL, the default) or PostgreSQL, through one SQL code path.

Every query is plain SQL with named parameters, written once; `serve_app.store.databases` runs it on either
database. The semantics are the same on both: a lease is claimed by one conditional UPDATE, an idempotency
key is a unique column, pages follow the creation sequence, counts are by status.

A column added to SCHEMA later must be nullable or have a DEFAULT: stores written before it gain it with
``ALTER TABLE ... ADD COLUMN`` when they are opened.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from core.status import TERMINAL, JobStatus, SceneStatus, WebhookStatus
from serve_app.store import outbox
from serve_app.store.databases import Database, Session, open_database

logger = logging.getLogger("ray.serve")

# Every status in the SQL is an enum's own text (core.status), never spelled by hand.
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    progress INTEGER NOT NULL DEFAULT 0,
    model TEXT NOT NULL,
    prompt TEXT NOT NULL,
    size TEXT NOT NULL,
    seconds TEXT NOT NULL,
    request_json TEXT NOT NULL,
    title TEXT,
    script_backend TEXT,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    completed_at INTEGER,
    expires_at INTEGER,
    error_code TEXT,
    error_message TEXT,
    idempotency_key TEXT UNIQUE,
    request_hash TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    runner_id TEXT,
    lease_until REAL,
    remixed_from_video_id TEXT,
    extended_from_video_id TEXT,
    inherited_json TEXT,
    webhook_url TEXT,
    has_audio INTEGER NOT NULL DEFAULT 0,
    notices_json TEXT,
    timings_json TEXT
);
CREATE TABLE IF NOT EXISTS scenes (
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    caption TEXT NOT NULL,
    visual_prompt TEXT NOT NULL,
    duration_s REAL NOT NULL,
    motion_bucket_id INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT '{SceneStatus.PENDING}',
    progress INTEGER NOT NULL DEFAULT 0,
    generator TEXT,
    keyframe_generator TEXT,
    fallback_reason TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    batch_size INTEGER,
    clip_path TEXT,
    segments INTEGER NOT NULL DEFAULT 1,
    segments_done INTEGER NOT NULL DEFAULT 0,
    fingerprint TEXT,
    source_video_id TEXT,
    narration_json TEXT,
    PRIMARY KEY (job_id, idx)
);
CREATE TABLE IF NOT EXISTS webhooks (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    url TEXT NOT NULL,
    event TEXT NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT '{WebhookStatus.PENDING}',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    last_error TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs(status);
CREATE INDEX IF NOT EXISTS webhooks_due ON webhooks(status, next_at);
"""


@dataclass
class SceneRow:
    job_id: str
    idx: int
    caption: str
    visual_prompt: str
    duration_s: float
    motion_bucket_id: int
    status: SceneStatus = SceneStatus.PENDING
    progress: int = 0
    generator: str | None = None
    keyframe_generator: str | None = None
    fallback_reason: str | None = None
    attempts: int = 0
    batch_size: int | None = None
    clip_path: str | None = None
    segments: int = 1
    segments_done: int = 0
    fingerprint: str | None = None
    source_video_id: str | None = None
    narration_json: str | None = None  # engines.narrator.Narration's fields, when the scene is narrated

    @property
    def narration(self) -> dict[str, Any] | None:
        return json.loads(self.narration_json) if self.narration_json else None


@dataclass
class JobRow:
    id: str
    status: JobStatus
    model: str
    prompt: str
    size: str
    seconds: str
    request_json: str
    created_at: int
    progress: int = 0
    title: str | None = None
    script_backend: str | None = None
    started_at: int | None = None
    completed_at: int | None = None
    expires_at: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None
    attempts: int = 0
    runner_id: str | None = None
    lease_until: float | None = None
    remixed_from_video_id: str | None = None
    extended_from_video_id: str | None = None
    inherited_json: str | None = None
    webhook_url: str | None = None
    has_audio: int = 0  # set when it completes with an audio track
    notices_json: str | None = None  # [{"code", "message"}]: where the video differs from what was asked
    # {"wall": s, "stages": {stage: s}}: how long the run that completed it took, and each stage in it
    timings_json: str | None = None
    scenes: list[SceneRow] = field(default_factory=list)

    @property
    def notices(self) -> list[dict[str, str]]:
        return json.loads(self.notices_json) if self.notices_json else []

    @property
    def timings(self) -> dict[str, Any]:
        return json.loads(self.timings_json) if self.timings_json else {}

    @property
    def request(self) -> dict[str, Any]:
        return json.loads(self.request_json)

    @property
    def inherited(self) -> list[SceneRow]:
        """The scenes of the video a remix or an extension starts from (their clips are ``inherited_NNN``)."""
        if not self.inherited_json:
            return []
        # Each as `dataclasses.asdict` wrote it when the source ended: columns added since take their default.
        scenes = json.loads(self.inherited_json)
        return [SceneRow(**scene | {"status": SceneStatus(scene["status"])}) for scene in scenes]


@dataclass
class WebhookRow:
    """One event in the webhook outbox: sent until a 2xx answer, with the same id each time."""

    id: str
    job_id: str
    url: str
    event: str
    body: str
    status: WebhookStatus
    attempts: int
    next_at: float
    last_error: str | None
    created_at: int


_WEBHOOK_COLUMNS = tuple(f.name for f in fields(WebhookRow))
_JOB_COLUMNS = tuple(f.name for f in fields(JobRow) if f.name != "scenes")
_SCENE_COLUMNS = tuple(f.name for f in fields(SceneRow))
_Row = TypeVar("_Row", JobRow, SceneRow, WebhookRow)


def _read(row_type: type[_Row], record: Any, status: type[StrEnum]) -> _Row:
    """A row of ``row_type`` (without a job's scenes) from a database record, its status text read as the
    ``status`` enum."""
    columns = (f.name for f in fields(row_type) if f.name != "scenes")
    return row_type(**{name: record[name] for name in columns} | {"status": status(record["status"])})


class IdempotencyConflict(Exception):
    """A job already exists under this idempotency key."""

    def __init__(self, existing: JobRow):
        self.existing = existing


class QueueFull(Exception):
    """``queued`` jobs are waiting already: a create that would pass the cap is refused."""

    def __init__(self, queued: int):
        super().__init__(f"{queued} jobs are queued")
        self.queued = queued


class JobStore:
    """Jobs and scenes, safe to share between the threads and tasks of one process (and, on PostgreSQL,
    between processes and nodes).

    Args:
        target: the SQLite file (its folder is created; ``":memory:"`` for a throwaway store), or a
            ``postgresql://`` URL (see `serve_app.store.databases`).
    """

    def __init__(self, target: str | Path) -> None:
        self._db: Database = open_database(target)
        self.listeners: list[Callable[[str], None]] = []  # see `add_listener`
        self._db.create_tables(SCHEMA)
        self._add_new_columns()

    def close(self) -> None:
        self._db.close()

    def add_listener(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(job_id)`` after every write: this process's, on the writing thread, and every
        other process's too, from a listening thread (a NOTIFY on PostgreSQL, an announcement row on
        SQLite). Lets an event stream wake at once instead of at its next poll."""
        if not self.listeners:
            self._db.subscribe(self._tell)
        self.listeners.append(listener)

    # -- jobs -----------------------------------------------------------------------------------

    def create(self, job: JobRow, max_queued: int | None = None) -> JobRow:
        """Insert ``job``.

        Args:
            job: the new job's row.
            max_queued: refuse the job when this many are queued already; None (the default): no cap. The
                count and the insert are one transaction that the creates of every replica take one at a
                time, so creates racing for the last place cannot all take it.

        Raises:
            IdempotencyConflict: its idempotency key is taken (also when the queue is full: a retry gets
                the job its first try made).
            QueueFull: ``max_queued`` jobs are queued.
        """
        values = {name: getattr(job, name) for name in _JOB_COLUMNS}
        try:
            with self._db.write(announce=job.id, lock="create") as db:
                if max_queued is not None:
                    _check_queue(db, max_queued, job.idempotency_key)
                db.execute(_insert("jobs", _JOB_COLUMNS), values)
        except self._db.integrity_error:
            existing = self.get_by_key(job.idempotency_key) if job.idempotency_key else None
            if existing is None:
                raise
            raise IdempotencyConflict(existing) from None
        self._tell(job.id)
        return job

    def get(self, job_id: str) -> JobRow | None:
        with self._db.read() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = :id", {"id": job_id}).fetchone()
            return _with_scenes(db, [row])[0] if row else None

    def get_by_key(self, key: str) -> JobRow | None:
        """The job created under idempotency key ``key``, if any."""
        with self._db.read() as db:
            row = db.execute("SELECT * FROM jobs WHERE idempotency_key = :key", {"key": key}).fetchone()
            return _with_scenes(db, [row])[0] if row else None

    def page(self, after: str | None, limit: int, order: str) -> tuple[list[JobRow], bool]:
        """Jobs ordered by creation (``order`` 'asc' or 'desc'), starting after job ``after``.

        Returns the page and whether more follow. Raises KeyError if ``after`` is unknown.
        """
        direction, compare = ("ASC", ">") if order == "asc" else ("DESC", "<")
        with self._db.read() as db:
            params: dict[str, Any] = {"limit": limit + 1}
            where = ""
            if after is not None:
                cursor = db.execute("SELECT seq FROM jobs WHERE id = :id", {"id": after}).fetchone()
                if cursor is None:
                    raise KeyError(after)
                where, params["seq"] = f"WHERE seq {compare} :seq", cursor["seq"]
            rows = db.execute(
                f"SELECT * FROM jobs {where} ORDER BY seq {direction} LIMIT :limit", params
            ).fetchall()
            jobs = _with_scenes(db, rows[:limit])
        return jobs, len(rows) > limit

    def update(self, job_id: str, **changes: Any) -> None:
        """Set columns of one job."""
        self._update("jobs", _JOB_COLUMNS, changes, "id = :key_id", {"key_id": job_id})
        self._tell(job_id)

    def advance(self, job_id: str, **changes: Any) -> bool:
        """Set columns of an unfinished job: a runner's writes after a cancel or a DELETE (before it stops)
        change nothing. Returns whether the job was there, unfinished, to change."""
        changed = self._update(
            "jobs", _JOB_COLUMNS, changes, f"id = :key_id AND {_UNFINISHED}", {"key_id": job_id}
        )
        self._tell(job_id)
        return changed

    def finish(self, job_id: str, status: JobStatus, retention_s: int, **changes: Any) -> bool:
        """End an unfinished job with ``status`` (completed, failed, cancelled), if it has not ended yet.

        The status is checked in the same statement that writes it, so of a cancel and a job's own end
        racing, exactly one stands. Scenes not completed get the job's status (``completed`` keeps them).
        The job expires ``retention_s`` after it ends, whatever its status. Returns whether it was ended here.
        """
        finished = now()
        changes |= {"status": status, "completed_at": finished, "expires_at": finished + retention_s}
        assignments = _assignments("jobs", _JOB_COLUMNS, changes)
        with self._db.write(announce=job_id) as db:
            ended = (
                db.execute(
                    f"UPDATE jobs SET {assignments} WHERE id = :key_id AND {_UNFINISHED}",
                    {**changes, "key_id": job_id},
                ).rowcount
                == 1
            )
            if ended and status != JobStatus.COMPLETED:
                # A job's end is its unfinished scenes' end too: failed or cancelled alike.
                db.execute(
                    "UPDATE scenes SET status = :status WHERE job_id = :id AND status != :completed",
                    {"status": SceneStatus(status), "id": job_id, "completed": SceneStatus.COMPLETED},
                )
            if ended:
                # In this transaction: a job never ends without its event, nor gets it twice.
                outbox.queue_event(db, job_id, status, finished)
        self._tell(job_id)
        return ended

    # -- webhooks: an outbox in the same database --------------------------------------------------

    def due_webhooks(self, hold_s: float, limit: int = 16) -> list[WebhookRow]:
        """Take up to ``limit`` events due for an attempt, each held ``hold_s`` from other runners: one
        conditional UPDATE per event decides which runner sends it."""
        with self._db.write() as db:
            rows = db.execute(
                "SELECT * FROM webhooks WHERE status = :pending AND next_at <= :now ORDER BY next_at LIMIT :n",
                {"pending": WebhookStatus.PENDING, "now": time.time(), "n": limit},
            ).fetchall()
            taken = []
            for row in rows:
                claimed = db.execute(
                    "UPDATE webhooks SET next_at = :until WHERE id = :id AND status = :pending AND next_at = :seen",
                    {
                        "until": time.time() + hold_s,
                        "id": row["id"],
                        "pending": WebhookStatus.PENDING,
                        "seen": row["next_at"],
                    },
                ).rowcount
                if claimed:
                    taken.append(_read(WebhookRow, row, WebhookStatus))
        return taken

    def webhook_attempted(self, event_id: str, error: str | None, retry_in: float | None) -> None:
        """Record an attempt: delivered (``error`` None; the last failure stays visible), due again in
        ``retry_in`` seconds, or failed for good."""
        if error is None:
            status = WebhookStatus.DELIVERED
        else:
            status = WebhookStatus.PENDING if retry_in is not None else WebhookStatus.FAILED
        with self._db.read() as db:  # an event's job never changes
            row = db.execute("SELECT job_id FROM webhooks WHERE id = :id", {"id": event_id}).fetchone()
        if row is None:
            return
        with self._db.write(announce=row["job_id"]) as db:
            db.execute(
                "UPDATE webhooks SET attempts = attempts + 1, status = :status, last_error = COALESCE(:error, last_error), "
                "next_at = :next WHERE id = :id",
                {"status": status, "error": error, "next": time.time() + (retry_in or 0), "id": event_id},
            )
        self._tell(row["job_id"])

    def webhook_states(self, job_ids: list[str]) -> dict[str, WebhookRow]:
        """The latest webhook event of each of ``job_ids`` that has one."""
        if not job_ids:
            return {}
        names, ids = _id_list(job_ids)
        with self._db.read() as db:
            rows = db.execute(
                f"SELECT * FROM webhooks WHERE job_id IN ({names}) ORDER BY created_at", ids
            ).fetchall()
        return {row["job_id"]: _read(WebhookRow, row, WebhookStatus) for row in rows}

    def prune_webhooks(self, before: int) -> int:
        """Forget delivered and failed events created before ``before``; returns how many."""
        with self._db.write() as db:
            return db.execute(
                "DELETE FROM webhooks WHERE status != :pending AND created_at < :before",
                {"pending": WebhookStatus.PENDING, "before": before},
            ).rowcount

    # -- leases: one runner per job ------------------------------------------------------------

    def claim(self, job_id: str, runner_id: str, lease_s: float) -> bool:
        """Take the lease of an unfinished job if it is free, expired or already ours. True if taken.

        One UPDATE decides: two runners racing for a job cannot both win.
        """
        with self._db.write() as db:
            cursor = db.execute(
                "UPDATE jobs SET runner_id = :runner, lease_until = :until "
                f"WHERE id = :id AND {_UNFINISHED} "
                "AND (runner_id IS NULL OR runner_id = :runner OR lease_until < :now)",
                {"runner": runner_id, "until": time.time() + lease_s, "id": job_id, "now": time.time()},
            )
            return cursor.rowcount == 1

    def renew(self, job_id: str, runner_id: str, lease_s: float) -> bool:
        """Extend our lease; False if another runner has taken the job (we must stop working on it)."""
        with self._db.write() as db:
            cursor = db.execute(
                "UPDATE jobs SET lease_until = :until WHERE id = :id AND runner_id = :runner",
                {"until": time.time() + lease_s, "id": job_id, "runner": runner_id},
            )
            return cursor.rowcount == 1

    def is_running(self, job_id: str, runner_id: str) -> bool:
        """Whether ``job_id`` is unfinished and leased to ``runner_id`` (not cancelled, deleted or taken)."""
        with self._db.read() as db:
            row = db.execute(
                f"SELECT 1 FROM jobs WHERE id = :id AND runner_id = :runner AND {_UNFINISHED}",
                {"id": job_id, "runner": runner_id},
            ).fetchone()
        return row is not None

    def release(self, job_id: str, runner_id: str) -> None:
        with self._db.write() as db:
            db.execute(
                "UPDATE jobs SET runner_id = NULL, lease_until = NULL WHERE id = :id AND runner_id = :runner",
                {"id": job_id, "runner": runner_id},
            )

    def claimable(self) -> list[str]:
        """Unfinished jobs nobody holds a live lease on: queued, or left by a runner that died."""
        with self._db.read() as db:
            rows = db.execute(
                f"SELECT id FROM jobs WHERE {_UNFINISHED} "
                "AND (runner_id IS NULL OR lease_until < :now) ORDER BY seq",
                {"now": time.time()},
            ).fetchall()
        return [row["id"] for row in rows]

    def expired(self, before: int, retention_s: int) -> list[str]:
        """Finished jobs whose ``expires_at`` is before ``before``.

        A job that ended without ``expires_at`` (failed under an earlier version) expires ``retention_s``
        after it ended, or after it was created when that is not known either.
        """
        with self._db.read() as db:
            rows = db.execute(
                f"SELECT id FROM jobs WHERE status IN {_sql_list(TERMINAL)} "
                "AND COALESCE(expires_at, COALESCE(completed_at, created_at) + :retention) < :before",
                {"before": before, "retention": retention_s},
            ).fetchall()
        return [row["id"] for row in rows]

    def existing(self, job_ids: list[str]) -> set[str]:
        """Which of ``job_ids`` have a row."""
        found: set[str] = set()
        with self._db.read() as db:
            for start in range(0, len(job_ids), 500):  # well under SQLite's limit on parameters
                chunk = {f"id{i}": job_id for i, job_id in enumerate(job_ids[start : start + 500])}
                names = ", ".join(":" + name for name in chunk)
                rows = db.execute(f"SELECT id FROM jobs WHERE id IN ({names})", chunk).fetchall()
                found.update(row["id"] for row in rows)
        return found

    def counts(self) -> dict[JobStatus, int]:
        """How many jobs have each status (statuses with none are absent)."""
        with self._db.read() as db:
            rows = db.execute("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status").fetchall()
        return {JobStatus(row["status"]): row["n"] for row in rows}

    def queue_positions(self, job_ids: list[str]) -> dict[str, int]:
        """The 0-based place in the queue of those of ``job_ids`` that are queued: jobs start in creation order."""
        if not job_ids:
            return {}
        names, ids = _id_list(job_ids)
        with self._db.read() as db:
            rows = db.execute(
                "SELECT j.id AS id, (SELECT COUNT(*) FROM jobs q WHERE q.status = :queued AND q.seq < j.seq) AS n "
                f"FROM jobs j WHERE j.status = :queued AND j.id IN ({names})",
                {**ids, "queued": JobStatus.QUEUED},
            ).fetchall()
        return {row["id"]: row["n"] for row in rows}

    def pace(self, recent: int = 20) -> tuple[float | None, int]:
        """How long the last ``recent`` completed jobs ran (their median, in seconds; None before any), and how
        many runners hold a live lease now."""
        with self._db.read() as db:
            runs = db.execute(
                "SELECT completed_at - started_at AS s FROM jobs WHERE status = :completed "
                "AND started_at IS NOT NULL ORDER BY seq DESC LIMIT :n",
                {"completed": JobStatus.COMPLETED, "n": recent},
            ).fetchall()
            runners = db.execute(
                "SELECT COUNT(DISTINCT runner_id) AS n FROM jobs WHERE runner_id IS NOT NULL AND lease_until >= :now",
                {"now": time.time()},
            ).fetchone()["n"]
        seconds = sorted(row["s"] for row in runs)
        return (float(seconds[len(seconds) // 2]) if seconds else None), runners

    def delete(self, job_id: str) -> bool:
        with self._db.write(announce=job_id) as db:
            db.execute("DELETE FROM scenes WHERE job_id = :id", {"id": job_id})
            deleted = db.execute("DELETE FROM jobs WHERE id = :id", {"id": job_id}).rowcount > 0
        self._tell(job_id)
        return deleted

    # -- scenes ---------------------------------------------------------------------------------

    def set_scenes(self, job_id: str, scenes: list[SceneRow]) -> None:
        """Replace the scenes of a job (when its script is written)."""
        with self._db.write(announce=job_id) as db:
            db.execute("DELETE FROM scenes WHERE job_id = :id", {"id": job_id})
            db.executemany(
                _insert("scenes", _SCENE_COLUMNS),
                [{name: getattr(scene, name) for name in _SCENE_COLUMNS} for scene in scenes],
            )
        self._tell(job_id)

    def update_scene(self, job_id: str, idx: int, **changes: Any) -> None:
        """Set columns of a scene of an unfinished job (an ended job's scenes keep how they ended)."""
        self._update(
            "scenes",
            _SCENE_COLUMNS,
            changes,
            f"job_id = :key_id AND idx = :key_idx AND EXISTS (SELECT 1 FROM jobs WHERE id = :key_id AND {_UNFINISHED})",
            {"key_id": job_id, "key_idx": idx},
        )
        self._tell(job_id)

    def record_progress(self, job_id: str, scenes: dict[int, dict[str, Any]], **job_changes: Any) -> None:
        """Set columns of several scenes (``scenes``: changes by scene index) and of their job (the job's
        progress, say) in one transaction: one round trip for what a scene's step changes. Only an unfinished
        job's rows change, as in `update_scene` and `advance`."""
        with self._db.write(announce=job_id) as db:
            for idx, changes in scenes.items():
                db.execute(
                    f"UPDATE scenes SET {_assignments('scenes', _SCENE_COLUMNS, changes)} "
                    f"WHERE job_id = :key_id AND idx = :key_idx AND EXISTS "
                    f"(SELECT 1 FROM jobs WHERE id = :key_id AND {_UNFINISHED})",
                    {**changes, "key_id": job_id, "key_idx": idx},
                )
            if job_changes:
                db.execute(
                    f"UPDATE jobs SET {_assignments('jobs', _JOB_COLUMNS, job_changes)} "
                    f"WHERE id = :key_id AND {_UNFINISHED}",
                    {**job_changes, "key_id": job_id},
                )
        self._tell(job_id)

    # -- internals ------------------------------------------------------------------------------

    def _add_new_columns(self) -> None:
        """Give a store written by an earlier version the columns SCHEMA has gained since (its rows stay)."""
        for table, columns in _schema_columns().items():
            present = self._db.column_names(table)
            for name, definition in columns.items():
                if name not in present and self._db.add_column(table, name, definition):
                    logger.info("job store: added column %s.%s", table, name)

    def _tell(self, job_id: str) -> None:
        """Tell this process's listeners that ``job_id`` changed: after its own writes (which told the other
        processes themselves), and for each write another process announced."""
        for listener in self.listeners:
            listener(job_id)

    def _update(
        self, table: str, columns: tuple[str, ...], changes: dict[str, Any], where: str, keys: dict[str, Any]
    ) -> bool:
        """Whether a row was changed."""
        assignments = _assignments(table, columns, changes)
        with self._db.write(announce=keys["key_id"]) as db:  # a job's row, or one of its scenes
            cursor = db.execute(f"UPDATE {table} SET {assignments} WHERE {where}", {**changes, **keys})
            return cursor.rowcount > 0


def _with_scenes(db: Session, rows: list[Any]) -> list[JobRow]:
    """JobRows for job ``rows``, with their scenes read in one query (a list page is one, not 1 + N)."""
    jobs = {row["id"]: _read(JobRow, row, JobStatus) for row in rows}
    if not jobs:
        return []
    ids = {f"id{i}": job_id for i, job_id in enumerate(jobs)}
    scene_rows = db.execute(
        f"SELECT * FROM scenes WHERE job_id IN ({', '.join(':' + name for name in ids)}) ORDER BY job_id, idx",
        ids,
    ).fetchall()
    for r in scene_rows:
        jobs[r["job_id"]].scenes.append(_read(SceneRow, r, SceneStatus))
    return list(jobs.values())


def _check_queue(db: Session, max_queued: int, key: str | None) -> None:
    """Inside ``create``'s transaction, under its lock: when ``max_queued`` jobs are queued, raise
    IdempotencyConflict if a job holds ``key`` (a retry gets the job its first try made), else QueueFull."""
    queued = db.execute(
        "SELECT COUNT(*) AS n FROM jobs WHERE status = :queued", {"queued": JobStatus.QUEUED}
    ).fetchone()["n"]
    if queued < max_queued:
        return
    if key is not None:
        row = db.execute("SELECT * FROM jobs WHERE idempotency_key = :key", {"key": key}).fetchone()
        if row is not None:
            raise IdempotencyConflict(_with_scenes(db, [row])[0])
    raise QueueFull(queued)


def _schema_columns() -> dict[str, dict[str, str]]:
    """Each table of SCHEMA with its column definitions: {table: {column: "TYPE ..."}}."""
    tables = {}
    for table, body in re.findall(r"CREATE TABLE IF NOT EXISTS (\w+) \((.*?)\n\);", SCHEMA, re.DOTALL):
        lines = (line.strip().rstrip(",") for line in body.strip().splitlines())
        tables[table] = dict(line.split(" ", 1) for line in lines if not line.startswith("PRIMARY KEY"))
    return tables


def _id_list(job_ids: list[str]) -> tuple[str, dict[str, str]]:
    """``IN (...)`` placeholders and their parameters for a page of job ids (at most 500: a list page is 100)."""
    ids = {f"id{i}": job_id for i, job_id in enumerate(job_ids[:500])}
    return ", ".join(":" + name for name in ids), ids


def _assignments(table: str, columns: tuple[str, ...], changes: dict[str, Any]) -> str:
    """The SET clause for ``changes``; only known columns, as names are put into the SQL text."""
    unknown = set(changes) - set(columns)
    if unknown:
        raise ValueError(f"unknown {table} columns: {sorted(unknown)}")
    return ", ".join(f"{name} = :{name}" for name in changes)


def _sql_list(statuses: frozenset[JobStatus]) -> str:
    """``('completed', 'failed')``: a fixed set of statuses written into a statement. Their text is the
    enum's own, never a caller's, so it is safe in SQL; a fragment every method shares needs no parameters."""
    return "(" + ", ".join(f"'{status.value}'" for status in sorted(statuses)) + ")"


# A job that may still change: a runner may take it, and its writes land.
_UNFINISHED = f"status IN {_sql_list(frozenset(JobStatus) - TERMINAL)}"


def now() -> int:
    return int(time.time())


def _insert(table: str, columns: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(':' + c for c in columns)})"
