"""``ScriptWriter``: the scene writer engine the SceneWriter deployment wraps."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core.errors import InvalidInput, ModelUnavailable, is_int, is_number
from engines.writer.backends.base import ChatBackend, Message
from engines.writer.config import WriterConfig
from engines.writer.prompting import repair_message, system_prompt, token_counter, user_message
from engines.writer.script import Script, draft_json_schema
from engines.writer.template import write_template_script
from engines.writer.text import clean_text, detect_language
from engines.writer.validation import DraftRejected, script_from_output

logger = logging.getLogger(__name__)


def build_backend(config: WriterConfig) -> ChatBackend | None:
    """The model backend ``config.backend`` names; ``None`` for the template writer (no model)."""
    if config.backend == "transformers":
        from engines.writer.backends.local import TransformersBackend

        return TransformersBackend(config.transformers)
    if config.backend == "openai":
        from engines.writer.backends.remote import OpenAIBackend

        return OpenAIBackend(config.openai)
    return None


@dataclass
class WriteRequest:
    """What the writer is asked for (the arguments of `ScriptWriter.write`, as one object)."""

    prompt: str
    num_scenes: int | None = None
    style: str | None = None
    language: str | None = None
    scene_seconds: float | None = None  # how long each scene's narration may last; None: no budget


class ScriptWriter:
    """Writes a :class:`Script` from a user's idea with the configured backend, never failing on model output.

    A model's answer is validated and clamped to ``config.bounds``; an invalid answer gets one repair
    round (the validation error is sent back), then the template writer takes over. A model that cannot
    load or an endpoint that fails also hands over to the template. The script records who wrote it and,
    for a fallback, why.

    Args:
        config: backend choice, bounds and style. Default: ``WriterConfig()`` (template backend).
        backend: a backend to use instead of the one ``config.backend`` names (tests pass fakes).
        clip_tokenizer: the keyframe model's tokenizer (a Hugging Face tokenizer or a callable returning
            tokens or a count) to fit visual prompts exactly; default: a conservative CLIP estimate.
    """

    def __init__(
        self,
        config: WriterConfig | None = None,
        *,
        backend: ChatBackend | None = None,
        clip_tokenizer: Any = None,
    ) -> None:
        self.config = config or WriterConfig()
        self.backend = backend if backend is not None else build_backend(self.config)
        self._count = token_counter(clip_tokenizer)

    def load(self) -> None:
        """Load the backend's model now instead of on the first request (deployments call it at start).

        Raises:
            ModelUnavailable: the model cannot be loaded; ``write`` would fall back to the template.
        """
        load = getattr(self.backend, "load", None)
        if load is not None:
            load()

    def write(
        self,
        prompt: str,
        num_scenes: int | None = None,
        language: str | None = None,
        style: Sequence[str] | str | None = None,
        scene_seconds: float | None = None,
    ) -> Script:
        """Write the script for ``prompt``.

        Args:
            prompt: the user's idea, in any language. Treated as data: instructions inside it are not obeyed.
            num_scenes: the exact number of scenes; ``None`` lets the backend choose within the bounds.
            language: the language of captions and title (BCP 47); ``None`` guesses it from the prompt.
            style: style terms for the visual prompts (a list or a comma-separated string), put before the
                configured ones; ``None`` uses the configured ones only.
            scene_seconds: how long each scene's narration may last. A model is asked for captions it can
                speak in that time (``config.speech_rates``), and its draft is held to it (sent back once,
                then trimmed at a phrase boundary). The template keeps every word of the prompt and spreads
                them evenly over the scenes; ``None`` (default): no budget.

        Raises:
            InvalidInput: ``prompt`` is empty, or ``num_scenes``, ``language`` or ``style`` is out of range.
        """
        # 1. Check inputs: these are the caller's mistakes, reported as such.
        bounds = self.config.bounds
        if not isinstance(prompt, str) or not clean_text(prompt):
            raise InvalidInput("prompt", prompt, "must be a non-empty string")
        if num_scenes is not None and (
            not is_int(num_scenes) or not bounds.min_scenes <= num_scenes <= bounds.max_scenes
        ):
            raise InvalidInput(
                "num_scenes",
                num_scenes,
                f"must be an integer from {bounds.min_scenes} to {bounds.max_scenes}",
            )
        if language is not None and not (isinstance(language, str) and 2 <= len(language.strip()) <= 35):
            raise InvalidInput("language", language, "must be a BCP 47 tag such as 'en' or 'zh-CN'")
        if scene_seconds is not None and not (is_number(scene_seconds) and 0 < scene_seconds <= 3600):
            raise InvalidInput("scene_seconds", scene_seconds, "must be a number of seconds above 0")
        request_style = self._style_terms(style)

        # 2. Prepare: language, style terms, the prompt the writer reads.
        prompt = prompt[: bounds.max_prompt_chars]
        language = language.strip() if language else detect_language(prompt)
        terms = [*request_style, *self.config.style, *self.config.quality_terms]
        common: dict[str, Any] = {
            "bounds": bounds,
            "language": language,
            "num_scenes": num_scenes,
            "terms": terms,
        }

        # 3. No model configured: the template writes it.
        if self.backend is None:
            return write_template_script(prompt, count=self._count, **common)

        # 4. Ask the model; one repair round for an invalid answer; the template for anything else. A
        #    caption over its speech budget is sent back once, then trimmed.
        budget = None if scene_seconds is None else self.config.speech_budget(scene_seconds, language)
        schema = draft_json_schema(bounds, num_scenes)
        spoken = None if budget is None or scene_seconds is None else (budget, scene_seconds)
        messages: list[Message] = [
            {"role": "system", "content": system_prompt(bounds, num_scenes, language, spoken)},
            {"role": "user", "content": user_message(prompt, [*request_style, *self.config.style])},
        ]
        reason = ""
        for attempt in range(2):
            try:
                answer = self.backend.complete(messages, schema)
            except ModelUnavailable as exc:
                reason = f"{self.backend.name} unavailable: {exc}"
                break
            except Exception as exc:  # any model or transport failure degrades to the template
                logger.warning("writer backend %s failed", self.backend.name, exc_info=True)
                reason = f"{self.backend.name} failed: {type(exc).__name__}: {exc}"
                break
            try:
                return script_from_output(
                    answer,
                    backend=self.backend.name,
                    count=self._count,
                    budget=budget,
                    trim=attempt == 1,
                    **common,
                )
            except DraftRejected as exc:
                reason = f"{self.backend.name} output invalid after {attempt + 1} attempt(s): {exc}"
                messages += [
                    {"role": "assistant", "content": answer},
                    {"role": "user", "content": repair_message(str(exc))},
                ]
            except Exception as exc:  # a validation bug must not fail the job; a repair would not help
                logger.warning("writer could not use the %s answer", self.backend.name, exc_info=True)
                reason = f"{self.backend.name} output unusable: {type(exc).__name__}: {exc}"
                break
        logger.warning("writer falls back to the template: %s", reason)
        return write_template_script(prompt, count=self._count, fallback_reason=reason[:1000], **common)

    @staticmethod
    def _style_terms(style: Sequence[str] | str | None) -> list[str]:
        if style is None:
            return []
        items = style.split(",") if isinstance(style, str) else style
        if not isinstance(items, Sequence) or not all(isinstance(item, str) for item in items):
            raise InvalidInput("style", style, "must be a list of strings or a comma-separated string")
        terms = [clean_text(item) for item in items if clean_text(item)]
        if len(terms) > 16 or any(len(term) > 80 for term in terms):
            raise InvalidInput("style", style, "at most 16 terms of at most 80 characters each")
        return terms
