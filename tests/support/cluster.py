"""One local Ray cluster with Serve's HTTP proxy, for the e2e tests and the benchmarks.

Ray starts once per test session or benchmark run (about 20 s here); every deploy shares that cluster.
Replicas take fractions of a CPU, as in serve_config.cpu.yaml, so the whole graph fits on two cores.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.support.ports import free_port

# Fractions of a CPU per replica (Ray counts 8 logical CPUs on this 2-core machine): the five deployments
# and a second SVD replica fit beside the calling process.
# Each replica stops within a second of a delete, not once its calls are done (up to 15 minutes for an
# animator as shipped): the tests delete an app as soon as they are done with it, and wait until it has gone.
_QUICK_STOP = {"graceful_shutdown_wait_loop_s": 0.1, "graceful_shutdown_timeout_s": 1}
REPLICAS: dict[str, dict[str, Any]] = {
    "VideoAPI": {"ray_actor_options": {"num_cpus": 0.1}, **_QUICK_STOP},
    "JobRunner": {"ray_actor_options": {"num_cpus": 0.1}, **_QUICK_STOP},
    "SceneWriter": {"ray_actor_options": {"num_cpus": 0.1}, **_QUICK_STOP},
    "KeyframePainter": {"ray_actor_options": {"num_cpus": 0.1}, **_QUICK_STOP},
    "VideoAnimator": {"ray_actor_options": {"num_cpus": 0.2, "num_gpus": 0}, **_QUICK_STOP},
    "Encoder": {"ray_actor_options": {"num_cpus": 0.2}, **_QUICK_STOP},
    "Narrator": _QUICK_STOP,
    "JobBoard": _QUICK_STOP,
}
# Between serve.shutdown() and ray.shutdown(): for this process's handles to hear that the controller died.
SERVE_STOPPED_S = 1.0

# The proxy URL of the cluster a `cluster()` block of this process runs, while it runs.
_running: str | None = None


def metrics_url() -> str:
    """The running cluster's Prometheus endpoint (Ray's metrics export on this node)."""
    import ray

    (node,) = ray.nodes()
    return f"http://127.0.0.1:{node['MetricsExportPort']}/metrics"


@contextmanager
def cluster(log_to_driver: bool = False) -> Iterator[str]:
    """Start Ray in this process (one logical GPU) and Serve's HTTP proxy; yield the proxy's base URL; stop
    both after. ``log_to_driver`` prints the replicas' logs here (the tests want them, the tables do not).

    Inside another ``cluster()`` block of this process it yields that cluster's URL and leaves it running:
    benchmarks run one after the other (their smoke tests) share one Ray start.
    """
    global _running
    if _running is not None:
        yield _running
        return
    import ray
    from ray import serve

    port = free_port()
    ray.init(
        # A cluster of its own, never one another process started on this machine and recorded in /tmp/ray
        # (the multi-node test starts its own beside this one).
        address="local",
        num_cpus=8,
        num_gpus=1,
        include_dashboard=False,
        configure_logging=False,
        log_to_driver=log_to_driver,
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        _running = f"http://127.0.0.1:{port}"
        yield _running
    finally:
        _running = None
        serve.shutdown()
        # A deployment handle made in this process (serve.run's, or a test's get_deployment_handle) long-polls
        # the controller; it stops once it hears the controller is gone. Touching Ray after ray.shutdown()
        # would end this process with status 1 (pytest's summary unprinted, CI failed): give it the moment.
        time.sleep(SERVE_STOPPED_S)
        ray.shutdown()
