"""Configuration of the scene writer: bounds every script must respect, and the backend settings."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

BackendName = Literal["template", "transformers", "openai"]


class WriterBounds(BaseModel):
    """Limits every script is validated and clamped against, whoever wrote it.

    These are the service's guarantees, not hints to the model: a model's output is clamped to them
    (or rejected), so a prompt that asks for 500 scenes still yields at most ``max_scenes``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_scenes: int = Field(1, ge=1, le=64, description="Fewest scenes a script may have.")
    max_scenes: int = Field(8, ge=1, le=64, description="Most scenes a script may have.")
    max_title_chars: int = Field(80, ge=8, le=400, description="Longest title, in characters.")
    max_caption_chars: int = Field(
        160, ge=8, le=2000, description="Longest caption (the subtitle shown with a scene), in characters."
    )
    max_visual_prompt_chars: int = Field(
        300,
        ge=16,
        le=2000,
        description="Longest visual prompt a model may write, in characters, before prompt improvement "
        "(which then cuts it to the keyframe model's token limit).",
    )
    min_scene_seconds: float = Field(2.0, gt=0, le=60, description="Shortest scene duration, in seconds.")
    max_scene_seconds: float = Field(6.0, gt=0, le=60, description="Longest scene duration, in seconds.")
    default_scene_seconds: float = Field(
        4.0, gt=0, le=60, description="Duration the template writer gives each scene, in seconds."
    )
    max_prompt_chars: int = Field(
        20_000,
        ge=100,
        le=1_000_000,
        description="Longest user prompt the writer reads; the rest is ignored (the HTTP layer may reject "
        "longer prompts earlier).",
    )
    clip_token_limit: int = Field(
        77,
        ge=8,
        le=512,
        description="Token limit of the keyframe model's text encoder, including its start and end tokens "
        "(77 for CLIP).",
    )

    @model_validator(mode="after")
    def _ranges_are_ordered(self) -> WriterBounds:
        if self.min_scenes > self.max_scenes:
            raise ValueError(f"min_scenes={self.min_scenes} must not exceed max_scenes={self.max_scenes}")
        if self.min_scene_seconds > self.max_scene_seconds:
            raise ValueError(
                f"min_scene_seconds={self.min_scene_seconds} must not exceed "
                f"max_scene_seconds={self.max_scene_seconds}"
            )
        if not self.min_scene_seconds <= self.default_scene_seconds <= self.max_scene_seconds:
            raise ValueError(
                f"default_scene_seconds={self.default_scene_seconds} must lie in "
                f"[{self.min_scene_seconds}, {self.max_scene_seconds}]"
            )
        return self


class TransformersWriterConfig(BaseModel):
    """Settings of the local-model backend (``backend: transformers``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(
        "Qwen/Qwen2.5-1.5B-Instruct",
        description="A local folder or a hub id of an instruct model that has a chat template.",
    )
    auto_download: bool = Field(
        False, description="Fetch the model from the hub when it is not local; off means local files only."
    )
    device: str = Field("auto", description='"cpu", "cuda", "cuda:N", or "auto" (CUDA when available).')
    seed: int = Field(
        0, ge=0, description="Seeds sampling, so the same prompt and seed give the same script."
    )
    temperature: float = Field(
        0.0, ge=0.0, le=2.0, description="0 decodes greedily; above 0 samples with the seed."
    )
    max_new_tokens: int = Field(
        1024, ge=16, le=16384, description="Most tokens the model may generate for one script."
    )
    cpu_threads: int | None = Field(
        None,
        ge=1,
        le=256,
        description="torch intra-op threads while generating on CPU (restored afterwards); match the "
        "replica's num_cpus. Small models run faster on one thread, and many threads on a busy machine "
        "spin against each other. None keeps torch's setting.",
    )


class OpenAIWriterConfig(BaseModel):
    """Settings of the OpenAI-compatible endpoint backend (``backend: openai``): vLLM, Ollama, a hosted API."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str = Field("http://127.0.0.1:8001/v1", description="The endpoint's base URL, ending in /v1.")
    model: str = Field("Qwen/Qwen2.5-7B-Instruct", description="The model name the endpoint serves.")
    api_key_env: str = Field(
        "OPENAI_API_KEY",
        description="Name of the environment variable that holds the API key; the key itself never sits "
        "in config. A placeholder is sent when it is unset (local servers ignore it).",
    )
    timeout_s: float = Field(60.0, gt=0, le=3600, description="Timeout of one request, in seconds.")
    max_retries: int = Field(
        2,
        ge=0,
        le=10,
        description="Retries after a timeout, connection error, 429 or 5xx, with the client's exponential "
        "backoff.",
    )
    temperature: float = Field(0.2, ge=0.0, le=2.0, description="Sampling temperature sent to the endpoint.")
    seed: int | None = Field(0, description="Seed sent to the endpoint (servers that support it honour it).")
    max_tokens: int = Field(2048, ge=16, le=65536, description="Most tokens the endpoint may generate.")


class WriterConfig(BaseModel):
    """Configuration of :class:`~engines.writer.ScriptWriter`.

    The template backend is the default: it needs no model, and every other backend falls back to it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: BackendName = Field("template", description="Which backend writes scripts.")
    bounds: WriterBounds = Field(default_factory=WriterBounds, description="Limits every script respects.")
    style: list[str] = Field(
        default_factory=lambda: ["cinematic", "highly detailed"],
        max_length=16,
        description="Style terms added to every visual prompt (a request's own style terms come first).",
    )
    quality_terms: list[str] = Field(
        default_factory=lambda: ["sharp focus", "high quality"],
        max_length=16,
        description="Quality terms added to every visual prompt after the style terms.",
    )
    transformers: TransformersWriterConfig = Field(
        default_factory=TransformersWriterConfig, description="Settings of the transformers backend."
    )
    openai: OpenAIWriterConfig = Field(
        default_factory=OpenAIWriterConfig, description="Settings of the openai backend."
    )
    speech_rates: dict[str, float] = Field(
        # eSpeak NG's pace at 165 words a minute (narration's default), measured on its own voices.
        default_factory=lambda: {"en": 3.0, "zh": 3.3, "ja": 2.0, "ko": 4.5},
        description="What a narrator says per second at its normal pace, by language (the primary subtag of "
        "a BCP 47 tag): words in spaced scripts, characters in Chinese, Japanese and Korean "
        "(`engines.writer.text.speech_units`). A writer asked for scenes of a given length keeps each "
        "caption within what its scene can speak; tune it to the configured voice.",
    )
    default_speech_rate: float = Field(
        2.7, gt=0, le=20, description="`speech_rates` for a language it does not list."
    )

    @model_validator(mode="after")
    def _rates_are_positive(self) -> WriterConfig:
        for language, rate in self.speech_rates.items():
            if not 0 < rate <= 20:
                raise ValueError(f"speech_rates.{language}={rate}: must be above 0 and at most 20")
        return self

    def speech_budget(self, seconds: float, language: str) -> int:
        """How much (in ``speech_units``) a narrator says in ``seconds`` of ``language`` at its normal pace."""
        rate = self.speech_rates.get(language.split("-")[0].lower(), self.default_speech_rate)
        return max(1, math.floor(seconds * rate))
