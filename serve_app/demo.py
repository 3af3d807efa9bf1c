"""`make demo`: start the service on the CPU profile, make one video over HTTP, save it, shut down.

    python -m serve_app.demo [--prompt TEXT] [--seconds N] [--out DIR] [--config FILE]

It starts `serve run` on a fresh local Ray instance (never a cluster an earlier run left recorded),
talks to it like any client would, and stops everything it started, also on Ctrl-C or an error.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from tqdm import tqdm

DEFAULT_PROMPT = (
    "A lighthouse keeper climbs the stairs at dusk. Far below, a whale glows under the waves. "
    "灯塔的光和鲸鱼的歌声在海面上相遇。"
)
VARIANTS = {
    "video": "video.mp4",
    "thumbnail": "thumbnail.jpg",
    "spritesheet": "spritesheet.jpg",
    "captions": "captions.vtt",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="the story idea")
    parser.add_argument("--seconds", default="6", help="video length in seconds (default 6)")
    parser.add_argument("--size", default="1280x720", help="WIDTHxHEIGHT (default 1280x720)")
    parser.add_argument(
        "--out", type=Path, default=Path("out/demo"), help="where the files go (default out/demo)"
    )
    parser.add_argument(
        "--config", default="serve_config.cpu.yaml", help="Serve config (default the CPU profile)"
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="where that config serves")
    parser.add_argument("--startup-timeout", type=float, default=300, help="seconds to wait for the service")
    args = parser.parse_args()

    if _healthy(args.url):
        print(f"Something already serves {args.url}; stop it first (it may be an earlier `serve run`).")
        return 1
    server = _start_server(args.config)
    try:
        _wait_until_up(args.url, server, args.startup_timeout)
        return _make_video(args)
    finally:
        _stop(server)


def _start_server(config: str) -> subprocess.Popen:
    log = Path("out/demo-serve.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"Starting `serve run {config}` on a fresh local Ray instance (log: {log}) ...")
    # RAY_ADDRESS=local: a new local instance, not whatever cluster a previous run left recorded.
    env = os.environ | {"RAY_ADDRESS": "local"}
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "serve"), "run", config],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,  # its own session, which every Ray process it starts joins: see kill_session
    )


def _wait_until_up(url: str, server: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"`serve run` exited with status {server.returncode}; see out/demo-serve.log")
        if _healthy(url):
            return
        time.sleep(1)
    raise SystemExit(f"The service did not come up in {timeout:.0f} s; see out/demo-serve.log")


def _make_video(args: argparse.Namespace) -> int:
    client = httpx.Client(base_url=args.url, timeout=60)
    created = client.post(
        "/v1/videos", json={"prompt": args.prompt, "seconds": args.seconds, "size": args.size}
    )
    if created.status_code != 200:
        print(f"The service refused the request: {created.json()['error']['message']}")
        return 1
    video = created.json()
    with tqdm(total=100, desc="Generating", unit="%") as bar:
        while video["status"] not in ("completed", "failed", "cancelled"):
            time.sleep(0.5)
            video = client.get(f"/v1/videos/{video['id']}").json()
            bar.update(video["progress"] - bar.n)
    if video["status"] != "completed":
        print(f"The video {video['status']}: {video['error']}")
        return 1

    args.out.mkdir(parents=True, exist_ok=True)
    for variant, name in VARIANTS.items():
        response = client.get(f"/v1/videos/{video['id']}/content", params={"variant": variant})
        response.raise_for_status()
        (args.out / name).write_bytes(response.content)
    print(
        f"\n{video['title'] or 'Video'} ({video['seconds']} s, {video['size']}, {len(video['scenes'])} scenes):"
    )
    for scene in video["scenes"]:
        print(f"  scene {scene['index']}: {scene['generator']:<8} {scene['caption']}")
    print(f"\nWrote {', '.join(str(args.out / name) for name in VARIANTS.values())}")
    return 0


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _stop(server: subprocess.Popen) -> None:
    if server.poll() is not None:
        return
    print("Shutting the service down ...")
    os.killpg(server.pid, signal.SIGINT)  # `serve run` shuts Serve and its local Ray down on Ctrl-C
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
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
    sys.exit(main())
