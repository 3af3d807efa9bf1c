"""A PostgreSQL server of its own, from Debian's `postgresql` package, for the tests and the benchmarks.

initdb into a temporary folder, then `pg_ctl start` on a free loopback port with fsync off (a scratch
database need not survive a power cut). PostgreSQL refuses to run as root, so as root it runs as the
`postgres` user the package made.
"""

from __future__ import annotations

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


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a server (user `storyreel`, trust auth on 127.0.0.1); yield its URL; stop it and remove its files."""
    bindir = _bindir()
    folder = Path(tempfile.mkdtemp(prefix="storyreel-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    data, port = folder / "data", free_port()
    try:
        subprocess.run(
            _as_server_user(
                [str(bindir / "initdb"), "-D", str(data), "-U", USER, "--auth=trust", "-E", "UTF8"]
            ),
            check=True,
            capture_output=True,
        )
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        start = [
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(folder / "log"),
            "-w",
            "start",
        ]
        started = subprocess.run(_as_server_user(start), capture_output=True, text=True)
        if started.returncode != 0:
            log = (folder / "log").read_text(errors="replace") if (folder / "log").exists() else ""
            raise RuntimeError(f"PostgreSQL did not start: {started.stderr}\n{log[-2000:]}")
        try:
            yield f"postgresql://{USER}@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run(
                _as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                capture_output=True,
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


_numbers = itertools.count()


def new_database(server: str) -> str:
    """Create a new, empty database on ``server`` (a `postgres_server` URL) and return its URL."""
    import psycopg

    name = f"db_{os.getpid()}_{next(_numbers)}"
    with psycopg.connect(server, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return server.rsplit("/", 1)[0] + f"/{name}"


__all__ = ["ServerMissing", "new_database", "postgres_server"]
