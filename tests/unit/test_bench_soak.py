"""bench.soak finds the benchmark app's replicas in /proc and reads their memory, threads and files."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.soak import Usage, replica_usage

pytestmark = pytest.mark.unit


def _process(proc: Path, pid: int, title: str, rss_kb: int, threads: int, fds: int) -> None:
    folder = proc / str(pid)
    (folder / "fd").mkdir(parents=True)
    (folder / "cmdline").write_bytes(title.encode() + b"\0" * 8)  # a set process title is padded
    (folder / "status").write_text(f"Name:\tray::Serve\nVmRSS:\t  {rss_kb} kB\nThreads:\t{threads}\n")
    for fd in range(fds):
        (folder / "fd" / str(fd)).touch()


def test_the_apps_replicas_by_deployment_and_nothing_else(tmp_path: Path) -> None:
    _process(tmp_path, 101, "ray::ServeReplica:bench:VideoAPI", rss_kb=368_640, threads=36, fds=85)
    _process(tmp_path, 102, "ray::ServeReplica:bench:VideoAnimator", rss_kb=700_416, threads=40, fds=74)
    _process(tmp_path, 103, "ray::ServeReplica:other:VideoAPI", rss_kb=1, threads=1, fds=1)
    _process(tmp_path, 104, "/usr/bin/python3 -m bench.soak", rss_kb=1, threads=1, fds=1)
    (tmp_path / "self").mkdir()

    assert replica_usage(tmp_path) == {
        "VideoAPI": Usage(rss_mb=360.0, threads=36, fds=85),
        "VideoAnimator": Usage(rss_mb=684.0, threads=40, fds=74),
    }
