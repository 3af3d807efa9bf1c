"""The servers the tests start as child processes (Chromium, the S3 server, Prometheus), stopped alike."""

from __future__ import annotations

import subprocess


def stop(process: subprocess.Popen, grace_s: float = 10) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``grace_s``."""
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
