"""Three Ray nodes on this machine (`ray start`: a head, a "GPU" worker with a logical GPU, a CPU worker),
the app deployed with `serve deploy`, its stages placed on different nodes by custom resources.

Two copies of the app run side by side, one with a folder every node reaches and SQLite (one machine's
disk stands in for a shared volume), one with PostgreSQL and an S3 bucket, where each process stages files
in a scratch folder of its own. Two deaths, one after the other on the same cluster, each mid-job, every
process at once. First the GPU node (each app's animator, painter and job runner), and a replacement joins:
both jobs complete. Then every node (the machine died, as a workstation running `serve run` dies), and the
cluster is started and the SQLite copy deployed again: its job completes. Each time the scenes finished
before the kill are not made again.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml

from serve_app.client.demo import kill_session
from tests.fixtures.serve import get_video, tiny_svd_args
from tests.support.ports import free_port
from tests.support.postgres import new_database
from tests.support.s3 import new_bucket

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BIN = Path(sys.executable).parent
TOKEN = Path.home() / ".ray" / "auth_token"
# The deployment each node kind hosts (by a custom resource only that kind of node has).
PLACEMENT = {
    "head_node": ("VideoAPI", "JobBoard"),
    "gpu_node": ("VideoAnimator", "KeyframePainter", "JobRunner"),
    "cpu_node": ("Encoder", "Narrator", "SceneWriter"),
}


@dataclass
class Nodes:
    """A Ray cluster of separate `ray start` nodes, each in a session of its own so it can die alone."""

    folder: Path
    port: int = field(default_factory=free_port)
    dashboard_port: int = field(default_factory=free_port)
    sessions: dict[str, int] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        # This machine's Ray clusters use token auth once a token file exists (as the Ray CLI expects).
        auth = {"RAY_AUTH_MODE": "token"} if TOKEN.exists() else {}
        # A dead node is noticed in seconds, not the default half minute.
        health = {"RAY_health_check_period_ms": "500", "RAY_health_check_failure_threshold": "4"}
        return os.environ | auth | health | {"RAY_ADDRESS": f"127.0.0.1:{self.port}"}

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start(self, *kinds: str) -> None:
        """Start a node of each of ``kinds`` (head_node, gpu_node, cpu_node), in that order; a second node of a
        kind replaces the first. One at a time: two `ray start`s joining at once on one machine time out
        waiting for their registration (Ray 2.60)."""
        for kind in kinds:
            process = self._ray_start(kind)
            output, _ = process.communicate(timeout=120)
            assert process.returncode == 0, output[-3000:]
            self.sessions[kind] = process.pid

    def _ray_start(self, kind: str) -> subprocess.Popen:
        resources = json.dumps({kind: 1})
        if kind == "head_node":
            where = [
                "--head",
                f"--port={self.port}",
                f"--dashboard-port={self.dashboard_port}",
                "--dashboard-host=127.0.0.1",
                f"--temp-dir={self.folder / 'ray'}",  # not /tmp/ray: no other Ray finds this cluster
                "--num-cpus=2",
            ]
        else:
            where = [f"--address=127.0.0.1:{self.port}", "--num-cpus=3"]
            where += ["--num-gpus=2"] if kind == "gpu_node" else []  # one animator per app
        # No log monitor: nobody tails the replicas' logs through a driver here, and each node's would read
        # every log file once a second.
        quiet = ["--disable-usage-stats", "--include-log-monitor=false"]
        return subprocess.Popen(
            [str(BIN / "ray"), "start", *where, f"--resources={resources}", *quiet],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # the node's daemons, and the workers they start, stay in this session
        )

    def kill(self, kind: str) -> None:
        """Every process of the node at once: the machine died."""
        kill_session(self.sessions.pop(kind))

    def stop(self) -> None:
        """Every process of every node at once. A cluster started again takes new ports: the old ones may
        still be held by the dead head's connections."""
        for kind in list(self.sessions):
            self.kill(kind)
        self.port, self.dashboard_port = free_port(), free_port()

    def get(self, path: str) -> Any:
        headers = {"Authorization": f"Bearer {TOKEN.read_text().strip()}"} if TOKEN.exists() else {}
        response = httpx.get(f"{self.dashboard}{path}", headers=headers, timeout=30)
        response.raise_for_status()
        return response.json()

    def node_kinds(self) -> dict[str, str]:
        """Each live node's id -> its kind."""
        found = self.get("/api/v0/nodes?detail=1&limit=100")["data"]["result"]["result"]
        kinds = {}
        for node in found:
            if node["state"] == "ALIVE":
                kinds[node["node_id"]] = next(k for k in PLACEMENT if k in node["resources_total"])
        return kinds

    def replica_nodes(self, app: str) -> dict[str, set[str]]:
        """Each deployment of ``app`` -> the kinds of node its running replicas are on."""
        kinds = self.node_kinds()
        deployments = self.get("/api/serve/applications/")["applications"][app]["deployments"]
        return {
            name: {
                kinds.get(replica.get("node_id"), "?")
                for replica in deployment["replicas"]
                if replica["state"] == "RUNNING"
            }
            for name, deployment in deployments.items()
        }

    def placed_as_planned(self, app: str) -> dict[str, set[str]] | None:
        """The nodes of ``app``'s replicas once each deployment runs on the kind of node ``PLACEMENT`` says."""
        placed = self.replica_nodes(app)
        planned = {name: {kind} for kind, names in PLACEMENT.items() for name in names}
        return placed if placed == planned else None


@pytest.fixture(scope="module")
def nodes() -> Iterator[Nodes]:
    with tempfile.TemporaryDirectory(prefix="storyreel-nodes-") as folder:
        cluster = Nodes(Path(folder))
        try:
            cluster.start(*PLACEMENT)
            yield cluster
        finally:
            cluster.stop()


@dataclass
class App:
    """One copy of the app on the cluster: its name (and route), storage, and how to read its job back."""

    name: str
    storage: dict[str, str]
    env: dict[str, str]
    stored: Callable[[str], tuple[str, int, list[int]]]  # a job's status, attempts and completed scenes

    def url(self, port: int) -> str:
        return f"http://127.0.0.1:{port}/{self.name}"


def on_sqlite(folder: Path) -> App:
    def stored(video_id: str) -> tuple[str, int, list[int]]:
        with sqlite3.connect(folder / "jobs.sqlite3") as db:
            return _stored(db.execute, "?", video_id)

    return App("local", {"root": str(folder)}, {}, stored)


def on_postgres_and_s3(database: str, bucket: str, scratch: Path, env: dict[str, str]) -> App:
    def stored(video_id: str) -> tuple[str, int, list[int]]:
        with psycopg.connect(database) as db:
            return _stored(db.execute, "%s", video_id)

    return App("s3", {"root": bucket, "database": database, "scratch": str(scratch)}, env, stored)


def _stored(execute: Callable[..., Any], mark: str, video_id: str) -> tuple[str, int, list[int]]:
    status, attempts = execute(f"SELECT status, attempts FROM jobs WHERE id = {mark}", (video_id,)).fetchone()
    done = execute(f"SELECT idx FROM scenes WHERE job_id = {mark} AND status = 'completed'", (video_id,))
    return status, attempts, [idx for (idx,) in done.fetchall()]


def serve_config(folder: Path, port: int, svd_path: Path, apps: list[App]) -> Path:
    args = tiny_svd_args(svd_path, folder) | {
        "narration": {"backend": "espeak"},
        "jobs": {"lease_seconds": 3, "sweep_seconds": 1},
    }
    deployments = []
    for kind, names in PLACEMENT.items():
        for name in names:
            options: dict[str, Any] = {"num_cpus": 0.1, "resources": {kind: 0.01}}
            if name == "VideoAnimator":
                options["num_gpus"] = 1  # a logical GPU: only the GPU node has them
            deployments.append({"name": name, "ray_actor_options": options})
    config = {
        "proxy_location": "HeadOnly",  # one machine: a proxy per node would fight over the port
        "http_options": {"host": "127.0.0.1", "port": port},
        "applications": [
            {
                "name": app.name,
                "route_prefix": f"/{app.name}",
                "import_path": "serve_app.app:build_app",
                "runtime_env": {"env_vars": app.env},
                "args": args | {"storage": app.storage},
                "deployments": deployments,
            }
            for app in apps
        ],
    }
    path = folder / "serve_config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def wait_for(what: str, check, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout_s} s")


@dataclass
class Deployment:
    """Copies of the app on the cluster, deployed from one serve config, and the port they answer on."""

    nodes: Nodes
    folder: Path
    svd_path: Path
    port: int = field(default_factory=free_port)
    apps: list[App] = field(default_factory=list)

    def deploy(self, apps: list[App]) -> None:
        """`serve deploy` a config of ``apps``; return once each answers and runs where `PLACEMENT` says."""
        self.apps = apps
        config = serve_config(self.folder, self.port, self.svd_path, apps)
        deploy = subprocess.run(
            [str(BIN / "serve"), "deploy", str(config), "--address", self.nodes.dashboard],
            env=self.nodes.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        for app in apps:
            wait_for(f"{app.name} answers", lambda app=app: self.healthy(app), 240)
            # Each stage on the node its resource names: the requests of a job's scenes cross all three.
            # Generous: beside the rest of the suite (make test runs two workers) a busy host takes minutes.
            wait_for(
                f"{app.name} placed as planned", lambda app=app: self.nodes.placed_as_planned(app.name), 240
            )

    def healthy(self, app: App) -> bool:
        try:
            return "jobs_running" in httpx.get(f"{app.url(self.port)}/healthz", timeout=2).text
        except httpx.HTTPError:
            return False

    def start_jobs(self, captions: list[str]) -> dict[str, str]:
        """A job on each app, its scenes one after another (continuity), so that a kill lands between
        finished and unfinished ones; returns each app's video id once its first scene has finished."""
        body = {
            "prompt": "nodes",
            "scenes": [{"caption": c} for c in captions],
            "seconds": len(captions),
            "continuity": True,
        }
        videos = {
            app.name: httpx.post(f"{app.url(self.port)}/v1/videos", json=body, timeout=30).json()["id"]
            for app in self.apps
        }

        def first_scene_done(app: App) -> bool:
            video = get_video(app.url(self.port), videos[app.name])
            return bool(video and video["scenes"] and video["scenes"][0]["status"] == "completed")

        for app in self.apps:
            wait_for(f"{app.name}'s first scene finishes", lambda app=app: first_scene_done(app), 240)
        return videos

    def done_before_the_kill(
        self, videos: dict[str, str], attempts: int, scenes: int
    ) -> dict[str, list[int]]:
        """Each app's finished scenes, read from its store; the job still in progress in its attempt."""
        done = {}
        for app in self.apps:
            status, job_attempts, done[app.name] = app.stored(videos[app.name])
            assert status == "in_progress" and job_attempts == attempts, (app.name, status, job_attempts)
            assert 0 in done[app.name] and len(done[app.name]) < scenes, app.name
        return done

    def check_finished(
        self, videos: dict[str, str], done_before: dict[str, list[int]], attempts: int
    ) -> None:
        """Each job completes by the tiny SVD, the scenes finished before the kill kept their first attempt,
        the job was taken over ``attempts`` times in all, and its video downloads."""
        for app in self.apps:

            def finished(app: App = app) -> dict | None:
                video = get_video(app.url(self.port), videos[app.name])
                return video if video and video["status"] in ("completed", "failed", "cancelled") else None

            video = wait_for(f"{app.name}'s job ends", finished, 300)
            assert video["status"] == "completed", video
            scene_attempts = {scene["index"]: scene["attempts"] for scene in video["scenes"]}
            # The scenes finished before the kill were not made again.
            assert all(scene_attempts[i] == 1 for i in done_before[app.name]), scene_attempts
            assert all(scene["generator"] == "svd" for scene in video["scenes"])
            assert app.stored(videos[app.name])[1] == attempts  # a new runner took the job over
            content = httpx.get(f"{app.url(self.port)}/v1/videos/{videos[app.name]}/content", timeout=60)
            assert content.status_code == 200 and content.content[4:8] == b"ftyp"


@pytest.fixture(scope="module")
def deployment(nodes, tiny_svd_path, tmp_path_factory, postgres_server, s3_server) -> Deployment:
    folder = tmp_path_factory.mktemp("nodes")
    deployment = Deployment(nodes, folder, tiny_svd_path)
    deployment.deploy(
        [
            on_sqlite(folder / "storage"),
            on_postgres_and_s3(
                new_database(postgres_server),
                new_bucket(s3_server) + "/artifacts",
                folder / "scratch",
                s3_server,
            ),
        ]
    )
    return deployment


def test_a_node_dies_mid_job_and_its_replacement_finishes_without_redoing_scenes(deployment):
    captions = ["One fox.", "Two owls.", "Three bats.", "Four cats.", "Five."]
    videos = deployment.start_jobs(captions)
    deployment.nodes.kill("gpu_node")
    done_before = deployment.done_before_the_kill(videos, attempts=1, scenes=len(captions))

    deployment.nodes.start("gpu_node")  # a replacement: Serve starts the lost replicas on it

    deployment.check_finished(videos, done_before, attempts=2)
    for app in deployment.apps:
        assert deployment.nodes.placed_as_planned(app.name)  # the lost replicas came back on the replacement


def test_every_node_dies_mid_job_and_the_cluster_started_again_finishes_without_redoing_scenes(deployment):
    # The copy on SQLite and a folder, the store of a workstation's `serve run`: its job must survive the
    # machine's death. (Deploying the PostgreSQL copy again as well cost what the crash test's own two
    # clusters had: bench/RESULTS.md, 2026-12-07 17:25.)
    sqlite = [app for app in deployment.apps if app.name == "local"]
    deployment.deploy(sqlite)  # the same config with one copy: the other is deleted
    captions = ["A lamp.", "A moth.", "A storm.", "Dawn."]
    videos = deployment.start_jobs(captions)
    deployment.nodes.stop()  # the machine died: the head, its GCS and every replica, at once
    done_before = deployment.done_before_the_kill(videos, attempts=1, scenes=len(captions))

    # Started again, as a workstation's `serve run` or a KubeRay cluster would be: the jobs are only in the
    # store, and the runners of the new deployment find them.
    deployment.nodes.start(*PLACEMENT)
    deployment.deploy(sqlite)

    deployment.check_finished(videos, done_before, attempts=2)
