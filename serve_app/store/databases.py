"""The job store's two databases behind one small interface: SQLite (the embedded default) and PostgreSQL.

`JobStore` writes its SQL once, with ``:name`` parameters and SQLite's column types; a `Database` runs it.
`read()` and `write()` hand out a `Session` for one method's statements: for SQLite the one connection under
a lock (``write`` in a transaction), for PostgreSQL a connection from a psycopg pool, so the threads and
tasks of a replica do not queue behind each other, with ``write`` in one transaction.

A write that reads before it writes (count the queue, then insert) must not be interleaved with another
process's doing the same: ``write(lock=...)`` runs such writes one at a time across every process. On
SQLite every write already does (it takes the database's one write lock at its start), on PostgreSQL the
named lock is an advisory lock held until the transaction ends.

A write is also announced to every process, so an event stream on any ingress replica wakes at once for a
runner's write: on PostgreSQL by a NOTIFY on one channel inside the write's own transaction (LISTEN in a
thread); on SQLite by a row in a small table of announcements, written in the same transaction, which a
thread of each listening process reads when ``PRAGMA data_version`` says another connection committed.

What PostgreSQL changes: the parameter style (psycopg's ``%(name)s``), the column types (``BIGINT`` for
SQLite's ``INTEGER``, ``DOUBLE PRECISION`` for ``REAL``, an identity column for ``AUTOINCREMENT``), and the
exception a unique key raises. Credentials may stay out of the URL: libpq reads ``PGPASSWORD``,
``PGPASSFILE``, ``PGUSER`` and the rest from the environment.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from core.errors import StoreUnavailable

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
CHANNEL = "storyreel_jobs"  # NOTIFY channel: the payload is the id of a job that changed
# PostgreSQL advisory lock keys of `write(lock=...)`: one per kind of write that must not interleave.
ADVISORY_LOCKS = {"schema": 7474, "create": 7475}
LISTEN_WAKE_S = 1.0  # how often the listening thread looks up from its wait (to notice `close`)
# PostgreSQL: how long a statement waits for a connection while the server is away before it is refused
# (`StoreUnavailable`, a 503 with Retry-After to a client), and how long one connection attempt may take.
# Store calls block their event loop, so once the server was found away, calls in the next DOWN_S are
# refused at once rather than each waiting WAIT_S: an ingress replica keeps answering during an outage.
WAIT_S = 2.0
DOWN_S = 2.0
RECONNECT_S = 3.0
CONNECT_TIMEOUT_S = 2
# How often a SQLite listener asks whether another connection committed (a read of shared memory, no I/O):
# an event stream hears a runner's write within this, where it polled every `EVENT_POLL_S` before.
SQLITE_LISTEN_S = 0.02
# Announcements a SQLite database keeps: a listener that falls this far behind misses some (the streams'
# poll still catches them).
SQLITE_ANNOUNCEMENTS_KEPT = 1024

logger = logging.getLogger("ray.serve")


def is_postgres(target: str | Path) -> bool:
    """Whether ``target`` names a PostgreSQL database (a URL) rather than a SQLite file."""
    return str(target).startswith(POSTGRES_SCHEMES)


class Session(Protocol):
    """Statements of one store method; rows come back as mappings from column name to value."""

    def execute(self, sql: str, params: Any = ..., /) -> Any: ...

    def executemany(self, sql: str, params: Any, /) -> Any: ...


class Database(Protocol):
    """Where the store's SQL runs (see the module's docstring)."""

    integrity_error: tuple[type[Exception], ...]
    trace: Callable[[str], None] | None  # called with each statement: tests count queries with it

    def read(self) -> Any: ...  # a context manager yielding a Session

    def write(self, announce: str | None = None, lock: str | None = None) -> Any:
        """The same, in one transaction that, on PostgreSQL, also tells every listening process (`subscribe`)
        that job ``announce`` changed. With ``lock`` (a key of ADVISORY_LOCKS) no other write under that
        name, in any process, runs between its statements."""

    def create_tables(self, schema: str) -> None: ...

    def add_column(self, table: str, name: str, definition: str) -> bool: ...

    def column_names(self, table: str) -> set[str]: ...

    def subscribe(self, callback: Callable[[str], None]) -> None: ...  # hear other processes' changes

    def close(self) -> None: ...


def open_database(target: str | Path, pool_size: int = 8) -> Database:
    """The database at ``target``: a ``postgresql://`` URL, or a SQLite file (its folder is created;
    ``":memory:"`` for a throwaway store)."""
    if is_postgres(target):
        return PostgresDatabase(str(target), pool_size)
    return SQLiteDatabase(str(target))


class SQLiteDatabase:
    """One connection in WAL mode, shared by the threads of a process under a lock."""

    integrity_error: tuple[type[Exception], ...] = (sqlite3.IntegrityError,)

    def __init__(self, path: str) -> None:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, timeout=30)
        self._db.row_factory = sqlite3.Row
        # WAL lets readers (status polls) proceed while a runner writes; NORMAL sync is durable across a
        # process crash, which is the failure jobs must survive.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS announcements "
            "(seq INTEGER PRIMARY KEY AUTOINCREMENT, origin TEXT NOT NULL, job_id TEXT NOT NULL)"
        )
        self._db.commit()
        self._path = path
        self._origin = uuid.uuid4().hex  # marks writes through this object: its store tells those itself
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self.trace: Callable[[str], None] | None = None
        self._db.set_trace_callback(lambda sql: self.trace(sql) if self.trace else None)

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._lock:
            yield self._db

    @contextmanager
    def write(self, announce: str | None = None, lock: str | None = None) -> Iterator[Session]:
        """One transaction, holding the database's write lock from its first statement (BEGIN IMMEDIATE),
        so every write runs alone, in every process, and ``lock`` needs nothing more. What a write reads is
        what it writes over: another process's commit cannot land between a count and the insert it decides.
        (Python's default would begin at the first INSERT or UPDATE, after the reads.) With ``announce`` (a
        job id) the write leaves an announcement for other processes' listeners (`subscribe`), committed
        with it or not at all."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")  # waits up to the connection's timeout for another writer
            yield self._db
            if announce is not None:
                seq = self._db.execute(
                    "INSERT INTO announcements (origin, job_id) VALUES (?, ?)", (self._origin, announce)
                ).lastrowid
                if seq is not None and seq % 256 == 0:
                    self._db.execute(
                        "DELETE FROM announcements WHERE seq <= ?", (seq - SQLITE_ANNOUNCEMENTS_KEPT,)
                    )

    def create_tables(self, schema: str) -> None:
        with self._lock, self._db:
            self._db.executescript(schema)

    def add_column(self, table: str, name: str, definition: str) -> bool:
        try:
            with self._lock, self._db:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {definition}")
        except sqlite3.OperationalError:
            if name not in self.column_names(table):  # else another replica added it meanwhile
                raise
            return False
        return True

    def column_names(self, table: str) -> set[str]:
        with self._lock:
            return {column[0] for column in self._db.execute(f"SELECT * FROM {table} LIMIT 0").description}

    def subscribe(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(job_id)`` from a thread of its own for every write another connection announced
        (another process's, in the service; writes through this object its store tells itself), within
        ``SQLITE_LISTEN_S``. A throwaway in-memory database has no other connection."""
        if self._path == ":memory:":
            return
        with self._lock:
            row = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM announcements").fetchone()
        # The thread holds its store weakly: a store dropped without `close` (a test's) stops it too.
        hear = weakref.WeakMethod(callback) if hasattr(callback, "__self__") else lambda: callback
        threading.Thread(
            target=_listen_sqlite,
            args=(self._path, self._origin, self._closed, hear, row[0]),
            name="store-listen",
            daemon=True,
        ).start()

    def close(self) -> None:
        self._closed.set()
        self._db.close()


class PostgresDatabase:
    """A psycopg connection pool; each method's statements on one connection, writes in one transaction."""

    def __init__(self, url: str, pool_size: int) -> None:
        import psycopg
        from psycopg.rows import dict_row
        from psycopg_pool import ConnectionPool

        self.integrity_error: tuple[type[Exception], ...] = (psycopg.IntegrityError,)
        self.trace: Callable[[str], None] | None = None
        try:  # one connection first: a wrong address or password is named at once, not after the pool's wait
            psycopg.connect(url, connect_timeout=10).close()
        except psycopg.Error as exc:
            raise ConnectionError(
                f"storage.database: cannot connect to PostgreSQL at {_redacted(url)}: {exc}"
            ) from None
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            # Autocommit: a read is one statement, and `write` opens its own transaction.
            kwargs={"autocommit": True, "row_factory": dict_row, "connect_timeout": CONNECT_TIMEOUT_S},
            # A connection the server dropped (a restart, a failover) is replaced before it is handed out,
            # so the first requests after an outage do not fail on the old connections.
            check=ConnectionPool.check_connection,
            # While the server is away a request waits this long for a connection, then is refused.
            timeout=WAIT_S,
            # The pool's own reconnect backs off (1, 2, 4, 8 s...): cut short, it gives up within seconds,
            # and the next request's wait starts a fresh attempt, so a server back after an outage of any
            # length is used within about 2 s.
            reconnect_timeout=RECONNECT_S,
            open=False,
        )
        self._pool.open(wait=True, timeout=30)
        self._url = url
        self._closed = threading.Event()
        self._listener: threading.Thread | None = None
        self._down_until = 0.0  # while `time.monotonic()` is below it, calls are refused without waiting

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._reachable(), self._pool.connection() as connection:
            yield _PostgresSession(connection, self)

    @contextmanager
    def write(self, announce: str | None = None, lock: str | None = None) -> Iterator[Session]:
        """One transaction. With ``announce`` (a job id) it ends with a NOTIFY, which PostgreSQL delivers at
        the commit, only if the write commits: an event stream on any ingress replica wakes at once for a
        runner's write, and the announcement costs no round trip of its own.

        With ``lock`` it first takes that advisory lock, held until the commit: writes under the same name
        run one at a time, on every replica. Other writes go on beside them (a table lock would stop the
        runners' updates too). Each statement after the lock reads what was committed before it, in READ
        COMMITTED, so it sees the write of whoever held the lock last."""
        with self._reachable(), self._pool.connection() as connection, connection.transaction():
            session = _PostgresSession(connection, self)
            if lock is not None:
                session.execute("SELECT pg_advisory_xact_lock(:key)", {"key": ADVISORY_LOCKS[lock]})
            yield session
            if announce is not None:
                session.execute(
                    "SELECT pg_notify(:channel, :job_id)", {"channel": CHANNEL, "job_id": announce}
                )

    @contextmanager
    def _reachable(self) -> Iterator[None]:
        """Name a lost server (no connection within ``WAIT_S``, or one that broke mid-statement, the
        transaction then rolled back) as `StoreUnavailable`."""
        import psycopg
        from psycopg_pool import PoolTimeout

        if time.monotonic() < self._down_until:
            raise StoreUnavailable("the job store is unreachable; try again shortly")
        try:
            yield
        except (psycopg.OperationalError, PoolTimeout) as exc:
            # Every connection busy is an overload, not an outage: the next call may find one free.
            busy = isinstance(exc, PoolTimeout) and self._pool.get_stats()["pool_size"] >= self._pool.max_size
            if not busy:
                self._down_until = time.monotonic() + DOWN_S
            raise StoreUnavailable(
                f"the job store is unreachable ({type(exc).__name__}); try again shortly"
            ) from exc

    def create_tables(self, schema: str) -> None:
        # One transaction, under a lock: replicas starting together create the tables once.
        with self.write(lock="schema") as session:
            for statement in postgres_schema(schema).split(";"):
                if statement.strip():
                    session.execute(statement)

    def add_column(self, table: str, name: str, definition: str) -> bool:
        present = name in self.column_names(table)
        with self.write() as session:
            session.execute(
                f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {name} {postgres_types(definition)}"
            )
        return not present

    def column_names(self, table: str) -> set[str]:
        with self.read() as session:
            return {column.name for column in session.execute(f"SELECT * FROM {table} LIMIT 0").description}

    def subscribe(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(job_id)`` from a thread of its own for every announced write (this process's
        included), over a connection of its own that LISTENs; it reconnects after a failure, and a change
        missed meanwhile is still caught by the streams' poll."""
        if self._listener is not None:
            raise RuntimeError("one subscriber per database")
        listening = threading.Event()
        self._listener = threading.Thread(
            target=self._listen, args=(callback, listening), name="store-listen", daemon=True
        )
        self._listener.start()
        # Returns once it listens, so every write after this call is heard.
        if not listening.wait(timeout=30):
            logger.warning("job store: not listening for other processes' writes yet; streams poll meanwhile")

    def _listen(self, callback: Callable[[str], None], listening: threading.Event) -> None:
        import psycopg

        failing = False
        while not self._closed.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True) as connection:
                    connection.execute(f"LISTEN {CHANNEL}")
                    listening.set()
                    failing = False
                    while not self._closed.is_set():
                        for notice in connection.notifies(timeout=LISTEN_WAKE_S):
                            try:
                                callback(notice.payload)
                            except Exception:  # noqa: BLE001 - one listener's failure must not stop hearing
                                logger.exception("job store: a listener failed on %s", notice.payload)
            except psycopg.Error as exc:
                if not failing:  # once per outage, not once a second
                    logger.warning("job store: lost the LISTEN connection (%s); reconnecting", exc)
                failing = True
                self._closed.wait(1.0)

    def close(self) -> None:
        self._closed.set()
        if self._listener is not None:
            self._listener.join(timeout=LISTEN_WAKE_S + 1)
        self._pool.close()


class _PostgresSession:
    def __init__(self, connection: Any, database: PostgresDatabase) -> None:
        self._connection = connection
        self._database = database

    def execute(self, sql: str, params: Mapping[str, Any] | None = None, /) -> Any:
        if self._database.trace is not None:
            self._database.trace(sql)
        return self._connection.execute(sql if params is None else _pyformat(sql), params)

    def executemany(self, sql: str, params: Sequence[Mapping[str, Any]], /) -> None:
        if self._database.trace is not None:
            self._database.trace(sql)
        with self._connection.cursor() as cursor:
            cursor.executemany(_pyformat(sql), params)


def postgres_schema(schema: str) -> str:
    """SQLite's CREATE statements in PostgreSQL's types."""
    return postgres_types(
        schema.replace(
            "INTEGER PRIMARY KEY AUTOINCREMENT", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"
        )
    )


def _listen_sqlite(
    path: str,
    origin: str,
    closed: threading.Event,
    hear: Callable[[], Callable[[str], None] | None],
    heard: int,
) -> None:
    """`SQLiteDatabase.subscribe`'s thread: after each commit of another connection, call the listener
    once per job announced since the last look (none for ``origin``'s own writes)."""
    connection = sqlite3.connect(path, check_same_thread=False, timeout=30)
    try:
        version = None
        while not closed.wait(SQLITE_LISTEN_S) and hear() is not None:  # else the store is gone
            try:
                now = connection.execute("PRAGMA data_version").fetchone()[0]
                if now == version:
                    continue
                version = now
                rows = connection.execute(
                    "SELECT seq, origin, job_id FROM announcements WHERE seq > ? ORDER BY seq", (heard,)
                ).fetchall()
            except sqlite3.Error as exc:  # a busy or locked moment: the next look catches up
                logger.debug("job store: listening failed for now: %s", exc)
                continue
            if rows:
                heard = rows[-1][0]
            callback = hear()
            if callback is None:
                return
            # Once per job however often it changed since the last look: each call wakes its streams.
            for job_id in dict.fromkeys(job_id for _, writer, job_id in rows if writer != origin):
                callback(job_id)
            del callback
    finally:
        connection.close()


def postgres_types(definition: str) -> str:
    """A column definition in PostgreSQL's types: 64-bit integers (Unix times outlive 2038), doubles."""
    return re.sub(r"\bREAL\b", "DOUBLE PRECISION", re.sub(r"\bINTEGER\b", "BIGINT", definition))


@lru_cache(maxsize=512)
def _pyformat(sql: str) -> str:
    """``:name`` parameters as psycopg's ``%(name)s`` (a literal ``%`` doubled)."""
    return re.sub(r"(?<![:\w]):(\w+)", r"%(\1)s", sql.replace("%", "%%"))


def _redacted(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


__all__ = ["Database", "Session", "is_postgres", "open_database", "postgres_schema"]
