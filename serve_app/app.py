"""The application builder: `serve run serve_config.yaml` and `serve deploy` call ``build_app``."""

from typing import Any

from ray.serve import Application, Deployment

from deployments.animator import VideoAnimator
from deployments.board import JobBoard
from deployments.encoder import Encoder
from deployments.narrator import Narrator
from deployments.painter import KeyframePainter
from deployments.writer import SceneWriter
from serve_app.api.ingress import VideoAPI
from serve_app.config import AppConfig
from serve_app.jobs.runner import JobRunner


# No `from __future__ import annotations` here: Ray Serve reads the real annotation of `args` to validate
# the config file's args into an AppConfig.
def build_app(args: AppConfig) -> Application:
    """Bind the deployment graph: VideoAPI -> JobRunner -> SceneWriter, Narrator, KeyframePainter, VideoAnimator,
    Encoder,
    with the JobBoard carrying cancels from VideoAPI to VideoAnimator.

    Args:
        args: the application config (`args` in the Serve config file, validated by Ray Serve).
    """
    return bind_graph(args)


def bind_graph(config: AppConfig, options: dict[str, dict[str, Any]] | None = None) -> Application:
    """``build_app`` with per-deployment option overrides (what a config file's `deployments:` sets).

    Args:
        config: the application config.
        options: deployment name -> `Deployment.options(...)` keywords, e.g.
            ``{"VideoAnimator": {"num_replicas": 2, "ray_actor_options": {"num_gpus": 0.5}}}``; default none.
    """
    options = options or {}

    def configured(deployment: Any) -> Deployment:  # a @serve.deployment class (typed as its class)
        return deployment.options(**options.get(deployment.name, {}))

    board = configured(JobBoard).bind()
    writer = configured(SceneWriter).bind(config.writer, config.fallback)
    narrator = configured(Narrator).bind(config.narration, config.storage.open(), config.fallback)
    # A video model that starts from text (`keyframes: none`) is handed given frames only: none is painted.
    painted = getattr(config.video, "keyframes", "painted") == "painted"
    painter = configured(KeyframePainter).bind(config.painter, config.fallback, painted)
    svd = configured(VideoAnimator).bind(config.video, config.fallback, board)
    encoder = configured(Encoder).bind(config.video_processing, config.storage.open())
    runner = configured(JobRunner).bind(config, writer, narrator, painter, svd, encoder)
    return configured(VideoAPI).bind(config, runner, board)
