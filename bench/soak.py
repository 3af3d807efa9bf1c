"""``python -m bench.soak``: many jobs through the real service, watching each replica for leaks.

    python -m bench.soak                       # 400 tiny-model jobs, 4 at a time, a line every 40
    python -m bench.soak --jobs 2000 --every 200
    python -m bench.soak --smoke               # 2 jobs, a line after each: checks that it runs

Each line also goes to bench/out/soak.json (`--out`).

A replica that keeps something per job (a task, a thread, a file, a cache entry) grows with every job;
one that does not levels off once its allocator has warmed up. Each line gives, per replica, resident
memory (MB), threads and open file descriptors, read from /proc (Linux), and how long the last jobs took,
so a slowdown as the job store fills up shows too.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import report, service
from bench.pipeline import JOB

PROCESS_TITLE = f"ray::ServeReplica:{service.APP}:"
OUT = Path(__file__).parent / "out"


@dataclass(frozen=True)
class Usage:
    """One replica process: resident memory in MB, threads, open file descriptors."""

    rss_mb: float
    threads: int
    fds: int


def replica_usage(proc: Path = Path("/proc")) -> dict[str, Usage]:
    """Each of the benchmark app's replicas by deployment name, found by Ray's process title."""
    usage = {}
    for process in proc.glob("[0-9]*"):
        try:
            title = (process / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if not title.startswith(PROCESS_TITLE):
                continue
            status = dict(
                line.split(":", 1) for line in (process / "status").read_text().splitlines() if ":" in line
            )
            fds = sum(1 for _ in (process / "fd").iterdir())
        except OSError:  # the process ended while being read
            continue
        deployment = title.removeprefix(PROCESS_TITLE).split()[0]
        rss_kb = int(status["VmRSS"].split()[0])
        usage[deployment] = Usage(rss_kb / 1024, int(status["Threads"]), fds)
    return usage


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=400, help="jobs in all")
    parser.add_argument("--every", type=int, default=40, help="jobs between two lines")
    parser.add_argument("--concurrency", type=int, default=4, help="jobs running at once")
    parser.add_argument("--out", type=Path, default=OUT / "soak.json")
    parser.add_argument("--smoke", action="store_true", help="2 jobs, one at a time: checks that it runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.jobs, args.every, args.concurrency = 2, 1, 1
    report.quiet_libraries()
    lines: list[dict[str, Any]] = []
    with service.tiny_app("soak-") as app, ThreadPoolExecutor(args.concurrency) as pool:
        done = 0
        while done < args.jobs:
            batch = min(args.every, args.jobs - done)
            started = time.monotonic()
            list(pool.map(lambda _: service.run_job(app.client, JOB), range(batch)))
            done += batch
            lines.append(
                {
                    "jobs": done,
                    "seconds_per_job": (time.monotonic() - started) / batch,
                    "replicas": {name: asdict(usage) for name, usage in replica_usage().items()},
                }
            )
            _print(lines[-1])
            # Every line, so a long soak stopped half-way still leaves what it saw.
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"concurrency": args.concurrency, "lines": lines}, indent=2))


def _print(line: dict[str, Any]) -> None:
    cells = "  ".join(
        f"{name} {u['rss_mb']:.0f} MB/{u['threads']}t/{u['fds']}fd"
        for name, u in sorted(line["replicas"].items())
    )
    print(
        f"{line['jobs']:6d} jobs  {line['seconds_per_job']:.2f} s/job (wall over the last jobs)  {cells}",
        flush=True,
    )


if __name__ == "__main__":
    main()
