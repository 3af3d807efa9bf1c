"""A PostgreSQL server of its own, from Debian's `postgresql` package, for the tests and the benchmarks.

initdb into a temporary folder, then `pg_ctl start` on a free loopback port with fsync off (a scratch
database need not survive a power cut). PostgreSQL refuses to run as root, so as root it runs as the
`postgres` user the package made.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.ports import free_port

USER = "storyreel"


class ServerMissing(RuntimeError):
    """PostgreSQL's server binaries are not installed."""


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[4]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).parent
    raise ServerMissing(
        "PostgreSQL's server is not installed: run `make install` (as root it installs Debian's postgresql)"
    )


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


class PostgresServer:
    """A running server of this test run: its URL, and the `pg_ctl` calls a fault test needs."""

    def __init__(self, bindir: Path, data: Path, port: int, log: Path) -> None:
        self.bindir, self.data, self.log = bindir, data, log
        self.url = f"postgresql://{USER}@127.0.0.1:{port}/postgres"
        self.options = (
            f"-p {port} -k {data.parent} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        )

    def start(self) -> None:
        self._pg_ctl("-o", self.options, "-l", str(self.log), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop it: ``fast`` rolls back open transactions and closes every connection, as a failover does."""
        self._pg_ctl("-m", mode, "-w", "stop")

    def restart(self) -> None:
        self._pg_ctl("-o", self.options, "-l", str(self.log), "-m", "fast", "-w", "restart")

    def _pg_ctl(self, *arguments: str) -> None:
        done = subprocess.run(
            _as_server_user([str(self.bindir / "pg_ctl"), "-D", str(self.data), *arguments]),
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(f"pg_ctl {arguments[-1]} failed: {done.stderr}\n{log[-2000:]}")


@contextmanager
def running_server() -> Iterator[PostgresServer]:
    """Start a server (user `storyreel`, trust auth on 127.0.0.1); yield it; stop it and remove its files."""
    bindir = _bindir()
    folder = Path(tempfile.mkdtemp(prefix="storyreel-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    server = PostgresServer(bindir, folder / "data", free_port(), folder / "log")
    try:
        subprocess.run(
            _as_server_user(
                [str(bindir / "initdb"), "-D", str(server.data), "-U", USER, "--auth=trust", "-E", "UTF8"]
            ),
            check=True,
            capture_output=True,
        )
        server.start()
        try:
            yield server
        finally:
            with contextlib.suppress(RuntimeError):  # a fault test may have left it stopped
                server.stop("immediate")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def postgres_server() -> Iterator[str]:
    """`running_server`, as its URL."""
    with running_server() as server:
        yield server.url


_numbers = itertools.count()


def new_database(server: str) -> str:
    """Create a new, empty database on ``server`` (a `postgres_server` URL) and return its URL."""
    import psycopg

    name = f"db_{os.getpid()}_{next(_numbers)}"
    with psycopg.connect(server, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return server.rsplit("/", 1)[0] + f"/{name}"


__all__ = ["PostgresServer", "ServerMissing", "new_database", "postgres_server", "running_server"]
