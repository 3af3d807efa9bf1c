"""The words jobs and scenes are described in: statuses, content variants, what made a part."""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    """A video job's status, as OpenAI's Videos API names them."""

    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


# A job in one of these never changes again (except by expiring).
TERMINAL: frozenset[JobStatus] = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})


class SceneStatus(StrEnum):
    """Where one scene is in the recipe."""

    PENDING = "pending"
    PAINTING = "painting"
    ANIMATING = "animating"
    ENCODING = "encoding"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class WebhookStatus(StrEnum):
    """Where one webhook event of the outbox stands."""

    PENDING = "pending"  # due for an attempt (again, after a failed one) until its retries run out
    DELIVERED = "delivered"  # a receiver answered 2xx
    FAILED = "failed"  # every attempt failed: it is not sent again


class Variant(StrEnum):
    """The downloadable files of a finished video (``GET /v1/videos/{id}/content?variant=``)."""

    VIDEO = "video"
    THUMBNAIL = "thumbnail"
    SPRITESHEET = "spritesheet"
    CAPTIONS = "captions"
    AUDIO = "audio"


class Animator(StrEnum):
    """What made a scene's frames: the video model, or the title-card fallback."""

    SVD = "svd"
    LTX = "ltx"  # LTX-Video
    WAN = "wan"  # Wan 2.1/2.2
    FALLBACK = "fallback"


class KeyframeSource(StrEnum):
    """What made a scene's first frame."""

    PAINTER = "painter"
    PLACEHOLDER = "placeholder"  # the painter's fallback: a title card
    REFERENCE = "reference"  # the caller's input_reference image
    INPUT_VIDEO = "input_video"  # the last frame of the caller's input_reference video
    CONTINUITY = "continuity"  # the previous scene's last frame
    TEXT = "text"  # no keyframe: a text-conditioned model started from the prompt alone (`keyframes: none`)


class ScriptSource(StrEnum):
    """Who wrote the scenes, when the caller did not (the writer's backends name themselves otherwise)."""

    EXPLICIT = "explicit"


class NoticeCode(StrEnum):
    """What a video's `notices` report: where it differs from what was asked, and why."""

    NARRATION_LONGER_THAN_ASKED = "narration_longer_than_asked"  # it runs past `seconds` to say it all
    SILENT_NARRATION = "silent_narration"  # a scene's voice said nothing; the scene keeps silence
    IGNORED_FIELD = (
        "ignored_field"  # a sampling field the model has no use for, accepted for other servers' clients
    )
