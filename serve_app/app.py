"""The application builder: `serve run serve_config.yaml` and `serve deploy` call ``build_app``."""

from ray.serve import Application

from deployments.encoder import Encoder
from deployments.painter import KeyframePainter
from deployments.svd import SVDGenerator
from deployments.writer import SceneWriter
from serve_app.config import AppConfig
from serve_app.ingress import VideoAPI


# No `from __future__ import annotations` here: Ray Serve reads the real annotation of `args` to validate
# the config file's args into an AppConfig.
def build_app(args: AppConfig) -> Application:
    """Bind the deployment graph: VideoAPI -> SceneWriter, KeyframePainter, SVDGenerator, Encoder.

    Args:
        args: the application config (`args` in the Serve config file, validated by Ray Serve).
    """
    writer = SceneWriter.bind(args.writer)
    painter = KeyframePainter.bind(args.painter, args.fallback)
    svd = SVDGenerator.bind(args.video, args.fallback)
    encoder = Encoder.bind(args.video_processing, args.storage.root)
    return VideoAPI.bind(args, writer, painter, svd, encoder)
