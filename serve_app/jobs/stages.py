"""The recipe's stages in the service (Ray Serve handles), and in this process (engines) for tests.

``ServeStages`` retries a call whose replica died or was overloaded, hands the painter's response to the
animator and the animator's frames to the encoder without receiving either, and counts the bytes it does
receive (``received_bytes``; the benchmark's ``runner_bytes_per_scene``) and the calls it made again
(``retries``, by stage; the metric ``storyreel_stage_retries``).
"""

from __future__ import annotations

import asyncio
import io
import logging
import pickle
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import ray
from ray.exceptions import ActorUnavailableError, ObjectLostError, OwnerDiedError, RayActorError
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentResponse

from core import metrics
from core.errors import FramesLost
from engines.fallback import KeyframeResult, load_under_policy, scene_writer
from engines.media.clips import ClipEncoder, EncodedScene, EncodeRequest, FinalVideo, StitchRequest
from engines.narrator import NarrateRequest, Narration, NarratorEngine
from engines.painter import PainterEngine, PaintRequest
from engines.stages.local import LocalStages
from engines.stages.protocols import Animated, AnimateRequest, AnimationEvent, KeyframeSpec
from engines.video.base import VideoModel
from engines.video.families import build_video_engine
from engines.writer import Script, WriteRequest
from serve_app.config import AppConfig
from serve_app.jobs.recipe import unwrap

logger = logging.getLogger("ray.serve")

# A replica that died (crash, ray.kill, node lost) or a full queue costs a retry of that call, not the job.
RETRYABLE: tuple[type[BaseException], ...] = (RayActorError, ActorUnavailableError, BackPressureError)
CALL_ATTEMPTS = 4

T = TypeVar("T")


@dataclass(frozen=True)
class Painting:
    """A keyframe for the painter deployment to paint: the animator's call carries the painter's response,
    which Serve resolves in the animator, so the picture never comes here."""

    request: PaintRequest


class ServeStages:
    """The four stages as Ray Serve deployment handles.

    Args:
        writer, narrator, painter, animator, encoder: handles of SceneWriter, Narrator, KeyframePainter,
            VideoAnimator, Encoder.
    """

    def __init__(self, writer: Any, narrator: Any, painter: Any, animator: Any, encoder: Any) -> None:
        self.handles = {
            "writer": writer,
            "narrator": narrator,
            "painter": painter,
            "animator": animator,
            "encoder": encoder,
        }
        self.received_bytes = 0
        self.retries: Counter[str] = Counter()
        self.writer, self.narrator, self.painter, self.animator, self.encoder = self, self, self, self, self

    async def write(self, request: WriteRequest) -> Script:
        return self._received(await self._call("write", lambda: self.handles["writer"].write.remote(request)))

    async def narrate(self, request: NarrateRequest) -> Narration:
        return self._received(
            await self._call("narrate", lambda: self.handles["narrator"].narrate.remote(request))
        )

    def paint(self, keyframe: KeyframeSpec) -> KeyframeResult | Painting:
        """The frame at hand, or a `Painting` that ``animate`` asks the painter for (not here: each attempt of
        the animator's call takes a fresh painting, as a dead painter's response stays dead)."""
        if keyframe.painting is None:
            return keyframe.at_hand()
        return Painting(keyframe.painting)

    async def animate(
        self, request: AnimateRequest, keyframe: KeyframeResult | Painting
    ) -> AsyncIterator[AnimationEvent]:
        for attempt in range(1, CALL_ATTEMPTS + 1):
            first: Any = keyframe
            if isinstance(keyframe, Painting):
                first = self.handles["painter"].paint.remote(keyframe.request)
            stream = self.handles["animator"].animate.options(stream=True).remote(request, first)
            try:
                async for event in stream:
                    yield self._received(event)
                return
            except Exception as exc:
                await self._back_off("animate", exc, attempt)

    async def encode_scene(self, request: EncodeRequest, animated: Animated) -> EncodedScene:
        try:
            return self._received(
                await self._call(
                    "encode", lambda: self.handles["encoder"].encode_scene.remote(request, animated)
                )
            )
        except (ObjectLostError, OwnerDiedError) as exc:
            self._count_retry("animate")  # the recipe animates the scene again
            raise FramesLost(f"scene {request.index}'s frames were lost with their animator: {exc}") from exc

    async def stitch(self, request: StitchRequest) -> FinalVideo:
        return self._received(
            await self._call("stitch", lambda: self.handles["encoder"].stitch.remote(request))
        )

    async def _call(self, stage: str, call: Callable[[], DeploymentResponse[T]]) -> T:
        """``await call()``, retried with backoff when the replica died or was overloaded.

        A cancel of the awaiting task (the job was cancelled or deleted) cancels the call in its replica too:
        Serve does that by itself only for a call made while serving a request, and the runner's jobs are
        not requests. The Encoder then kills the call's ffmpeg.
        """
        for attempt in range(1, CALL_ATTEMPTS + 1):
            response = call()
            try:
                return await response
            except asyncio.CancelledError:
                response.cancel()
                raise
            except Exception as exc:
                await self._back_off(stage, exc, attempt)
        raise AssertionError("unreachable")

    async def _back_off(self, stage: str, exc: Exception, attempt: int) -> None:
        """Return after a pause if ``exc`` is worth another attempt; else raise it."""
        if not isinstance(unwrap(exc), RETRYABLE) or attempt == CALL_ATTEMPTS:
            raise exc
        delay = min(2.0**attempt, 15.0)
        logger.warning("%s call failed (%s); retry %d in %.0f s", stage, type(exc).__name__, attempt, delay)
        self._count_retry(stage)
        await asyncio.sleep(delay)

    def _count_retry(self, stage: str) -> None:
        self.retries[stage] += 1
        metrics.get().stage_retries.inc(tags={"stage": stage})

    def _received(self, result: T) -> T:
        self.received_bytes += wire_size(result)
        return result


class _SizePickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        # An object reference crosses as its id (and its owner's address, of similar size), not its object.
        if isinstance(obj, ray.ObjectRef):
            return bytes, (obj.binary() * 2,)
        return NotImplemented


def wire_size(obj: Any) -> int:
    """The bytes ``obj`` takes serialised, with each object reference counted as its id, not its object."""
    buffer = io.BytesIO()
    _SizePickler(buffer, protocol=5).dump(obj)
    return buffer.tell()


def local_stages(
    config: AppConfig, cancelled: set[str] | None = None, video_model: VideoModel | None = None
) -> LocalStages:
    """The stages as engines in this process, loaded under the config's fallback policy.

    Args:
        config: the application config.
        cancelled: ids of cancelled jobs (a cancel adds to it); their scenes stop at the next step.
        video_model: a video model to animate with instead of loading the configured one (a benchmark's
            stand-in); default None.
    """
    policy = config.fallback
    painter, _ = load_under_policy(lambda: PainterEngine(config.painter), policy, "Keyframe painter")
    svd = video_model
    if svd is None:
        svd, _ = load_under_policy(lambda: build_video_engine(config.video), policy, config.video.family)
    storage = config.storage.open()
    clips = ClipEncoder(config.video_processing, storage)
    narrator = NarratorEngine(config.narration, storage, policy)
    narrator.load()
    return LocalStages(
        scene_writer(config.writer, policy), painter, svd, clips, policy, config.video, cancelled, narrator
    )
