"""``python -m bench.timeline``: where the benchmark job's time goes, call by call, through the real service.

    python -m bench.timeline            # the tiny-model job of `make bench`, three runs, the last one shown
    python -m bench.timeline --smoke    # one run: checks that it runs

Serve writes an access line for every call a replica answers (`CALL animate OK 304.4ms`), in a log file per
replica named after its app. The job runner takes a job from the store, so its calls do not carry the id of
the POST that created it; the benchmark runs one job at a time, so the calls of the app's replicas that
started between the POST and the end of the job are that job's. Each line's time and duration give the
call's start and end. The earlier runs warm the replicas (first calls load kernels and caches). The last
job's calls also go to bench/out/timeline.json (`--out`).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from bench import report, service
from bench.pipeline import JOB

# INFO 2026-11-29 14:39:55,713 bench_VideoAnimator 08mow4b7 0933c728-... -- CALL animate OK 304.4ms
ACCESS_LINE = re.compile(
    r"^\w+ (?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (?P<deployment>\S+) \S+ (?P<request>\S+) -- "
    r"CALL (?P<method>\w+) (?P<outcome>\w+) (?P<ms>[\d.]+)ms$"
)
OUT = Path(__file__).parent / "out"


@dataclass(frozen=True)
class Span:
    """One replica call: seconds after the job was posted, where it ran and how it ended."""

    start: float
    end: float
    deployment: str
    method: str
    outcome: str


def job_spans(logs: Path, app: str, posted_at: float, ended_at: float) -> list[Span]:
    """The calls of ``app``'s replicas that started between ``posted_at`` and ``ended_at`` (``time.time()``
    readings), by start time, in seconds after ``posted_at``."""
    spans = []
    for log in logs.glob(f"replica_{app}_*.log"):
        for line in log.read_text(errors="replace").splitlines():
            match = ACCESS_LINE.match(line)
            if match is None:
                continue
            # Logging writes local time, as time.time() is read here (same host).
            end = datetime.strptime(match["time"], "%Y-%m-%d %H:%M:%S,%f").timestamp() - posted_at
            start = end - float(match["ms"]) / 1000
            if 0 <= start <= ended_at - posted_at:
                spans.append(
                    Span(
                        start=start,
                        end=end,
                        deployment=match["deployment"].removeprefix(f"{app}_"),
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
    parser.add_argument("--out", type=Path, default=OUT / "timeline.json")
    parser.add_argument("--smoke", action="store_true", help="one run, unwarmed: checks that it runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.runs = 1
    report.quiet_libraries()
    with service.tiny_app("timeline-") as app:
        for _ in range(args.runs):
            posted_at = time.time()
            video_id, _ = service.post_job(app.client, JOB)
            video = service.follow_job(app.client, video_id)
            ended_at = time.time()
        time.sleep(1)  # let the replicas flush their last access lines
        spans = job_spans(serve_logs(), service.APP, posted_at, ended_at)
    total = ended_at - posted_at
    batch_sizes = [scene["batch_size"] for scene in video["scenes"]]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"job_s": total, "batch_sizes": batch_sizes, "spans": [asdict(span) for span in spans]}, indent=2
        )
    )
    print(f"job {video_id}: {total:.3f} s from POST to the end of its event stream")
    print("scenes per SVD call:", batch_sizes)
    print(f"{'start s':>8} {'end s':>7} {'ms':>7}  call")
    for span in spans:
        took = (span.end - span.start) * 1000
        print(
            f"{span.start:8.3f} {span.end:7.3f} {took:7.1f}  {span.deployment}.{span.method} {span.outcome}"
        )


if __name__ == "__main__":
    main()
