"""Encoder: a job's CPU work (scene clips, the final video and its extras) as a Ray Serve deployment."""

from __future__ import annotations

from ray import ObjectRef, serve

from core.storage import Storage
from engines.media import VideoProcessingConfig, ffmpeg
from engines.media.clips import ClipEncoder, EncodedScene, EncodeRequest, FinalVideo, StitchRequest
from engines.stages.protocols import Animated


@serve.deployment(
    ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=4, graceful_shutdown_timeout_s=120
)
class Encoder:
    """Writes scene clips and assembles the final video, poster, spritesheet and captions.

    A cancelled call (the runner cancels it when its job is cancelled or deleted; Serve raises that in the
    method as ``asyncio.CancelledError``) kills the call's ffmpeg at once (``ffmpeg.to_thread_in_scope``).

    Args:
        config: the `video_processing` section of the app config.
        storage: where the job files are kept.
    """

    def __init__(self, config: VideoProcessingConfig, storage: Storage) -> None:
        self.clips = ClipEncoder(config, storage)

    async def encode_scene(self, request: EncodeRequest, animated: Animated) -> EncodedScene:
        """Encode the frames of ``animated`` (fetched here from the animator, past the job runner)."""
        frames = animated.frames
        if isinstance(frames, list) and frames and isinstance(frames[0], ObjectRef):
            frames = await frames[0]
        return await ffmpeg.to_thread_in_scope(self.clips.encode_scene, request, frames)

    async def stitch(self, request: StitchRequest) -> FinalVideo:
        return await ffmpeg.to_thread_in_scope(self.clips.stitch, request)
