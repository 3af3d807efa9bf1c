"""The deployment files agree with the code and with each other.

Every serve config validates against the app's schema and Ray Serve's own; the cluster's serve config is
the one-machine file but for its job store, storage and ingress; the KubeRay manifest carries it verbatim;
the cluster groups hold the GPUs and CPUs the replicas ask for; every autoscaling number says why.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from deployments.animator import VideoAnimator
from deployments.batching import BatchSettings
from deployments.encoder import Encoder
from deployments.narrator import Narrator
from deployments.painter import KeyframePainter
from deployments.writer import SceneWriter
from serve_app.api.ingress import VideoAPI
from serve_app.config import AppConfig, load_serve_config
from serve_app.jobs.runner import JobRunner

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
GPU_CONFIG = ROOT / "serve_config.yaml"
CPU_CONFIG = ROOT / "serve_config.cpu.yaml"
CLUSTER_CONFIG = ROOT / "cluster" / "serve_config.yaml"
# One GPU profile per other animator family, beside serve_config.yaml, on the same cluster.
FAMILY_CONFIGS = {"ltx": ROOT / "serve_config.ltx.yaml", "wan": ROOT / "serve_config.wan.yaml"}
GPU_PROFILES = [GPU_CONFIG, *FAMILY_CONFIGS.values(), CLUSTER_CONFIG]
GPU_IDS = ["svd", *FAMILY_CONFIGS, "cluster"]
ALL_PROFILES = [*GPU_PROFILES, CPU_CONFIG]
ALL_IDS = [*GPU_IDS, "cpu"]
RAYSERVICE = ROOT / "cluster" / "rayservice.yaml"
RAY_CLUSTER = ROOT / "cluster" / "ray-cluster.yaml"

APP_DEPLOYMENTS = {
    d.name for d in (VideoAPI, JobRunner, SceneWriter, Narrator, KeyframePainter, VideoAnimator, Encoder)
}
GPU_DEPLOYMENTS = {"KeyframePainter", "VideoAnimator"}
# The cluster's serve config may differ from serve_config.yaml only here.
CLUSTER_ONLY_ARGS = {"storage"}
CLUSTER_ONLY_DEPLOYMENTS = {"VideoAPI"}
# Keys whose value is a tuning decision: each must carry its reason on the same line.
REASONED_KEYS = (
    "num_replicas",
    "min_replicas",
    "max_replicas",
    "target_ongoing_requests",
    "upscale_delay_s",
    "downscale_delay_s",
    "max_ongoing_requests",
    "max_queued_requests",
)


def _serve_doc(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def _deployments(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (app,) = doc["applications"]
    return {d["name"]: d for d in app["deployments"]}


def _rayservice() -> dict[str, Any]:
    (service,) = [d for d in yaml.safe_load_all(RAYSERVICE.read_text()) if d and d["kind"] == "RayService"]
    return service


def _pack(sizes: list[float], capacity: float) -> int:
    """Bins of `capacity` that first-fit needs for `sizes`, in the worse of ascending and descending order.

    Ray places each replica on one node (one GPU per node here) as it comes; a fraction never spans two.
    """

    def first_fit(order: list[float]) -> int:
        free: list[float] = []
        for size in order:
            assert size <= capacity, f"a replica asking for {size} cannot fit a node of {capacity}"
            for i, room in enumerate(free):
                if size <= room + 1e-9:
                    free[i] -= size
                    break
            else:
                free.append(capacity - size)
        return len(free)

    return max(first_fit(sorted(sizes)), first_fit(sorted(sizes, reverse=True)))


def _replica_demand(which: str, resource: str, path: Path = CLUSTER_CONFIG) -> list[float]:
    """`resource` per replica of every deployment that uses GPUs (or not), at min or max replicas."""
    sizes: list[float] = []
    for name, deployment in _deployments(_serve_doc(path)).items():
        options = deployment.get("ray_actor_options", {})
        if resource == "GPU":
            if name not in GPU_DEPLOYMENTS:
                continue
            amount = options["num_gpus"]
        else:
            # GPU replicas take their CPUs on GPU nodes; every other replica may land on a CPU node.
            if name in GPU_DEPLOYMENTS:
                continue
            amount = options["num_cpus"]
        autoscaling = deployment.get("autoscaling_config")
        count = autoscaling[f"{which}_replicas"] if autoscaling else deployment.get("num_replicas", 1)
        sizes += [amount] * count
    return sizes


# -- the serve configs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ALL_PROFILES, ids=ALL_IDS)
def test_event_streams_leave_the_ingress_most_of_its_request_slots(path: Path) -> None:
    # Each open stream holds one of the replica's max_ongoing_requests for its whole life: the cap on
    # streams must leave room for the polls, creates and health checks behind them.
    slots = _deployments(_serve_doc(path))["VideoAPI"].get(
        "max_ongoing_requests", VideoAPI.max_ongoing_requests
    )
    assert load_serve_config(path).limits.max_event_streams <= slots // 2


@pytest.mark.parametrize("path", ALL_PROFILES, ids=ALL_IDS)
def test_serve_config_validates_against_the_app_schema_and_ray_serve(path: Path) -> None:
    config = load_serve_config(path)

    assert isinstance(config, AppConfig)
    ServeDeploySchema.model_validate(_serve_doc(path))
    (app,) = _serve_doc(path)["applications"]
    assert app["import_path"] == "serve_app.app:build_app"


@pytest.mark.parametrize("path", ALL_PROFILES, ids=ALL_IDS)
def test_every_configured_deployment_exists_in_the_app(path: Path) -> None:
    named = set(_deployments(_serve_doc(path)))

    # Ray Serve rejects an unknown name only at deploy time; a renamed class must fail here first.
    assert named <= APP_DEPLOYMENTS, f"not in the app: {named - APP_DEPLOYMENTS}"
    assert named == APP_DEPLOYMENTS, f"not configured: {APP_DEPLOYMENTS - named}"


def test_gpu_profile_runs_svd_xt_on_a_gpu_fraction() -> None:
    config = load_serve_config(GPU_CONFIG)
    deployments = _deployments(_serve_doc(GPU_CONFIG))
    svd = deployments["VideoAnimator"]

    assert config.video.model == "stabilityai/stable-video-diffusion-img2vid-xt"
    assert config.video.dtype in ("float16", "bfloat16")
    assert config.fallback == "auto"
    assert 0 < svd["ray_actor_options"]["num_gpus"] < 1
    assert 0 < deployments["KeyframePainter"]["ray_actor_options"]["num_gpus"] < 1
    for name in APP_DEPLOYMENTS - GPU_DEPLOYMENTS:
        assert deployments[name]["ray_actor_options"].get("num_gpus", 0) == 0, name
    assert Path(config.storage.root).is_absolute()
    BatchSettings.model_validate(svd["user_config"])
    painter = deployments["KeyframePainter"]
    BatchSettings.model_validate(painter["user_config"])
    assert painter["max_ongoing_requests"] >= painter["user_config"]["max_batch_size"], (
        "batches could never fill"
    )


@pytest.mark.parametrize("path", GPU_PROFILES, ids=GPU_IDS)
def test_svd_shutdown_outlasts_a_generation_and_its_queue_holds_admitted_jobs(path: Path) -> None:
    config = load_serve_config(path)
    svd = _deployments(_serve_doc(path))["VideoAnimator"]

    # A 25-step SVD-XT batch runs for minutes: a grace period under ten would cut generations on scale-down.
    assert svd["graceful_shutdown_timeout_s"] >= 600
    # Scenes of admitted jobs must never meet backpressure; only a runaway caller should.
    assert svd["max_queued_requests"] >= config.jobs.max_concurrent_jobs * config.limits.max_scenes
    assert svd["max_ongoing_requests"] >= svd["user_config"]["max_batch_size"], "batches could never fill"


@pytest.mark.parametrize("path", GPU_PROFILES, ids=GPU_IDS)
def test_the_animator_takes_as_many_scenes_at_once_as_its_step_loop_holds(path: Path) -> None:
    # Under `scheduling: step` every scene in the loop is one ongoing request at the replica: a lower cap
    # would keep the loop below its own max_active_scenes, whichever scheduling the file picks (each offers
    # `step` in a comment).
    config = load_serve_config(path)
    svd = _deployments(_serve_doc(path))["VideoAnimator"]

    assert svd["max_ongoing_requests"] >= config.video.max_active_scenes


@pytest.mark.parametrize("family", FAMILY_CONFIGS)
def test_family_profiles_differ_from_the_svd_profile_only_in_the_animator(family: str) -> None:
    path = FAMILY_CONFIGS[family]
    config, svd_config = load_serve_config(path), load_serve_config(GPU_CONFIG)
    svd = _deployments(_serve_doc(path))["VideoAnimator"]

    assert config.video.family == family
    assert config.video.dtype == "bfloat16"  # both families' text encoders overflow in float16
    assert config.scene_seconds >= svd_config.scene_seconds
    assert config.video.num_frames <= config.limits.max_frames_per_segment
    BatchSettings.model_validate(svd["user_config"])
    assert 0 < svd["ray_actor_options"]["num_gpus"] <= 1
    same = {"painter", "writer", "storage", "jobs", "auth", "cors", "webhooks", "fallback"}
    assert config.model_dump(include=same) == svd_config.model_dump(include=same)
    others = {name: d for name, d in _deployments(_serve_doc(path)).items() if name != "VideoAnimator"}
    assert others == {n: d for n, d in _deployments(_serve_doc(GPU_CONFIG)).items() if n != "VideoAnimator"}


def test_cpu_profile_uses_no_gpu_and_always_falls_back() -> None:
    config = load_serve_config(CPU_CONFIG)
    deployments = _deployments(_serve_doc(CPU_CONFIG))

    assert config.fallback == "always"
    for name, deployment in deployments.items():
        assert deployment.get("ray_actor_options", {}).get("num_gpus", 0) == 0, name


@pytest.mark.parametrize("path", GPU_PROFILES, ids=GPU_IDS)
def test_every_autoscaling_number_says_why(path: Path) -> None:
    lines = path.read_text().splitlines()
    tuned = [line for line in lines if re.match(rf"\s*({'|'.join(REASONED_KEYS)}):", line)]
    unexplained = [line.strip() for line in tuned if "#" not in line.split(":", 1)[1]]

    assert len(tuned) >= 4 * 5, "four autoscaled deployments, five numbers each"
    assert unexplained == []


def test_every_deployment_but_the_ingress_autoscales() -> None:
    deployments = _deployments(_serve_doc(GPU_CONFIG))

    for name in APP_DEPLOYMENTS - {"VideoAPI"}:
        autoscaling = deployments[name]["autoscaling_config"]
        assert 1 <= autoscaling["min_replicas"] <= autoscaling["max_replicas"], name
        assert {"upscale_delay_s", "downscale_delay_s"} <= set(autoscaling), name
        if name == "JobRunner":  # jobs are not requests: its own policy counts jobs in flight and waiting
            policy = autoscaling["policy"]["policy_function"]
            assert (
                policy == "serve_app.jobs.runner:jobs_autoscaling_policy"
                and "target_ongoing_requests" not in autoscaling
            )
        else:
            assert "target_ongoing_requests" in autoscaling, name
    # One ingress replica on one machine with its SQLite store; several on the cluster's PostgreSQL.
    assert deployments["VideoAPI"]["num_replicas"] == 1
    assert "autoscaling_config" not in deployments["VideoAPI"]
    cluster_ingress = _deployments(_serve_doc(CLUSTER_CONFIG))["VideoAPI"]["autoscaling_config"]
    assert 2 <= cluster_ingress["min_replicas"] <= cluster_ingress["max_replicas"]


# -- the cluster files -------------------------------------------------------------------------------------


def _without(mapping: dict[str, Any], keys: set[str]) -> dict[str, Any]:
    return {key: value for key, value in mapping.items() if key not in keys}


def test_the_cluster_config_is_serve_config_yaml_but_for_its_stores_and_ingress() -> None:
    one, cluster = _serve_doc(GPU_CONFIG), _serve_doc(CLUSTER_CONFIG)
    (one_app,), (cluster_app,) = one["applications"], cluster["applications"]

    assert _without(cluster, {"applications"}) == _without(one, {"applications"})
    assert _without(cluster_app, {"args", "deployments"}) == _without(one_app, {"args", "deployments"})
    assert _without(cluster_app["args"], CLUSTER_ONLY_ARGS) == _without(one_app["args"], CLUSTER_ONLY_ARGS), (
        "cluster/serve_config.yaml differs from serve_config.yaml outside `storage`: copy the change over"
    )
    assert _without(_deployments(cluster), CLUSTER_ONLY_DEPLOYMENTS) == _without(
        _deployments(one), CLUSTER_ONLY_DEPLOYMENTS
    )


def test_rayservice_serves_exactly_the_cluster_config() -> None:
    service = _rayservice()

    assert service["apiVersion"] == "ray.io/v1"
    assert yaml.safe_load(service["spec"]["serveConfigV2"]) == _serve_doc(CLUSTER_CONFIG), (
        "cluster/rayservice.yaml's serveConfigV2 differs from cluster/serve_config.yaml: paste the file in again"
    )


def _k8s_groups() -> dict[str, dict[str, Any]]:
    cluster = _rayservice()["spec"]["rayClusterConfig"]
    return {"head": cluster["headGroupSpec"]} | {g["groupName"]: g for g in cluster["workerGroupSpecs"]}


def _container(group: dict[str, Any]) -> dict[str, Any]:
    (container,) = group["template"]["spec"]["containers"]
    return container


def test_the_cluster_keeps_jobs_in_postgresql_and_artifacts_in_object_storage() -> None:
    storage = load_serve_config(CLUSTER_CONFIG).storage
    groups = _k8s_groups()
    launcher = yaml.safe_load(RAY_CLUSTER.read_text())

    assert storage.root.startswith("s3://") and storage.database_url.startswith("postgresql://")
    assert set(groups) == {"head", "gpu", "cpu"}
    for name, group in groups.items():
        # No folder shared between pods: each stages files in a scratch folder of its own.
        mounts = {m["mountPath"]: m["name"] for m in _container(group)["volumeMounts"]}
        volumes = {v["name"]: v for v in group["template"]["spec"]["volumes"]}
        assert storage.scratch in mounts, f"{name} pods have no scratch folder at {storage.scratch}"
        assert set(volumes[mounts[storage.scratch]]) == {"name", "emptyDir"}, name
        assert all("persistentVolumeClaim" not in volume for volume in volumes.values()), name
    documents = [d["kind"] for d in yaml.safe_load_all(RAYSERVICE.read_text())]
    assert documents == ["RayService"]  # no volume claims left
    assert all("-v " not in option for option in launcher["docker"]["run_options"])


@pytest.mark.parametrize("group", ["head", "gpu", "cpu"])
def test_every_pod_reads_the_stores_credentials_and_the_api_keys_from_secrets(group: str) -> None:
    # Any replica (an ingress, a runner, an encoder) may land on any pod.
    config = load_serve_config(CLUSTER_CONFIG)
    env = {e["name"]: e for e in _container(_k8s_groups()[group]).get("env", [])}

    for variable in ("PGHOST", "PGUSER", "PGPASSWORD"):
        assert env[variable]["valueFrom"]["secretKeyRef"]["name"] == "storyreel-postgres", variable
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        assert env[variable]["valueFrom"]["secretKeyRef"]["optional"] is True, variable  # IAM roles need none
    for variable in (config.auth.api_keys_env, config.webhooks.secret_env):
        # Without the secret the pod still starts: an open API, webhooks refused.
        assert env[variable]["valueFrom"]["secretKeyRef"]["optional"] is True, variable
    assert all("value" not in entry for entry in env.values())  # never a secret written into the manifest


def test_the_head_can_restart_while_the_workers_keep_serving() -> None:
    cluster = _rayservice()["spec"]["rayClusterConfig"]
    launcher = yaml.safe_load(RAY_CLUSTER.read_text())
    doc = _serve_doc(CLUSTER_CONFIG)

    fault_tolerance = cluster["gcsFaultToleranceOptions"]
    assert fault_tolerance["redisAddress"]
    assert fault_tolerance["redisPassword"]["valueFrom"]["secretKeyRef"]["name"] == "storyreel-redis"
    head_start = " ".join(launcher["head_start_ray_commands"])
    assert "RAY_REDIS_ADDRESS=" in head_start and "--redis-password=" in head_start
    assert "RAY_gcs_rpc_server_reconnect_timeout_s" in " ".join(launcher["worker_start_ray_commands"])
    # A proxy on every node, and ingress replicas that are not tied to the head.
    assert doc["proxy_location"] == "EveryNode"
    for name, deployment in _deployments(doc).items():
        assert "resources" not in deployment.get("ray_actor_options", {}), name
    assert launcher["available_node_types"]["head"]["resources"] == {"CPU": 1}


def _k8s_worker_capacity(group: str, resource: str) -> tuple[float, int, int]:
    spec = _k8s_groups()[group]
    limits = _container(spec)["resources"]["limits"]
    per_pod = float(limits.get("nvidia.com/gpu" if resource == "GPU" else "cpu", 0))
    return per_pod, spec["minReplicas"], spec["maxReplicas"]


def _launcher_worker_capacity(group: str, resource: str) -> tuple[float, int, int]:
    node_type = yaml.safe_load(RAY_CLUSTER.read_text())["available_node_types"][group]
    return float(node_type["resources"].get(resource, 0)), node_type["min_workers"], node_type["max_workers"]


@pytest.mark.parametrize(
    "capacity", [_k8s_worker_capacity, _launcher_worker_capacity], ids=["kuberay", "ray-up"]
)
@pytest.mark.parametrize(("group", "resource"), [("gpu", "GPU"), ("cpu", "CPU")])
@pytest.mark.parametrize("path", GPU_PROFILES, ids=GPU_IDS)
def test_worker_groups_hold_what_the_replicas_ask_for(
    capacity: Any, group: str, resource: str, path: Path
) -> None:
    per_node, min_nodes, max_nodes = capacity(group, resource)
    # GPU fractions pack per device: with one GPU per node a node is a device.
    unit = 1.0 if resource == "GPU" else per_node
    assert resource == "CPU" or per_node == 1, "the packing below assumes one GPU per node"

    at_min = _pack(_replica_demand("min", resource, path), unit)
    at_max = _pack(_replica_demand("max", resource, path), unit)

    assert at_min >= 1
    assert at_min <= min_nodes, f"{group}: min replicas need {at_min} nodes, the group starts {min_nodes}"
    assert at_max <= max_nodes, f"{group}: max replicas need {at_max} nodes, the group allows {max_nodes}"


@pytest.mark.parametrize("path", GPU_PROFILES, ids=GPU_IDS)
def test_gpu_replicas_find_cpus_on_gpu_nodes(path: Path) -> None:
    deployments = _deployments(_serve_doc(path))
    per_node_cpus = float(_container(_k8s_groups()["gpu"])["resources"]["limits"]["cpu"])
    launcher_cpus = yaml.safe_load(RAY_CLUSTER.read_text())["available_node_types"]["gpu"]["resources"]["CPU"]

    # The most GPU replicas one node can hold (two SVD at 0.5, or four painters at 0.25) need their CPUs too.
    for name in GPU_DEPLOYMENTS:
        options = deployments[name]["ray_actor_options"]
        per_gpu = round(1 / options["num_gpus"])
        assert per_gpu * options["num_cpus"] <= min(per_node_cpus, launcher_cpus), name


def test_images_are_the_ray_version_in_use() -> None:
    import ray

    cluster = _rayservice()["spec"]["rayClusterConfig"]
    launcher = yaml.safe_load(RAY_CLUSTER.read_text())

    assert cluster["rayVersion"] == ray.__version__
    for name, group in _k8s_groups().items():
        assert _container(group)["image"].startswith(f"rayproject/ray:{ray.__version__}-"), name
    assert launcher["docker"]["image"].startswith(f"rayproject/ray:{ray.__version__}-")
