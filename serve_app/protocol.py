"""Wire models of the HTTP API: OpenAI's Videos API plus this service's extensions.

Static checks (types, ranges that never change) live here. The text and list bounds that come from the
deployment's config (``limits``: longest prompt, caption, style, most scenes) are checked here too, before
the fields are parsed, when the limits come in the validation context (``parse_create``); the rest of the
config's limits (length, size, steps) are checked by ``serve_app.jobs.plan``.
"""

from __future__ import annotations

import re
from typing import Any, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from core.errors import as_value_error, bad_value
from core.status import JobStatus, NoticeCode, SceneStatus
from engines.narrator.espeak import check_voice
from engines.narrator.narrator import check_language
from engines.writer.text import clean_text

SIZE_PATTERN = re.compile(r"([1-9][0-9]{1,4})x([1-9][0-9]{1,4})")  # always with fullmatch
MAX_SCENES = 64  # the API's own bound on `scenes`; `limits.max_scenes` may only be lower

# Non-finite numbers (NaN, Infinity, 1e999) are refused wherever a number is taken.
WIRE = ConfigDict(extra="forbid", allow_inf_nan=False)


class TextLimits(Protocol):
    """The bounds ``parse_create`` checks (``serve_app.config.LimitsConfig`` has them)."""

    max_prompt_chars: int
    max_caption_chars: int
    max_visual_prompt_chars: int
    max_style_chars: int
    max_scenes: int


# Each bounded field and the `limits` entry that bounds it.
BOUNDS = {
    "prompt": "max_prompt_chars",
    "style": "max_style_chars",
    "caption": "max_caption_chars",
    "visual_prompt": "max_visual_prompt_chars",
    "scenes": "max_scenes",
    "negative_prompt": "max_prompt_chars",
}

# The sampling fields vLLM-Omni's clients send whatever the model: each family takes those it has a use for
# (`FamilyRules.request_fields`) and lists the rest in the video's `notices`, so such a client keeps working.
SAMPLING_FIELDS = (
    "negative_prompt",
    "guidance_scale",
    "guidance_scale_2",
    "true_cfg_scale",
    "boundary_ratio",
    "flow_shift",
)
# The fields only some families take: SVD's motion controls, and the sampling fields. `extra_params` (vLLM-Omni's
# pass-through to the pipeline) may carry these and no others.
FAMILY_FIELDS = ("motion_bucket_id", "noise_aug_strength", *SAMPLING_FIELDS)


def _within(cls: type, value: Any, info: ValidationInfo) -> Any:
    """Refuse a field longer than its config limit (``BOUNDS``), before it is parsed any further."""
    limits = (info.context or {}).get("limits")
    bound = BOUNDS[info.field_name or ""]
    if limits is not None and isinstance(value, str | list) and len(value) > getattr(limits, bound):
        unit = "scenes" if isinstance(value, list) else "characters"
        raise PydanticCustomError(
            "too_long",
            "at most {limit} {unit} (limits.{bound})",
            {"limit": getattr(limits, bound), "unit": unit, "bound": bound},
        )
    return value


def _has_text(cls: type, value: object) -> object:
    """Refuse a text that is only spaces or control characters: the writer and the painter could do nothing
    with it, and the job would fail after the create said yes."""
    if isinstance(value, str) and value and not clean_text(value):
        raise ValueError("must hold some text, not only spaces or control characters")
    return value


def _number_from_text(cls: type, value: object) -> object:
    # OpenAI's SDK sends seconds as a string ("4", "8", "12").
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


class SceneSpec(BaseModel):
    """A scene the caller writes: the writer is skipped."""

    model_config = WIRE

    caption: str = Field(min_length=1, description="Text shown as the scene's subtitle, any language.")
    visual_prompt: str | None = Field(
        None, min_length=1, description="English keyframe prompt; default the caption with style terms."
    )
    duration_s: float | None = Field(
        None, gt=0, description="Scene length; default an equal share of `seconds`."
    )
    motion: Literal["still", "gentle", "moderate", "dynamic"] | None = Field(
        None, description="How much the scene moves (SVD motion bucket)."
    )

    _within_limits = field_validator("caption", "visual_prompt", mode="before")(_within)
    _with_text = field_validator("caption", "visual_prompt")(_has_text)


class ImageReference(BaseModel):
    """OpenAI's JSON form of `input_reference`. Only data URLs: the service never fetches a URL."""

    model_config = WIRE

    image_url: str = Field(description="A base64 data URL such as data:image/png;base64,....")


class NarrationOptions(BaseModel):
    """How a video's scenes are spoken (`narration` as an object)."""

    model_config = WIRE

    voice: str | None = Field(
        None,
        max_length=64,
        description="An eSpeak NG voice, e.g. 'en-GB-x-rp', 'cmn' or 'en-US+f3'; default by language.",
    )
    rate: float = Field(1.0, ge=0.5, le=2.0, description="Pace: 1 as configured, 1.5 half as fast again.")
    language: str | None = Field(
        None,
        pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$",
        description="The text's language (ISO 639, e.g. 'en', 'cmn', 'yue'); default from its script.",
    )

    @field_validator("voice")
    @classmethod
    def _voice_exists(cls, value: str | None) -> str | None:
        return None if value is None else as_value_error(check_voice, value)

    @field_validator("language")
    @classmethod
    def _language_is_spoken(cls, value: str | None) -> str | None:
        return None if value is None else as_value_error(check_language, value)


class CreateVideoRequest(BaseModel):
    """Body of `POST /v1/videos` (JSON, or multipart form fields with `input_reference` as a file)."""

    model_config = WIRE

    prompt: str = Field(min_length=1, description="The story idea.")
    model: str | None = Field(None, description="A model id from GET /v1/models; default the served model.")
    seconds: float | None = Field(None, gt=0, description="Total length in seconds; default from config.")
    size: str | None = Field(None, description="'WIDTHxHEIGHT', e.g. '1280x720'; default from config.")
    input_reference: ImageReference | None = Field(
        None,
        description="First scene's keyframe instead of a painted one (multipart: an image file, or an MP4, MOV "
        "or WebM video whose last frame the video continues from).",
    )
    num_scenes: int | None = Field(None, ge=1, description="How many scenes the writer should make.")
    scenes: list[SceneSpec] | None = Field(
        None, min_length=1, max_length=MAX_SCENES, description="Explicit scenes; skips the writer."
    )
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="Base seed; scene i uses seed + i.")
    fps: int | None = Field(
        None, ge=1, le=60, description="Frame rate SVD is conditioned on and clips play at."
    )
    num_inference_steps: int | None = Field(None, ge=1, description="SVD denoising steps per scene.")
    motion_bucket_id: int | None = Field(None, ge=0, le=255, description="Overrides every scene's motion.")
    noise_aug_strength: float | None = Field(None, ge=0, le=1, description="Noise added to each keyframe.")
    # vLLM-Omni's fields, which the clients of today's /v1/videos send (README, "Clients of other servers").
    width: int | None = Field(
        None, ge=1, le=99999, description="Frame width; with `height`, another way to give `size`."
    )
    height: int | None = Field(
        None, ge=1, le=99999, description="Frame height; with `width`, another way to give `size`."
    )
    num_frames: int | None = Field(
        None,
        ge=1,
        le=10**6,
        description="Frames in all at `fps` (default the model's rate): another way to give `seconds`, which "
        "is `num_frames / fps`.",
    )
    negative_prompt: str | None = Field(
        None, min_length=1, description="What the video should not look like (LTX-Video and Wan)."
    )
    guidance_scale: float | None = Field(
        None,
        ge=0,
        le=100,
        description="Text guidance (LTX-Video and Wan, within the family's range); default from config.",
    )
    guidance_scale_2: float | None = Field(
        None,
        ge=0,
        le=100,
        description="vLLM-Omni's: the guidance of Wan 2.2 A14B's second (low-noise) expert; default "
        "`guidance_scale`. Ignored, and said so in `notices`, by checkpoints with one expert.",
    )
    true_cfg_scale: float | None = Field(
        None, ge=0, le=100, description="vLLM-Omni's true CFG scale; see `notices`."
    )
    boundary_ratio: float | None = Field(
        None,
        ge=0,
        le=1,
        description="vLLM-Omni's: where Wan 2.2 A14B's second expert takes over, as a share of the noise "
        "schedule (the steps below it); default the checkpoint's. Ignored, and said so, with one expert.",
    )
    flow_shift: float | None = Field(
        None,
        gt=0,
        le=100,
        description="vLLM-Omni's: the shift of Wan's flow-matching scheduler (higher spends more steps at "
        "high noise); default the checkpoint's.",
    )
    enable_frame_interpolation: bool = Field(
        False,
        description="Make in-between frames (motion-compensated): 2 ** `frame_interpolation_exp` frames per "
        "frame made, at that many times `fps`; the video lasts as long. Default the deployment's "
        "`video_processing.interpolation_factor`.",
    )
    frame_interpolation_exp: int = Field(
        1,
        ge=1,
        le=2,
        description="With `enable_frame_interpolation`: 1 doubles the frames, 2 quadruples them.",
    )
    extra_params: dict[str, Any] | None = Field(
        None,
        description="vLLM-Omni's extra pipeline arguments: any of "
        + ", ".join(f"`{name}`" for name in FAMILY_FIELDS)
        + " (as if given on their own); other keys are refused by name.",
    )
    image_reference: ImageReference | None = Field(
        None, description='vLLM-Omni\'s name for `input_reference` as JSON (`{"image_url": ...}`).'
    )
    style: str | None = Field(None, max_length=200, description="Style terms added to every keyframe prompt.")
    continuity: bool = Field(
        False, description="Start each scene from the previous scene's last frame instead of a new keyframe."
    )
    captions: bool = Field(True, description="Write WebVTT captions from the scene text.")
    narration: bool | NarrationOptions | None = Field(
        None,
        description="Speak each scene's caption: true, false, or `{voice, rate, language}`; default on unless "
        "the deployment's `narration.backend` is `none`. A scene lasts at least its narration.",
    )
    music: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="A music bed from the deployment's `video_processing.audio.music_folder`, by file stem "
        "(multipart: or an audio file), looped or trimmed to the video and ducked under the voice.",
    )
    burn_subtitles: bool = Field(
        False, description="Draw the captions into the picture too (for platforms that ignore caption files)."
    )
    webhook_url: str | None = Field(
        None,
        max_length=2048,
        description="Where to POST `video.completed`, `video.failed` or `video.cancelled` when the video "
        "ends (signed per Standard Webhooks); default the deployment's `webhooks.url`.",
    )

    _seconds_may_be_a_string = field_validator("seconds", mode="before")(_number_from_text)

    @field_validator("size")
    @classmethod
    def _size_is_w_by_h(cls, value: str | None) -> str | None:
        if value is not None and not SIZE_PATTERN.fullmatch(value):
            raise ValueError("expected 'WIDTHxHEIGHT' such as '1280x720'")
        return value

    _within_limits = field_validator("prompt", "style", "scenes", "negative_prompt", mode="before")(_within)
    _with_text = field_validator("prompt")(_has_text)

    @property
    def interpolation(self) -> int | None:
        """The interpolation factor asked for, or None for the deployment's."""
        return 2**self.frame_interpolation_exp if self.enable_frame_interpolation else None

    def narration_options(self, default: bool) -> NarrationOptions | None:
        """How to narrate, or None for a silent video (``default``: whether an unset `narration` narrates)."""
        wanted = default if self.narration is None else self.narration
        if wanted is False:
            return None
        return wanted if isinstance(wanted, NarrationOptions) else NarrationOptions()

    def dimensions(self) -> tuple[int, int] | None:
        """The size asked for, as `size` or as `width` and `height` (``parse_create`` checked they agree)."""
        if self.size is None:
            return None if self.width is None or self.height is None else (self.width, self.height)
        width, height = SIZE_PATTERN.fullmatch(self.size).groups()  # type: ignore[union-attr]
        return int(width), int(height)


class VideoReference(BaseModel):
    """A video made here, by id (an extension may take an uploaded clip instead: see `ExtensionFields`)."""

    model_config = WIRE

    id: str = Field(description="A completed video's id.")


def _reference_from_id(cls: type, value: object) -> object:
    # `video` may also be the bare id: a multipart field `video=video_...`, which is how openai 3.x's
    # `edit` and `extend` can send it (they refuse `video={"id": ...}` before sending, expecting a file).
    return {"id": value} if isinstance(value, str) else value


class RemixRequest(BaseModel):
    """Body of `POST /v1/videos/{id}/remix`: a new prompt, the source's settings."""

    model_config = WIRE

    prompt: str = Field(min_length=1, description="The new story idea.")
    scenes: list[SceneSpec] | None = Field(
        None,
        min_length=1,
        max_length=MAX_SCENES,
        description="Extension: explicit scenes. Only the scenes that differ from the source's at their place "
        "are made again; the rest take over its clips.",
    )
    webhook_url: str | None = Field(None, max_length=2048, description="As for create.")

    _within_limits = field_validator("prompt", "scenes", mode="before")(_within)
    _with_text = field_validator("prompt")(_has_text)


class EditRequest(BaseModel):
    """Body of `POST /v1/videos/edits` (OpenAI's successor to remix): does what remix does."""

    model_config = WIRE

    prompt: str = Field(min_length=1, description="The new story idea.")
    video: VideoReference = Field(description='`{"id": ...}`, or the id alone.')
    webhook_url: str | None = Field(None, max_length=2048, description="As for create.")

    _within_limits = field_validator("prompt", mode="before")(_within)
    _with_text = field_validator("prompt")(_has_text)
    _video_by_id = field_validator("video", mode="before")(_reference_from_id)


class ExtensionFields(BaseModel):
    """Body of `POST /v1/videos/extensions` as a form whose `video` is an uploaded MP4, MOV or WebM file: new
    scenes written from `prompt`, starting from the clip's last frame. The clip is not part of the result."""

    model_config = WIRE

    prompt: str = Field(min_length=1, description="What happens next.")
    seconds: float = Field(
        gt=0,
        description="Length of the extension; the result lasts the source plus this (an uploaded clip: this).",
    )
    webhook_url: str | None = Field(None, max_length=2048, description="As for create.")

    _within_limits = field_validator("prompt", mode="before")(_within)
    _with_text = field_validator("prompt")(_has_text)
    _seconds_may_be_a_string = field_validator("seconds", mode="before")(_number_from_text)


class ExtendRequest(ExtensionFields):
    """Body of `POST /v1/videos/extensions`: new scenes written from `prompt`, after the video's last frame."""

    video: VideoReference = Field(
        description='`{"id": ...}`, or the id alone; in a form, an MP4, MOV or WebM file instead.'
    )

    _video_by_id = field_validator("video", mode="before")(_reference_from_id)


def parse_create(body: Any, limits: TextLimits) -> CreateVideoRequest:
    """Validate a create body against the schema and the config's text and list ``limits``, with vLLM-Omni's
    other names for a field (`image_reference`, `extra_params`' keys, `width` and `height`) folded in.

    Raises:
        pydantic.ValidationError: naming the first field at fault.
        BadRequest: two names for one thing that disagree, or an `extra_params` key no family takes.
    """
    if isinstance(body, dict):
        body = _fold_aliases(body)
    request = CreateVideoRequest.model_validate(body, context={"limits": limits})
    if (request.width is None) != (request.height is None):
        missing = "height" if request.height is None else "width"
        raise bad_value(missing, None, "width and height come together (or give `size`)")
    if request.size is not None and request.width is not None:
        asked = f"{request.width}x{request.height}"
        if asked != request.size:
            raise bad_value("size", request.size, f"disagrees with width and height ({asked}); give one")
    return request


def _fold_aliases(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with `image_reference` as `input_reference` and `extra_params`' keys as fields of their own."""
    body = dict(body)
    if "image_reference" in body:
        if body.get("input_reference") is not None:
            raise bad_value("image_reference", "<given>", "is `input_reference` by another name; give one")
        body["input_reference"] = body.pop("image_reference")
    extra = body.pop("extra_params", None)
    if extra is None:
        return body
    if not isinstance(extra, dict):
        raise bad_value("extra_params", type(extra).__name__, "must be a JSON object")
    for key, value in extra.items():
        if key not in FAMILY_FIELDS:
            known = ", ".join(FAMILY_FIELDS)
            raise bad_value(f"extra_params.{key}", value, f"not an argument any model here takes ({known})")
        if body.get(key) is not None:
            raise bad_value(f"extra_params.{key}", value, f"{key} is given on its own too; give one")
        body[key] = value
    return body


M = TypeVar("M", bound=BaseModel)


def parse_body(model: type[M], body: Any, limits: TextLimits) -> M:
    """Validate a remix, edit or extension body (as ``parse_create`` does a create body)."""
    return model.model_validate(body, context={"limits": limits})


class VideoError(BaseModel):
    code: str
    message: str


class Notice(BaseModel):
    """Extension: where a video differs from what was asked, and why (it is not an error)."""

    code: NoticeCode = Field(
        description="`narration_longer_than_asked`: the video runs past `seconds` because its narration, "
        "spoken at up to `narration.max_rate`, needs longer; `silent_narration`: a scene's voice said "
        "nothing, so the scene keeps silence for its length; `ignored_field`: the request set a sampling "
        "field (vLLM-Omni's) that the served model has no use for."
    )
    message: str = Field(description="What happened, with the figures.")


class SceneObject(BaseModel):
    """Extension: one scene of a video and how it was made."""

    index: int
    caption: str
    visual_prompt: str
    duration_s: float
    status: SceneStatus
    progress: int = Field(ge=0, le=100)
    generator: str | None = Field(
        None, description="What animated the scene: the model family ('svd', 'ltx', 'wan') or 'fallback'."
    )
    keyframe_generator: str | None = Field(
        None,
        description="What made its first frame: 'painter', 'reference' (the caller's image), 'input_video' "
        "(the last frame of the caller's video), 'continuity' or 'placeholder'; 'text' when there was none and "
        "the video model started from the scene's text (`keyframes: none`).",
    )
    fallback_reason: str | None = Field(None, description="Why a fallback was used, when it was.")
    attempts: int = Field(0, description="How many times the scene was started.")
    batch_size: int | None = Field(
        None,
        description="How many scenes shared the SVD pipeline call that made it (batching at work); for a "
        "title-card fallback, how many were made together.",
    )
    segments: int = Field(
        1, description="Model calls the scene is made of (a scene longer than one call chains several)."
    )
    segments_done: int = Field(0, description="Of those, how many are made and saved.")
    source_video_id: str | None = Field(
        None, description="Set when the clip was taken over from another video (a remix, an extension)."
    )
    narrator: str | None = Field(None, description="What spoke the scene: 'espeak', 'vits'; null: silent.")
    narration: NarrationObject | None = Field(None, description="The scene's narration and its timing.")


class SentenceObject(BaseModel):
    text: str
    start: float = Field(description="Seconds into the scene's narration.")
    end: float


class NarrationObject(BaseModel):
    """Extension: how a scene was spoken."""

    narrator: str = Field(description="'espeak' (eSpeak NG) or 'vits' (the neural voice).")
    voice: str
    language: str
    seconds: float = Field(description="Length of the narration; the scene lasts at least this.")
    lead: float = Field(0, description="Seconds into the scene the voice starts.")
    rate: float = 1.0
    sentences: list[SentenceObject] = Field(default_factory=list)
    fallback_reason: str | None = Field(None, description="Why eSpeak NG spoke instead of the neural voice.")
    silent: bool = Field(
        False, description="The voice said nothing for this text: the scene keeps silence (see `notices`)."
    )


class WebhookState(BaseModel):
    """Extension: where the video's webhook stands."""

    status: Literal["waiting", "pending", "delivered", "failed"] = Field(
        description="`waiting` until the video ends; then `pending` until a 2xx answer (`delivered`) or the "
        "retries run out (`failed`)."
    )
    attempts: int
    last_error: str | None = None


class VideoObject(BaseModel):
    """OpenAI's video object, with `scenes` and `title` as extensions."""

    id: str
    object: Literal["video"] = "video"
    model: str
    status: JobStatus
    progress: int = Field(ge=0, le=100)
    created_at: int
    completed_at: int | None = None
    expires_at: int | None = None
    prompt: str
    size: str
    seconds: str
    error: VideoError | None = None
    remixed_from_video_id: str | None = Field(None, description="The video this one remixes (remix, edit).")
    extended_from_video_id: str | None = Field(
        None, description="Extension: the video this one extends (it holds that video, then new scenes)."
    )
    queue_position: int | None = Field(
        None, description="Extension: 0-based place among queued videos; null once started."
    )
    estimated_start_at: int | None = Field(
        None,
        description="Extension: a rough Unix time a queued video starts at, from how long recent videos took "
        "and how many runners work; null when unknown.",
    )
    webhook: WebhookState | None = Field(None, description="Extension: the webhook's delivery, if any.")
    variants: list[str] = Field(
        default_factory=list,
        description="Extension: the content variants a completed video has (`captions` only when asked for).",
    )
    title: str | None = None
    writer: str | None = Field(
        None,
        description="What wrote the scenes: 'transformers', 'openai', 'template' or 'explicit' (the caller).",
    )
    scenes: list[SceneObject] = Field(default_factory=list)
    inference_time_s: float | None = Field(
        None,
        description="vLLM-Omni's: seconds from the start of the run that completed the video to its end "
        "(a job resumed after its runner died counts its last run); null until completed.",
    )
    stage_durations: dict[str, float] | None = Field(
        None,
        description="vLLM-Omni's: seconds in each stage of that run, summed over the scenes (which run side "
        "by side, so the sum may pass `inference_time_s`): `write` (until the script is stored, narration "
        "included), `narrate`, `paint`, `animate`, `encode`, `stitch`; null until completed.",
    )
    peak_memory_mb: float | None = Field(
        None,
        description="vLLM-Omni's: the most GPU memory (MiB) the video model's process held for a call that "
        "animated a scene of that run; a call shared by a batch counts the batch, and under `scheduling: "
        "step` it is the replica's peak so far. Null without a model on a CUDA device, and until completed.",
    )
    media_type: str | None = Field(None, description="`video/mp4` once completed.")
    file_name: str | None = Field(None, description="The download's file name once completed.")
    notices: list[Notice] = Field(
        default_factory=list,
        description="Extension: where the video differs from what was asked (a narration longer than "
        "`seconds`, a scene whose voice said nothing, a field the model ignored), each with a code and a "
        "message.",
    )


class VideoList(BaseModel):
    object: Literal["list"] = "list"
    data: list[VideoObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class VideoDeleted(BaseModel):
    id: str
    object: Literal["video.deleted"] = "video.deleted"
    deleted: bool = True


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "storyreel"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    jobs_running: int = Field(description="Jobs in progress, on every runner.")
    jobs_queued: int = Field(description="Jobs waiting for a runner.")
