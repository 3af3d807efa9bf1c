"""The job store's cost under load: SQLite against PostgreSQL, through the service, with tiny models.

    python -m bench.store [--rounds N] [--seconds S] [--levels N ...]
    python -m bench.store --smoke       # one short round at 1 in flight: checks that it runs, measures nothing

Two copies of the benchmark app run side by side on one Ray cluster, the same in everything but the job
store: one on SQLite (one ingress replica, as SQLite needs), one on a PostgreSQL server this benchmark
starts (Debian's package), with two ingress replicas. For 1, 4 and 8 jobs in flight, one client keeps that
many jobs running for S seconds (a new POST whenever one ends) and polls each job's status in turn
(`bench.service.latency_under_load`); the apps take turns, alternating which goes first each round.

1. jobs_per_min    completed jobs a minute at 1, 4 and 8 in flight, each store; the ratio PG / SQLite at 8
                   (the goal: within 10 %, so >= 0.90)
2. status_p99_ms   GET /v1/videos/{id} p99 on PostgreSQL with two ingress replicas while 8 jobs generate
                   (the goal: <= 25 ms), beside SQLite's one replica

The goals are read at the busiest level run (8 by default).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import report
from bench.pipeline import JOB, app_config, build_models
from bench.service import latency_under_load, run_job, undeploy
from bench.timing import median, percentile
from tests.support.cluster import REPLICAS, cluster
from tests.support.postgres import new_database, postgres_server

OUT = Path(__file__).parent / "out"
LEVELS = (1, 4, 8)
# After a run its unfinished jobs are cancelled; their replicas notice at their next check (the SVD batch
# every 0.5 s) and stop. Without this pause that tail of work would land on the other store's run.
SETTLE_S = 3.0


def deploy(config: Any, base_url: str, name: str, ingress_replicas: int) -> Any:
    import httpx
    from ray import serve

    from serve_app.app import bind_graph

    options = {key: dict(value) for key, value in REPLICAS.items()}
    options["VideoAPI"]["num_replicas"] = ingress_replicas
    serve.run(bind_graph(config, options), name=name, route_prefix=f"/{name}")
    return httpx.Client(base_url=f"{base_url}/{name}", timeout=120)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per level")
    # 20 s windows completed no job at 8 in flight on the 2-core host (RESULTS.md, 2026-12-06 12:41).
    parser.add_argument("--seconds", type=float, default=90.0, help="seconds of load per run")
    parser.add_argument(
        "--levels", type=int, nargs="+", default=list(LEVELS), help="jobs in flight to run at"
    )
    parser.add_argument("--out", type=Path, default=OUT / "store.json")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="one round of 8 s at 1 in flight: checks that the benchmark runs, its figures mean nothing",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds, args.seconds, args.levels = 1, 8.0, [1]
    report.quiet_libraries()

    with tempfile.TemporaryDirectory(prefix="bench-store-") as folder, postgres_server() as server:
        scratch = Path(folder)
        models = build_models(scratch / "models")
        configs = {name: app_config(models, scratch / name) for name in ("sqlite", "postgresql")}
        configs["postgresql"].storage.database = new_database(server)
        with cluster() as base_url:
            try:
                clients = {
                    "sqlite": deploy(configs["sqlite"], base_url, "store-sqlite", ingress_replicas=1),
                    "postgresql": deploy(configs["postgresql"], base_url, "store-pg", ingress_replicas=2),
                }
                load_at_start = os.getloadavg()[0]
                runs = _measure(clients, args.levels, args.rounds, args.seconds)
            finally:  # before the server and the scratch folder go (the cluster may outlive this run)
                undeploy("store-sqlite")
                undeploy("store-pg")
    result = summarize(runs)
    result |= {
        "seconds": args.seconds,
        "rounds": args.rounds,
        "job": JOB,
        "load": [load_at_start, os.getloadavg()[0]],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({key: value for key, value in result.items() if key != "runs"}, indent=2))


def _measure(
    clients: dict[str, Any], levels: list[int], rounds: int, seconds: float
) -> dict[str, dict[int, list[dict[str, Any]]]]:
    """Each level's interleaved rounds on both apps; per app and level, one summary per round."""
    for client in clients.values():  # one untimed job each: loads, first calls
        run_job(client, JOB)
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {name: {n: [] for n in levels} for name in clients}
    for level in levels:
        for round_index in range(rounds):
            order = list(clients) if round_index % 2 == 0 else list(reversed(clients))
            for name in order:
                raw = latency_under_load(clients[name], JOB, in_flight=level, seconds=seconds)
                time.sleep(SETTLE_S)
                runs[name][level].append(
                    {
                        "jobs_per_min": raw["jobs_completed"] * 60 / seconds,
                        "status_p50_ms": percentile(raw["status_ms"], 50),
                        "status_p99_ms": percentile(raw["status_ms"], 99),
                        "status_samples": len(raw["status_ms"]),
                    }
                )
            print(f"{level} in flight, round {round_index + 1}: " + ", ".join(
                f"{name} {runs[name][level][-1]['jobs_per_min']:.1f} jobs/min, "
                f"p99 {runs[name][level][-1]['status_p99_ms']:.1f} ms" for name in clients
            ), flush=True)  # fmt: skip
    return runs


def summarize(runs: dict[str, dict[int, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Medians per store and level, the per-round PG / SQLite throughput ratios at each level, and the goals'
    figures at the busiest level."""
    medians = {
        name: {level: {key: median([run[key] for run in level_runs]) for key in level_runs[0]} for level, level_runs in levels.items()}
        for name, levels in runs.items()
    }  # fmt: skip
    # A round in which SQLite finished no job (a window too short for the host) has no ratio.
    ratios = {
        level: [
            pg["jobs_per_min"] / sq["jobs_per_min"]
            for pg, sq in zip(runs["postgresql"][level], runs["sqlite"][level], strict=True)
            if sq["jobs_per_min"]
        ]
        for level in runs["sqlite"]
    }
    busiest = max(runs["sqlite"])
    return {
        "medians": medians,
        "throughput_ratio": {level: median(values) if values else None for level, values in ratios.items()},
        "throughput_ratio_spread": {
            level: [min(values), max(values)] if values else None for level, values in ratios.items()
        },
        "busiest": busiest,
        "status_p99_ms_postgresql": medians["postgresql"][busiest]["status_p99_ms"],
        "runs": runs,
    }


if __name__ == "__main__":
    main()
