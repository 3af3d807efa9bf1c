"""A Prometheus server of its own, from Debian's `prometheus` package, scraping one target every second.

It keeps its samples in a temporary folder and answers PromQL on a free loopback port, the way a
dashboard's data source asks it.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from tests.support.ports import free_port
from tests.support.processes import stop

SCRAPE_S = 1


class ServerMissing(RuntimeError):
    """Prometheus is not installed."""


@contextmanager
def prometheus_server(target: str) -> Iterator[str]:
    """Start Prometheus scraping ``target`` (a /metrics URL); yield its base URL; stop it and remove its files."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise ServerMissing("Prometheus is not installed: run `make install` (as root it installs Debian's)")
    parts = urlsplit(target)
    folder = Path(tempfile.mkdtemp(prefix="storyreel-prometheus-"))
    config = folder / "prometheus.yml"
    config.write_text(
        f"global: {{scrape_interval: {SCRAPE_S}s, evaluation_interval: {SCRAPE_S}s}}\n"
        "scrape_configs:\n"
        "  - job_name: ray\n"
        f"    metrics_path: {parts.path}\n"
        f"    static_configs: [{{targets: ['{parts.netloc}']}}]\n"
    )
    url = f"http://127.0.0.1:{free_port()}"
    server = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address={urlsplit(url).netloc}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(folder / "prometheus.log").open("w"),
    )
    try:
        _wait_ready(url, server, folder / "prometheus.log")
        yield url
    finally:
        stop(server)
        shutil.rmtree(folder, ignore_errors=True)


def _wait_ready(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 30  # it starts in about a second; this guards against a hang
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"Prometheus exited with {server.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"Prometheus did not get ready in 30 s: {log.read_text()[-2000:]}")


def query(url: str, expr: str) -> list[float]:
    """The values of an instant PromQL query, one per series (NaN where a ratio or quantile has none).

    Raises:
        AssertionError: Prometheus refused the query (a syntax error, an unknown function).
    """
    answer = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", f"{expr}: {answer.get('error')}"
    return [float(series["value"][1]) for series in answer["data"]["result"]]


def has_data(values: list[float]) -> bool:
    """Whether a query's answer holds a number a panel would draw."""
    return any(math.isfinite(value) for value in values)
