"""The ``openai`` backend: any OpenAI-compatible chat completions endpoint (vLLM, Ollama, a hosted API).

It asks for ``response_format: json_schema`` first. Servers that reject it (400/422) are asked again
with ``json_object``, then with no response format; the mode that worked is remembered. Timeouts,
connection errors, 429 and 5xx are retried by the official client with exponential backoff.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from engines.writer.backends.base import Message
from engines.writer.config import BackendName, OpenAIWriterConfig

logger = logging.getLogger(__name__)

_MODES = ("json_schema", "json_object", "plain")


class OpenAIBackend:
    """Chat completions through the official ``openai`` client.

    Args:
        config: endpoint, model, key variable, timeout, retries and sampling settings.
        client: an ``openai.OpenAI`` client to use instead of building one (tests, shared pools).
    """

    name: BackendName = "openai"

    def __init__(self, config: OpenAIWriterConfig, client: Any = None) -> None:
        import openai

        self.config = config
        self._client = client or openai.OpenAI(
            base_url=config.base_url,
            # Local servers ignore the key, but the client refuses to start without one.
            api_key=os.environ.get(config.api_key_env) or "not-set",
            timeout=config.timeout_s,
            max_retries=config.max_retries,
        )
        self._mode_index = 0

    def _response_format(self, mode: str, schema: dict[str, Any]) -> dict[str, Any] | None:
        if mode == "json_schema":
            return {
                "type": "json_schema",
                "json_schema": {"name": "script", "schema": schema, "strict": True},
            }
        if mode == "json_object":
            return {"type": "json_object"}
        return None

    def complete(self, messages: list[Message], schema: dict[str, Any]) -> str:
        """Send the conversation and return the answer's text (empty when the server sent none).

        Raises:
            openai.APIError: the endpoint failed after the client's retries (timeout, 5xx, refused).
        """
        import openai

        while True:
            mode = _MODES[self._mode_index]
            extra: dict[str, Any] = {}
            response_format = self._response_format(mode, schema)
            if response_format is not None:
                extra["response_format"] = response_format
            if self.config.seed is not None:
                extra["seed"] = self.config.seed
            try:
                response = self._client.chat.completions.create(
                    model=self.config.model,
                    messages=messages,  # type: ignore[arg-type]  # the SDK wants its TypedDicts; these are the same dicts
                    temperature=self.config.temperature,
                    max_tokens=self.config.max_tokens,
                    **extra,
                )
            except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
                if mode == "plain":
                    raise
                # The request differs from the plain one only in response_format, so that is what failed.
                logger.info("endpoint rejected response_format %s (%s); trying the next mode", mode, exc)
                self._mode_index += 1
                continue
            choices = response.choices or []
            return (choices[0].message.content or "") if choices else ""
