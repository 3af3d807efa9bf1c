"""The interface every model backend implements."""

from __future__ import annotations

from typing import Any, Protocol

from engines.writer.config import BackendName

Message = dict[str, str]


class ChatBackend(Protocol):
    """A chat model that answers with text following a JSON schema.

    Backends know transport (a local model, an HTTP endpoint), nothing about scripts: validation,
    repair and fallback live in :class:`~engines.writer.ScriptWriter`, so a test can pass a fake.
    """

    name: BackendName

    def complete(self, messages: list[Message], schema: dict[str, Any]) -> str:
        """Answer the conversation; the answer should follow ``schema`` (a JSON schema).

        Raises:
            ModelUnavailable: the model cannot be loaded or reached at all.
            Exception: any other failure of the model or the transport; the writer falls back.
        """
        ...
