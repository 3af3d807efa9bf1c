"""The one configuration schema of the application (the `args` of serve_config.yaml).

It gathers the seed's VIDEO_CONFIG (``video``) and VIDEO_PROCESSING_CONFIG (``video_processing``) with the
scene writer, the keyframe painter, storage, limits and job settings. Every field is described; Ray
Serve validates the `args` of a config file against it before any replica starts.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from core.storage import Storage, check_url, is_url, open_storage
from engines.fallback import FallbackPolicy
from engines.media import VideoProcessingConfig
from engines.narrator import NarrationConfig
from engines.painter import PainterConfig
from engines.video.config import SVDConfig, VideoConfig, rules_of
from engines.writer import WriterConfig
from serve_app.protocol import MAX_SCENES
from serve_app.store.databases import is_postgres
from serve_app.webhooks.settings import WebhooksConfig

logger = logging.getLogger("ray.serve")


class StorageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    root: str = Field(
        "storage",
        description="Where job artifacts (scene clips, videos, posters, captions) are kept: a folder, or an "
        "object store URL such as `s3://bucket/prefix` (credentials and endpoint from the standard "
        "environment: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT_URL`). A folder on a "
        "multi-node cluster must be a volume every node mounts; an object store needs none.",
    )
    scratch: str | None = Field(
        None,
        description="With an object store root: the local folder each process stages files in (ffmpeg "
        "reads only local files), a subfolder per process; default `storyreel-scratch` in the system "
        "temp folder. Each machine's (or container's) own disk, never a shared volume: a process removes "
        "the subfolders of processes gone from its machine. Unused with a folder root.",
    )
    presign: bool = Field(
        False,
        description="With an object store root: the content route redirects (307) to a presigned URL "
        "instead of streaming the file through the ingress. The URL names the store's endpoint as the "
        "service sees it, so clients must reach that endpoint too.",
    )
    presign_seconds: int = Field(
        3600, ge=60, le=7 * 24 * 3600, description="How long a presigned content URL stays valid."
    )
    database: str | None = Field(
        None,
        description="The job store: a SQLite file (default `<root>/jobs.sqlite3`; keep it on local disk) or "
        "a PostgreSQL URL, `postgresql://user@host:5432/storyreel`. Leave the password out of the URL: "
        "libpq reads `PGPASSWORD` (or `PGPASSFILE`) from the replicas' environment. Required with an "
        "object store root.",
    )

    @field_validator("root")
    @classmethod
    def _known_storage(cls, value: str) -> str:
        if is_url(value):
            try:
                check_url(value)
            except ValueError as exc:
                raise ValueError(f"storage.root={exc}") from None
        return value

    @model_validator(mode="after")
    def _object_store_rules(self) -> StorageConfig:
        remote = is_url(self.root)
        if remote and self.database is None:
            raise ValueError(
                f"storage.database is required with storage.root={self.root!r}: the job store cannot live "
                "in an object store (give a PostgreSQL URL, or a SQLite file on local disk)"
            )
        if self.presign and not remote:
            raise ValueError(
                f"storage.presign=true needs an object store root; storage.root={self.root!r} is a folder"
            )
        return self

    def open(self, patient: bool = True) -> Storage:
        """Where the artifacts are kept (no connection is made until a file moves). ``patient``: an object
        store's outage is waited out; False (the ingress): refused at once, as a 503 with Retry-After."""
        return open_storage(self.root, self.scratch, patient)

    @field_validator("database")
    @classmethod
    def _known_database(cls, value: str | None) -> str | None:
        if value is not None and "://" in value and not is_postgres(value):
            scheme = value.split("://", 1)[0]
            raise ValueError(f"storage.database={scheme}://...: only postgresql:// URLs or SQLite file paths")
        return value

    @property
    def database_url(self) -> str:
        """What `JobStore` opens: the PostgreSQL URL, or the SQLite file's path."""
        return self.database or str(Path(self.root) / "jobs.sqlite3")

    @property
    def database_path(self) -> Path:
        """The SQLite file (tests and tools that read it directly); not for a PostgreSQL store."""
        if is_postgres(self.database_url):
            raise ValueError("storage.database is a PostgreSQL URL, not a file")
        return Path(self.database_url)


class LimitsConfig(BaseModel):
    """Bounds on what one request may ask for: they keep one caller from holding the GPUs for hours."""

    model_config = ConfigDict(extra="forbid")

    max_prompt_chars: int = Field(4000, ge=1, description="Longest prompt accepted.")
    max_caption_chars: int = Field(
        500, ge=1, description="Longest caption of an explicit scene (`scenes[].caption`)."
    )
    max_visual_prompt_chars: int = Field(
        1000, ge=1, description="Longest visual prompt of an explicit scene (`scenes[].visual_prompt`)."
    )
    max_style_chars: int = Field(200, ge=1, description="Longest `style`.")
    max_seconds: float = Field(
        28,
        gt=0,
        description="Longest video accepted, in seconds: `seconds`, explicit scenes' lengths in all, and an "
        "extension with the video it extends.",
    )
    max_scenes: int = Field(
        8,
        ge=1,
        le=MAX_SCENES,
        description=f"Most scenes per video (explicit or written); at most {MAX_SCENES}, the API's own bound.",
    )
    max_frames_per_segment: int = Field(
        25,
        ge=2,
        validation_alias=AliasChoices("max_frames_per_segment", "max_frames_per_scene"),
        description="Most frames one SVD call makes (SVD-XT is trained on 25). A longer scene is made of "
        "segments, each starting from the last frame of the one before, so a video lasts what was asked. "
        "`max_frames_per_scene`, its name before, is still read.",
    )
    max_inference_steps: int = Field(50, ge=1, description="Most SVD denoising steps a request may ask for.")
    max_width: int = Field(1920, ge=64, description="Widest output accepted, in pixels.")
    max_height: int = Field(1920, ge=64, description="Tallest output accepted, in pixels.")
    max_body_bytes: int = Field(
        16 * 2**20,
        ge=1024,
        description="Largest request body (an `input_reference` image included); 413 above.",
    )
    body_timeout_s: float = Field(
        60,
        gt=0,
        description="Time a client has to send a whole request body; a slower upload is refused with 408.",
    )
    max_queued_jobs: int = Field(
        64, ge=1, description="Jobs waiting to start before new ones are refused with 429 and Retry-After."
    )
    sync_timeout_s: float = Field(
        120,
        gt=0,
        le=3600,
        description="How long POST /v1/videos/sync waits for its video; past it a 504 carries the video's id "
        "and the job goes on. Keep it below your proxies' and clients' read timeouts.",
    )
    max_event_streams: int = Field(
        64,
        ge=1,
        description="Event streams (GET /v1/videos/{id}/events) one ingress replica holds open at once; 429 "
        "past it. Each open stream takes one of the replica's `max_ongoing_requests`, so keep this well below "
        "that number: the rest are what polls, creates and /healthz need.",
    )
    event_stream_max_seconds: float = Field(
        300,
        gt=0,
        description="A stream ends after this long and the client reconnects (the stream's `retry:` tells "
        "EventSource when), so no connection is held for ever.",
    )


class JobsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_concurrent_jobs: int = Field(
        2,
        ge=1,
        description="Jobs one JobRunner replica runs at once (the runner autoscales on jobs in flight and "
        "waiting over this). Their scenes reach SVD together, which is what lets @serve.batch form batches; "
        "more than the GPUs can keep busy only queues inside Serve.",
    )
    default_seconds: float = Field(4, gt=0, description="Video length when a request does not say.")
    retention_hours: float = Field(
        24, gt=0, description="How long finished videos are kept; sets `expires_at` on each video."
    )
    lease_seconds: float = Field(
        15,
        ge=1,
        description="A runner holds each job's lease this long and renews it every third of it. A runner that "
        "dies leaves its jobs to be taken up by another (or the next replica) once the lease runs out.",
    )
    max_attempts: int = Field(
        3,
        ge=1,
        description="Times a job may be started. A job whose runner died this many times (a poison job: it "
        "crashes every replica that takes it up) fails with `too_many_attempts` instead of being taken up "
        "again.",
    )
    poll_seconds: float = Field(
        1.0,
        gt=0,
        description="How often a runner looks in the store for jobs to take up (queued, or left by a runner "
        "that died). A create wakes a runner at once; this catches the rest.",
    )
    sweep_seconds: float = Field(
        5,
        gt=0,
        description="How often a runner deletes expired videos and job folders without a job.",
    )

    @property
    def retention_seconds(self) -> int:
        return int(self.retention_hours * 3600)


class AuthConfig(BaseModel):
    """API keys for the HTTP API. The keys live in the environment, never in config files."""

    model_config = ConfigDict(extra="forbid")

    api_keys_env: str = Field(
        "STORYREEL_API_KEYS",
        min_length=1,
        description="Name of the environment variable (of the ingress replica) that holds the accepted API "
        "keys, comma-separated so a key can be rotated. When it is set, every route but /healthz needs "
        "`Authorization: Bearer <key>` (what the OpenAI SDK sends) and answers 401 without it; when it is "
        "unset or empty, the API is open.",
    )

    def keys(self) -> frozenset[str]:
        """The accepted keys (none: the API is open)."""
        value = os.environ.get(self.api_keys_env, "")
        return frozenset(key.strip() for key in value.split(",") if key.strip())


class CorsConfig(BaseModel):
    """Cross-origin access for frontends served from another origin. Off by default: a browser page
    from elsewhere can then neither read the API's answers nor post to it (see README, "Browsers")."""

    model_config = ConfigDict(extra="forbid")

    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Origins (scheme://host[:port]) whose pages may call the API, e.g. "
        "`https://studio.example.com`; `*` for any. Empty: no cross-origin access.",
    )
    max_age_s: int = Field(600, ge=0, description="How long a browser may cache a preflight answer.")


class AppConfig(BaseModel):
    """Everything the application needs; `args` in serve_config.yaml."""

    model_config = ConfigDict(extra="forbid")

    served_model_name: str = Field(
        "svd-xt", description="The model id clients pass as `model` and GET /v1/models lists."
    )
    fallback: FallbackPolicy = Field(
        "auto",
        description="When a model cannot load or run: `auto` degrades that stage (template writer, placeholder "
        "keyframe, title-card clip) and records why; `always` loads no model at all (the CPU profile); "
        "`never` fails instead (at start when a model cannot load, else the job).",
    )
    video: VideoConfig = Field(
        default_factory=SVDConfig,
        description="The animator (the seed's VIDEO_CONFIG): `family: svd` (default), `ltx` or `wan`, each "
        "with its model and settings.",
    )
    video_processing: VideoProcessingConfig = Field(
        default_factory=VideoProcessingConfig,
        description="Encoding and assembly (the seed's VIDEO_PROCESSING_CONFIG).",
    )
    writer: WriterConfig = Field(default_factory=WriterConfig, description="The scene writer.")
    narration: NarrationConfig = Field(
        default_factory=NarrationConfig, description="The narrator: who speaks each scene's text."
    )
    painter: PainterConfig = Field(default_factory=PainterConfig, description="The keyframe painter.")
    storage: StorageConfig = Field(
        default_factory=StorageConfig, description="Where jobs and artifacts live."
    )
    limits: LimitsConfig = Field(default_factory=LimitsConfig, description="Bounds on each request.")
    jobs: JobsConfig = Field(default_factory=JobsConfig, description="Job execution and retention.")
    auth: AuthConfig = Field(default_factory=AuthConfig, description="Who may call the HTTP API.")
    cors: CorsConfig = Field(
        default_factory=CorsConfig, description="Which other origins' pages may call the API."
    )
    webhooks: WebhooksConfig = Field(
        default_factory=WebhooksConfig, description="Notifications when a video ends."
    )

    @model_validator(mode="after")
    def _frames_fit_the_limit(self) -> AppConfig:
        if self.video.num_frames > self.limits.max_frames_per_segment:
            raise ValueError(
                f"video.num_frames={self.video.num_frames} exceeds limits.max_frames_per_segment="
                f"{self.limits.max_frames_per_segment}"
            )
        # A segment runs at the family's next valid frame count; a limit of that shape keeps it within the limit.
        rules = rules_of(self.video)
        limit = self.limits.max_frames_per_segment
        if rules.valid_frames(limit) != limit:
            raise ValueError(
                f"limits.max_frames_per_segment={limit}: {rules.label} makes {rules.frame_step}k+1 frames; use "
                f"{rules.valid_frames(limit) - rules.frame_step} or {rules.valid_frames(limit)}"
            )
        return self

    @property
    def scene_seconds(self) -> float:
        """Length of one default SVD clip (``video.num_frames`` at ``video.fps``): a scene's natural length."""
        return self.video.num_frames / self.video.fps


def load_serve_config(path: str | Path, app_name: str | None = None) -> AppConfig:
    """Read a Serve config file and validate the `args` of its application (the first, or ``app_name``)."""
    document: dict[str, Any] = yaml.safe_load(Path(path).read_text())
    applications = document.get("applications") or []
    for app in applications:
        if app_name is None or app.get("name") == app_name:
            return AppConfig.model_validate(app.get("args") or {})
    raise KeyError(f"no application {app_name!r} in {path}")
