"""``python -m bench``: every CPU benchmark in one run, one Ray start, a table and bench/out/latest.json.

1. encode_ratio    our H.264 encoder / the ffmpeg command line (and OpenCV mp4v for reference)
2. overhead_ratio  a four-scene job through HTTP + Ray Serve / the same engines called in this process
3. status_*, create_*  GET/POST /v1/videos latency while eight jobs generate
4. status_p99_under_streams_ms  GET /v1/videos/{id} latency with the cap of event streams open and large
                   uploads in flight
5. batch_speedup   VideoAnimator throughput for four concurrent scenes at max_batch_size 4 / 1

`--only NAME` (repeatable) runs just those parts: encode, overhead, latency, streams, batch. `--quick` makes
fewer rounds and shorter loads; `--smoke` one round of each part on small inputs, which checks that every
part still runs and writes its figures (they mean nothing): tests/bench runs it.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import encode, report, service, streams
from bench.pipeline import JOB, InProcessJob
from bench.timing import interleaved, median, percentile

OUT = Path(__file__).parent / "out"
PARTS = ("encode", "overhead", "latency", "streams", "batch")


@dataclass(frozen=True)
class Effort:
    """How much each part measures.

    Args:
        frame_counts: clip lengths the encoder part encodes.
        repeats: timed rounds of the encoder and overhead parts.
        load_s: seconds of load in the latency and streams parts.
        batch_rounds: timed rounds per batch size in the batch part.
        batch_sizes: `max_batch_size` of each batch phase, in order.
    """

    frame_counts: tuple[int, ...]
    repeats: int
    load_s: float
    batch_rounds: int
    batch_sizes: tuple[int, ...]


FULL = Effort(frame_counts=(25, 100), repeats=7, load_s=40, batch_rounds=3, batch_sizes=(4, 1, 4))
QUICK = Effort(frame_counts=(25, 100), repeats=3, load_s=15, batch_rounds=2, batch_sizes=(4, 1, 4))
SMOKE = Effort(frame_counts=(8,), repeats=1, load_s=3, batch_rounds=1, batch_sizes=(4, 1))


def measure_overhead(client: Any, local: InProcessJob, repeats: int) -> dict[str, Any]:
    """Service vs in-process job, alternating, after one untimed round of each (loads, first calls).

    Both sides run the same config, whose `cpu_threads` (2) sets torch's threads around every pipeline
    call, in a replica (where Ray would otherwise leave one thread) as in this process.
    """
    variants = {"service": service.job_runner(client, JOB), "in_process": local.run}
    times = interleaved(variants, repeats, warmup=1)
    wall = {name: median([s.wall for s in samples]) for name, samples in times.items()}
    return {
        "overhead_ratio": wall["service"] / wall["in_process"],
        "median_wall_s": wall,
        "wall_s": {name: [round(s.wall, 4) for s in samples] for name, samples in times.items()},
        "repeats": repeats,
        "job": JOB,
    }


def measure_latency(client: Any, seconds: float) -> dict[str, Any]:
    """Latency percentiles of status polls and creates while eight tiny-model jobs generate."""
    raw = service.latency_under_load(client, JOB, in_flight=8, seconds=seconds)
    summary: dict[str, Any] = {
        "seconds": seconds,
        "jobs_in_flight": 8,
        "jobs_completed": raw["jobs_completed"],
    }
    for kind in ("status", "create"):
        values = raw[f"{kind}_ms"]
        summary[f"{kind}_p50_ms"] = percentile(values, 50)
        summary[f"{kind}_p99_ms"] = percentile(values, 99)
        summary[f"{kind}_max_ms"] = max(values)
        summary[f"{kind}_samples"] = len(values)
    summary["raw_ms"] = {kind: [round(v, 2) for v in raw[f"{kind}_ms"]] for kind in ("status", "create")}
    return summary


def measure_status_under_streams(app: service.TinyApp, seconds: float) -> dict[str, Any]:
    """Status-poll percentiles with `limits.max_event_streams` streams open and two large uploads in flight."""
    config = app.config
    raw = streams.status_under_streams(
        f"{app.base_url}/{service.APP}",
        config.storage.database_url,
        stream_cap=config.limits.max_event_streams,
        model=config.served_model_name,
        uploaders=2,
        seconds=seconds,
    )
    return streams.summarize(raw)


def measure_batching(video: Any, rounds: int, sizes: tuple[int, ...] = (4, 1, 4)) -> dict[str, Any]:
    """Four concurrent same-shape scenes at each `max_batch_size` of ``sizes`` in turn: 4, 1, 4 (A-B-A)
    cancels a steady drift in machine load. The size is set live on the running replica; the first round
    after each switch is not timed.

    Args:
        video: the app's `video` config (the scenes' size).
        rounds: timed rounds per phase.
        sizes: `max_batch_size` of each phase, in order; 1 and 4 must both be there.
    """
    samples: dict[int, list[float]] = {1: [], 4: []}
    batch_sizes: dict[int, dict[int, int]] = {1: {}, 4: {}}
    for size in sizes:
        service.set_animator_batch(size)
        service.svd_throughput(4, 1, video.width, video.height)
        result = service.svd_throughput(4, rounds, video.width, video.height)
        samples[size] += [s.wall for s in result["samples"]]
        for seen, count in result["batch_sizes"].items():
            batch_sizes[size][seen] = batch_sizes[size].get(seen, 0) + count
    throughput = {size: 4 / median(walls) for size, walls in samples.items()}
    return {
        "batch_speedup": throughput[4] / throughput[1],
        "scenes_per_s": throughput,
        "wall_s": {size: [round(w, 4) for w in walls] for size, walls in samples.items()},
        "batch_sizes_seen": batch_sizes,
        "scene": {
            "size": f"{video.width}x{video.height}",
            "frames": video.num_frames,
            "steps": video.num_inference_steps,
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    effort = parser.add_mutually_exclusive_group()
    effort.add_argument("--quick", action="store_true", help="fewer repeats and a shorter load test")
    effort.add_argument(
        "--smoke",
        action="store_true",
        help="one round of each part on small inputs: checks that every part runs, its figures mean nothing",
    )
    parser.add_argument("--skip-encode", action="store_true", help="leave out the encoder benchmark")
    parser.add_argument("--skip-service", action="store_true", help="leave out everything that needs Ray")
    parser.add_argument(
        "--only",
        action="append",
        choices=PARTS,
        help="run only this part (repeatable); the --skip options still apply",
    )
    parser.add_argument("--out", type=Path, default=OUT, help="where latest.json and the details go")
    args = parser.parse_args(argv)
    parts = set(args.only or PARTS)
    if args.skip_encode:
        parts.discard("encode")
    if args.skip_service:
        parts &= {"encode"}
    effort = SMOKE if args.smoke else QUICK if args.quick else FULL
    report.quiet_libraries()
    started = time.monotonic()
    figures: dict[str, Any] = {}
    details: dict[str, Any] = {}

    if "encode" in parts:
        _progress("1/5 encoder ...")
        details["encode"] = encode.run(effort.frame_counts, effort.repeats)
        figures["encode_ratio"] = details["encode"]["encode_ratio"]
    if parts - {"encode"}:
        figures |= _service_benchmarks(effort, details, parts)

    notes = _notes(details)
    details["total_seconds"] = time.monotonic() - started
    latest = report.write(args.out, figures, details)
    print()
    print(report.table(figures, notes))
    print(f"\n{_codec_facts(details)}\nwritten: {latest} ({details['total_seconds']:.0f} s)")


def _service_benchmarks(effort: Effort, details: dict[str, Any], parts: set[str]) -> dict[str, float]:
    figures: dict[str, float] = {}
    with service.tiny_app("bench-") as app:
        if "overhead" in parts:
            local = InProcessJob(app.config, app.scratch / "in-process")
            _progress("2/5 overhead ...")
            details["overhead"] = measure_overhead(app.client, local, effort.repeats)
            figures["overhead_ratio"] = details["overhead"]["overhead_ratio"]
        if "latency" in parts:
            _progress("3/5 latency under load ...")
            latency = details["latency"] = measure_latency(app.client, effort.load_s)
            for key in ("status_p50_ms", "status_p99_ms", "create_p50_ms", "create_p99_ms"):
                figures[key] = latency[key]
        if "streams" in parts:
            _progress("4/5 status under event streams and uploads ...")
            details["streams"] = measure_status_under_streams(app, effort.load_s)
            figures[streams.FIGURE] = details["streams"]["status_p99_ms"]
        if "batch" in parts:
            _progress("5/5 batching ...")
            details["batch"] = measure_batching(app.config.video, effort.batch_rounds, effort.batch_sizes)
            figures["batch_speedup"] = details["batch"]["batch_speedup"]
    return figures


def _progress(part: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {part}", flush=True)  # the clock: where a slow run spent its time


def _notes(details: dict[str, Any]) -> dict[str, str]:
    notes: dict[str, str] = {}
    if "encode" in details:
        cases = details["encode"]["cases"]
        notes["encode_ratio"] = (
            "worst of "
            + ", ".join(
                f"{n} frames {c['ratio_ours_over_cli']:.3f} (cpu {c['cpu_ratio_ours_over_cli']:.3f})"
                for n, c in cases.items()
            )
            + f"; 1024x576, median of {details['encode']['repeats']}"
        )
    if "overhead" in details:
        wall = details["overhead"]["median_wall_s"]
        notes["overhead_ratio"] = (
            f"4-scene tiny-model job: service {wall['service']:.3f} s / in-process "
            f"{wall['in_process']:.3f} s, median of {details['overhead']['repeats']}"
        )
    if "latency" in details:
        lat = details["latency"]
        for kind in ("status", "create"):
            text = f"{lat[f'{kind}_samples']} samples, max {lat[f'{kind}_max_ms']:.0f} ms; 8 tiny-model jobs generating"
            notes[f"{kind}_p50_ms"] = notes[f"{kind}_p99_ms"] = text
    if "streams" in details:
        held = details["streams"]
        facts = (
            f"{held['streams_held']} streams open, {held['uploads_done']} uploads of "
            f"{held['upload_bytes'] / 1e6:.1f} MB"
        )
        if held["status_samples"]:
            notes[streams.FIGURE] = (
                f"{held['status_samples']} polls, p50 {held['status_p50_ms']:.1f} ms, max "
                f"{held['status_max_ms']:.0f} ms; {facts}"
            )
        else:
            notes[streams.FIGURE] = f"no poll answered ({held['status_errors']}); {facts}"
    if "batch" in details:
        batch = details["batch"]
        notes["batch_speedup"] = (
            f"{batch['scenes_per_s'][4]:.2f} vs {batch['scenes_per_s'][1]:.2f} scenes/s; "
            f"batches seen {batch['batch_sizes_seen']}"
        )
    return notes


def _codec_facts(details: dict[str, Any]) -> str:
    if "encode" not in details:
        return ""
    lines = ["Encoders, 1024x576 (codec read back with PyAV):"]
    for count, case in details["encode"]["cases"].items():
        for name, facts in case["files"].items():
            playable = (
                "plays in Chrome/Firefox/Safari"
                if facts["browser_playable"]
                else "NOT playable in Chrome/Firefox/Safari"
            )
            lines.append(
                f"  {count:>3} frames  {name:<6} {case['median_wall_s'][name]:6.3f} s  {facts['bytes'] / 1e6:6.2f} MB  "
                f"{facts['codec']}/{facts['pix_fmt']}: {playable}"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
