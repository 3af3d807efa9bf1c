"""Errors shared by every engine.

The HTTP layer maps these to status codes in one place (``serve_app.errors``); engines only say what
went wrong and which parameter was at fault.
"""

from __future__ import annotations

from typing import Any


class EngineError(Exception):
    """Base class for every error an engine raises on purpose."""


class InvalidInput(EngineError, ValueError):
    """A caller passed a value the engine cannot use.

    Args:
        param: the name of the offending parameter, as the caller spelled it.
        value: the offending value (shown shortened in the message).
        reason: what is wrong with it and, where useful, what would be accepted.
    """

    def __init__(self, param: str, value: Any, reason: str) -> None:
        self.param = param
        self.value = value
        self.reason = reason
        super().__init__(f"{param}={_short(value)}: {reason}")


class ModelUnavailable(EngineError):
    """A model cannot be loaded or run: weights missing, unreadable, offline, or no usable device.

    The fallback policy catches this; with ``fallback: never`` it fails the scene with this message.
    """


class GenerationCancelled(EngineError):
    """A cooperative cancel stopped a generation at a step boundary."""


class MediaError(EngineError):
    """ffmpeg or an image library failed on input the engine itself produced.

    Args:
        message: what the engine was doing.
        detail: the tool's own error text (ffmpeg's stderr), kept for the log and the job's error.
    """

    def __init__(self, message: str, detail: str = "") -> None:
        self.detail = detail
        super().__init__(f"{message}: {detail}" if detail else message)


def is_int(value: Any) -> bool:
    """An int that is not a bool (`True` would otherwise pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_seed(seed: Any, where: str = "") -> None:
    """Raise `InvalidInput` unless ``seed`` fits a `torch.Generator`: an integer from 0 to 2**63-1.

    Args:
        seed: the value to check.
        where: appended to the message, e.g. " (request 2)".
    """
    if not is_int(seed) or not 0 <= seed < 2**63:
        raise InvalidInput("seed", seed, f"must be an integer from 0 to 2**63-1{where}")


def _short(value: Any, limit: int = 80) -> str:
    # A hostile value may be huge (a 16 MB string, a list of 200,000 items): never repr all of it.
    if isinstance(value, list | tuple | dict | set) and len(value) > 16:
        return f"<{type(value).__name__} of {len(value)} items>"
    if isinstance(value, str | bytes) and len(value) > limit:
        return repr(value[:limit])[: limit - 3] + f"... <{len(value)} in all>"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
