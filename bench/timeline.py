"""``python -m bench.timeline``: where the benchmark job's time goes, call by call, through the real service.

    python -m bench.timeline            # the tiny-model job of `make bench`, three runs, the last one shown

Serve writes an access line for every call a replica answers (`CALL animate OK 304.4ms`) under the request
id of the HTTP request that started it, and the job runner's calls inherit the id of the POST that created
the job. So one job's calls are found in the replica logs by that id, and each line's time and duration give
the call's start and end. The earlier runs warm the replicas (first calls load kernels and caches).
"""

from __future__ import annotations

import argparse
import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from bench import report, service
from bench.pipeline import JOB

# INFO 2026-11-29 14:39:55,713 bench_SVDGenerator 08mow4b7 0933c728-... -- CALL animate OK 304.4ms
ACCESS_LINE = re.compile(
    r"^\w+ (?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (?P<deployment>\S+) \S+ (?P<request>\S+) -- "
    r"CALL (?P<method>\w+) (?P<outcome>\w+) (?P<ms>[\d.]+)ms$"
)


@dataclass(frozen=True)
class Span:
    """One replica call: seconds after the job was posted, where it ran and how it ended."""

    start: float
    end: float
    deployment: str
    method: str
    outcome: str


def job_spans(logs: Path, request_id: str, posted_at: float) -> list[Span]:
    """The calls logged under ``request_id`` in Serve's replica logs, by start time."""
    spans = []
    for log in logs.glob("replica_*.log"):
        for line in log.read_text(errors="replace").splitlines():
            match = ACCESS_LINE.match(line)
            if match is None or match["request"] != request_id:
                continue
            # Logging writes local time, as time.time() is read here (same host).
            end = datetime.strptime(match["time"], "%Y-%m-%d %H:%M:%S,%f").timestamp() - posted_at
            spans.append(
                Span(
                    start=end - float(match["ms"]) / 1000,
                    end=end,
                    deployment=match["deployment"].split("_", 1)[-1],
                    method=match["method"],
                    outcome=match["outcome"],
                )
            )
    return sorted(spans, key=lambda span: span.start)


def serve_logs() -> Path:
    """The folder where this Ray session's Serve replicas log."""
    import ray

    return Path(ray._private.worker._global_node.get_logs_dir_path()) / "serve"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="jobs to run; the last one is shown")
    args = parser.parse_args(argv)
    report.quiet_libraries()
    with service.tiny_app("timeline-") as app:
        for _ in range(args.runs):
            posted_at = time.time()
            video_id, request_id = service.post_job(app.client, JOB)
            video = service.follow_job(app.client, video_id)
            total = time.time() - posted_at
        time.sleep(1)  # let the replicas flush their last access lines
        spans = job_spans(serve_logs(), request_id, posted_at)
    print(f"job {video_id}: {total:.3f} s from POST to the end of its event stream")
    print("scenes per SVD call:", [scene["batch_size"] for scene in video["scenes"]])
    print(f"{'start s':>8} {'end s':>7} {'ms':>7}  call")
    for span in spans:
        took = (span.end - span.start) * 1000
        print(
            f"{span.start:8.3f} {span.end:7.3f} {took:7.1f}  {span.deployment}.{span.method} {span.outcome}"
        )


if __name__ == "__main__":
    main()
