"""Errors shared by every layer, and the one table from an error to its code and HTTP status.

Every error raised on purpose says what it is with three class attributes: ``code`` (the short
machine-readable word a client sees, in a response's or a failed job's ``error.code``), ``status`` (the
HTTP status it answers with) and ``public`` (whether its text may be shown, or is for the log only).
``classify`` is the only place that reads them: the HTTP layer and the job runner both call it.

The errors a request is answered with (``APIError`` and its subclasses: ``BadRequest``, ``NotFound``,
``Conflict``, ``Overloaded``, ...) are here too, with no web framework imported: the video service and the
job planner raise them, and only ``serve_app.api.errors`` turns one into an HTTP response.
"""

from __future__ import annotations

import errno
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


class CodedError(Exception):
    """Base class for every error raised on purpose; subclasses set the three attributes."""

    code = "internal_error"
    status = 500
    public = True


class EngineError(CodedError):
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

    code, status = "invalid_value", 400


def as_value_error(check: Callable[[T], T], value: T) -> T:
    """``check(value)``, with its InvalidInput turned into the ValueError a pydantic validator raises (whose
    message then names the field where it stands, and the reason)."""
    try:
        return check(value)
    except InvalidInput as exc:
        raise ValueError(exc.reason) from None


class ModelUnavailable(EngineError):
    """A model cannot be loaded or run: weights missing, unreadable, offline, or no usable device.

    The fallback policy catches this; with ``fallback: never`` it fails the scene with this message.
    """

    code, status = "model_unavailable", 503


class GenerationCancelled(EngineError):
    """A cooperative cancel stopped a generation at a step boundary."""

    code, status = "cancelled", 409


class ProcessStopped(GenerationCancelled):
    """A job's media work was stopped by its cancel or DELETE: its ffmpeg was killed, or refused to start.

    A cancel, not a failure: it is not a ``MediaError``, so nothing that handles ffmpeg's failures takes it
    for one.
    """


class MediaError(EngineError):
    """ffmpeg or an image library failed on input the engine itself produced.

    Args:
        message: what the engine was doing.
        detail: the tool's own error text (ffmpeg's stderr), kept for the log and the job's error.
    """

    def __init__(self, message: str, detail: str = "") -> None:
        self.detail = detail
        super().__init__(f"{message}: {detail}" if detail else message)

    # Its text holds ffmpeg's command line and output, with server paths: for the log only.
    code, status, public = "media_error", 500, False


class NarrationTooLong(CodedError):
    """A video's narration needs more time than ``limits.max_seconds`` allows, even spoken faster."""

    code, status = "narration_too_long", 422


class TooManyAttempts(CodedError):
    """A job was started ``jobs.max_attempts`` times and its runner stopped each time."""

    code = "too_many_attempts"


class JobGone(CodedError):
    """The job whose files were to be written was deleted or expired meanwhile."""

    code, status = "video_not_found", 404


class Outage(CodedError):
    """A part the service depends on is away for now: nothing was changed, and the same request can be made
    again in ``retry_after_s`` (the API says so in ``Retry-After``)."""

    status = 503
    retry_after_s = 5


class StoreUnavailable(Outage):
    """The job store cannot be reached (a PostgreSQL restart or failover, a network cut)."""

    code = "store_unavailable"


class StorageUnavailable(Outage):
    """The object store refuses connections or does not answer."""

    code = "storage_unavailable"


class FramesLost(CodedError):
    """A scene's frames were lost between the animator and the encoder (the animator's replica died)."""

    code = "frames_lost"


class APIError(CodedError):
    """An error a request is answered with, carrying its HTTP status. Raise the subclasses below, not this.

    Args:
        message: the text the client sees.
        param: the request field at fault, if one is.
        code: the machine-readable word; the class's ``type`` when not given.
        headers: headers the answer carries (``Retry-After``, ``Content-Range``).
    """

    status = 500
    # The error envelope's ``type``: a short word for the kind of error, as OpenAI's API names them.
    type = "internal_error"

    def __init__(
        self,
        message: str,
        param: str | None = None,
        code: str | None = None,
        headers: dict | None = None,
        video_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or self.type
        self.headers = headers or {}
        self.video_id = video_id  # the video the request made, when an error comes after it (the sync route)


class BadRequest(APIError):
    status, type = 400, "invalid_request_error"


class Unauthorized(APIError):
    status, type = 401, "authentication_error"


class Forbidden(APIError):
    status, type = 403, "permission_error"


class NotFound(APIError):
    status, type = 404, "not_found_error"


class Conflict(APIError):
    status, type = 409, "conflict_error"


class RequestTimeout(APIError):
    status, type = 408, "request_timeout"


class PayloadTooLarge(APIError):
    status, type = 413, "request_too_large"


class UnsupportedMediaType(APIError):
    status, type = 415, "unsupported_media_type"


class RangeNotSatisfiable(APIError):
    status, type = 416, "range_not_satisfiable"


class Unprocessable(APIError):
    status, type = 422, "unprocessable_entity"


class Overloaded(APIError):
    status, type = 429, "rate_limit_error"


class Unavailable(APIError):
    status, type = 503, "service_unavailable"


class InsufficientStorage(APIError):
    """The service's disk (or its quota) is full: `storage_full`, from any stage or route that writes."""

    status, type = 507, "insufficient_storage"


class GatewayTimeout(APIError):
    status, type = 504, "timeout_error"


class JobFailed(APIError):
    """A video the request waited for failed: its own code and message, and its id."""

    status, type = 500, "server_error"


def bad_value(param: str, value: Any, reason: str) -> BadRequest:
    """A 400 whose message names the field and shows the value."""
    return BadRequest(str(InvalidInput(param, value, reason)), param=param, code="invalid_value")


@dataclass(frozen=True)
class ErrorKind:
    """What an exception becomes for a client: its code, HTTP status and the text it may see."""

    code: str
    status: int
    message: str
    public: bool  # False: ``message`` stands in for text that went to the log only


# The text shown for an error whose own text is for the log only, or for an error nobody raised on purpose.
LOG_ONLY_TEXT = {"media_error": "encoding with ffmpeg failed", "internal_error": "internal error"}

# A full disk, however it reached us: an OSError from a write, or ffmpeg's words for it in its output.
_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_DISK_FULL_TEXTS = ("No space left on device", "Disk quota exceeded")
STORAGE_FULL = ErrorKind(
    "storage_full",
    InsufficientStorage.status,
    "the service's storage is full: nothing stored was lost, and the request can be made again once an "
    "operator frees space",
    True,
)


def classify(exc: BaseException) -> ErrorKind:
    """The code, status and client-facing first line of ``exc``.

    Errors raised on purpose (``CodedError``) carry their own code and status; anything else is a 500
    ``internal_error``. Text that is for the log only is replaced by a short phrase; the caller adds where
    the details are (a job's id, the server log). A full disk is `storage_full` (507), whatever raised it.
    """
    if _disk_full(exc):
        return STORAGE_FULL
    if isinstance(exc, CodedError):
        code, status, public = exc.code, exc.status, exc.public
    else:
        code, status, public = "internal_error", 500, False
    if not public:
        return ErrorKind(code, status, LOG_ONLY_TEXT.get(code, LOG_ONLY_TEXT["internal_error"]), False)
    lines = str(exc).strip().splitlines()
    return ErrorKind(code, status, lines[0] if lines else type(exc).__name__, True)


def _disk_full(exc: BaseException) -> bool:
    """Whether ``exc``, or an exception it was raised from, says the disk is full."""
    seen: BaseException | None = exc
    for _ in range(16):  # a cause chain is short; a cycle must not loop
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno in _DISK_FULL_ERRNOS:
            return True
        # Its text, not only `detail`: an error that crossed processes keeps its text whatever else it lost.
        if isinstance(seen, MediaError) and any(text in str(seen) for text in _DISK_FULL_TEXTS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


# An absolute POSIX path with at least one folder: not after a letter, digit, dot, colon or slash, so
# "and/or", "1/2" and URLs stay as they are.
_SERVER_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s'\"/:,;()\[\]]+/)+[^\s'\"/:,;()\[\]]*")


def public_text(text: str) -> str:
    """``text`` with server paths (storage root, model cache, weights folders) replaced by ``<path>``.

    Messages a client sees (a job's error, a scene's fallback reason) go through this; the log keeps the
    whole text.
    """
    return _SERVER_PATH.sub("<path>", text)


def is_int(value: Any) -> bool:
    """An int that is not a bool (`True` would otherwise pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float that is not a bool."""
    return (is_int(value) or isinstance(value, float)) and math.isfinite(value)


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
