"""A local service for `storyreel serve` and `storyreel demo`: `serve run` on a fresh Ray, stopped for sure.

`local_service` starts `serve run -a local CONFIG` (a new local Ray instance, never a cluster an earlier
run left recorded), waits until the API answers, and on the way out stops `serve run` and every Ray
process it started, also on Ctrl-C or an error. `make_demo` makes the demo's video in one: it goes through the
API client's create, follow and download (`serve_app.client.api`), as `storyreel create` does; `storyreel demo`
(`serve_app.client.cli`) calls it and prints what it made.

    python -m serve_app.client.demo [--out DIR] ...    # the same as `storyreel demo [--out DIR] ...`
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from core.files import VARIANT_FILES
from serve_app.client.api import Api, create_video, ensure_completed, follow_video

DEFAULT_PROMPT = (
    "A lighthouse keeper climbs the stairs at dusk. Far below, a whale glows under the waves. "
    "灯塔的光和鲸鱼的歌声在海面上相遇。"
)
# `serve run` shuts Serve and its local Ray down on SIGINT; past this it is killed.
STOP_TIMEOUT_S = 60


class ServiceFailed(RuntimeError):
    """The local service did not come up: `serve run` exited, or the API did not answer in time."""


@contextlib.contextmanager
def local_service(
    config: Path, url: str, log: Path | None = None, startup_timeout_s: float | None = 300
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `serve run -a local CONFIG` until the block ends; yield its process once ``url`` is healthy.

    The environment passes through unchanged, so `serve run` and the cluster it starts see the same
    ``RAY_AUTH_MODE`` and token (README, "Ray auth").

    Args:
        config: the Serve config file (``serve_config.cpu.yaml`` or ``serve_config.yaml``).
        url: where that config serves, e.g. ``http://127.0.0.1:8000``; its ``/healthz`` is polled.
        log: a file for `serve run`'s output; default None, this process's stdout and stderr.
        startup_timeout_s: seconds to wait for the API; None waits as long as `serve run` runs.

    Raises:
        ServiceFailed: something already serves ``url``, `serve run` exited, or the API did not come up.
    """
    if healthy(url):
        raise ServiceFailed(
            f"something already serves {url}; stop it first (it may be an earlier `serve run`)"
        )
    server = start_server(config, log)
    try:
        wait_until_up(url, server, startup_timeout_s, where=f"see {log}" if log else "see its output above")
        yield server
    finally:
        stop(server)


def make_demo(
    api: Api, config: Path, out: Path, body: dict[str, Any], startup_timeout_s: float | None = 300
) -> tuple[dict[str, Any], list[Path]]:
    """Start the service from ``config``, make one video, save every file of it, shut the service down.

    Args:
        api: the client of the service ``config`` serves (its ``base_url`` is polled until it answers).
        config: the Serve config file, e.g. ``serve_config.cpu.yaml``.
        out: the folder the video's files are saved in, each under its variant's file name;
            `serve run`'s log goes beside it (``<out>-serve.log``).
        body: the create request's fields (``prompt``, ``seconds``, ``size``).
        startup_timeout_s: seconds to wait for the API; None waits as long as `serve run` runs.

    Returns:
        The completed video's object and the files written.

    Raises:
        ServiceFailed: the service did not come up. ApiError: a request failed, or the video did not complete.
    """
    log = out.with_name(f"{out.name}-serve.log")
    with local_service(config, api.base_url, log, startup_timeout_s):
        video = follow_video(api, create_video(api, body))
        ensure_completed(video)
        saved = [out / file.filename for file in VARIANT_FILES.values()]
        for variant, path in zip(VARIANT_FILES, saved, strict=True):
            api.download(video["id"], variant, path)
    return video, saved


def start_server(config: Path, log: Path | None = None) -> subprocess.Popen[bytes]:
    """Start `serve run -a local CONFIG` in a session of its own (see ``kill_session``), output to ``log``."""
    output: Any = None
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        output = log.open("w")
    print(
        f"Starting `serve run {config}` on a fresh local Ray instance{f' (log: {log})' if log else ''} ...",
        file=sys.stderr,
    )
    return subprocess.Popen(
        # -a local: a new local instance, not whatever cluster a previous run left recorded.
        [str(Path(sys.executable).parent / "serve"), "run", "-a", "local", str(config)],
        stdout=output,
        stderr=subprocess.STDOUT if log is not None else None,
        start_new_session=True,  # its own session, which every Ray process it starts joins: see kill_session
    )


def wait_until_up(url: str, server: subprocess.Popen[bytes], timeout_s: float | None, where: str) -> None:
    """Return once ``url``/healthz answers 200; raise ServiceFailed (saying ``where`` to look) otherwise."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while deadline is None or time.monotonic() < deadline:
        if server.poll() is not None:
            raise ServiceFailed(f"`serve run` exited with status {server.returncode}; {where}")
        if healthy(url):
            return
        time.sleep(1)
    raise ServiceFailed(f"the service did not come up in {timeout_s:.0f} s; {where}")


def healthy(url: str) -> bool:
    """Whether ``url``/healthz answers 200 within 2 s."""
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def stop(server: subprocess.Popen[bytes]) -> None:
    """Stop `serve run` with Ctrl-C's SIGINT, then kill what is left of its session.

    A replica outlives `serve run` for seconds, still answering and working (README, "Troubleshooting"), so
    the session is always swept, also when `serve run` exited by itself. A second Ctrl-C skips the wait.
    """
    if server.poll() is None:
        print("Shutting the service down ...", file=sys.stderr)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired, KeyboardInterrupt):
            server.wait(timeout=STOP_TIMEOUT_S)
    kill_session(server.pid)
    server.wait()


def kill_session(session_id: int, timeout_s: float = 30) -> None:
    """SIGKILL every process of a session: a `serve run` started with ``start_new_session`` and its local Ray.

    Killing the process group is not enough: Ray puts each worker (every replica) in a group of its own
    within the session, and a replica outlives its raylet for a while, still serving and writing. Returns
    once none is left (Linux; elsewhere, without /proc, only the group is killed).
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(session_id, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while pids := _session_pids(session_id):
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes {pids} of session {session_id} outlived SIGKILL")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def _session_pids(session_id: int) -> list[int]:
    """The live (not zombie) processes of a session, from /proc."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # pid (comm) state ppid pgrp session ...; comm may hold spaces and parentheses
            state, _, _, session = stat.read_text().rsplit(")", 1)[1].split()[:4]
        except OSError:  # it ended meanwhile
            continue
        if int(session) == session_id and state != "Z":
            pids.append(int(stat.parent.name))
    return pids


if __name__ == "__main__":
    # `make demo` ran this module before `storyreel demo` existed. The command is run, not imported:
    # serve_app.client.cli imports this module, and imports point one way only (tests/unit/test_import_graph.py).
    command = [sys.executable, "-m", "serve_app.client.cli", "demo", *sys.argv[1:]]
    sys.exit(subprocess.call(command))
