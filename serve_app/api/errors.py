"""One error envelope and one table from error kind to HTTP status.

Every error the API returns looks like ``{"error": {"message", "type", "param", "code"}}`` (OpenAI's
shape). Domain code raises ``APIError`` (or an engine error); ``error_response`` is the only place that
turns an exception into a response, through ``core.errors.classify``, which the job runner uses too.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import CodedError, InvalidInput, classify
from serve_app.api.headers import secure

logger = logging.getLogger("ray.serve")


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """The one error envelope."""

    error: ErrorBody


class APIError(CodedError):
    """An error with its HTTP status. Raise the subclasses below, not this."""

    status = 500
    type = "internal_error"

    def __init__(
        self, message: str, param: str | None = None, code: str | None = None, headers: dict | None = None
    ):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or self.type
        self.headers = headers or {}


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


_BY_STATUS: dict[int, type[APIError]] = {
    kind.status: kind
    for kind in (BadRequest, Unauthorized, Forbidden, NotFound, Conflict, RequestTimeout, PayloadTooLarge)
    + (UnsupportedMediaType, Unprocessable, Overloaded, Unavailable)
}


# An absolute POSIX path with at least one folder: not after a letter, digit, dot, colon or slash, so
# "and/or", "1/2" and URLs stay as they are.
_SERVER_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s'\"/:,;()\[\]]+/)+[^\s'\"/:,;()\[\]]*")


def public_text(text: str) -> str:
    """``text`` with server paths (storage root, model cache, weights folders) replaced by ``<path>``.

    Messages a client sees (a job's error, a scene's fallback reason) go through this; the log keeps the
    whole text.
    """
    return _SERVER_PATH.sub("<path>", text)


def bad_value(param: str, value: Any, reason: str) -> BadRequest:
    """A 400 whose message names the field and shows the value."""
    return BadRequest(str(InvalidInput(param, value, reason)), param=param, code="invalid_value")


def error_response(exc: Exception) -> JSONResponse:
    """Map any exception to the envelope and its status. Unknown exceptions are 500 and logged."""
    if isinstance(exc, APIError):
        error = exc
    elif isinstance(exc, RequestValidationError):
        error = _from_validation(exc)
    elif isinstance(exc, StarletteHTTPException):
        kinds = {404: NotFound, 405: BadRequest, 413: PayloadTooLarge, 415: UnsupportedMediaType}
        error = kinds.get(exc.status_code, BadRequest)(str(exc.detail))
        error.status = exc.status_code
    else:
        kind = classify(exc)
        if kind.status >= 500:
            logger.exception("Error answered with %d", kind.status, exc_info=exc)
        message = kind.message if kind.public else f"{kind.message}; the server log has the details"
        error = _BY_STATUS.get(kind.status, APIError)(
            message, param=getattr(exc, "param", None), code=kind.code
        )
    body = ErrorResponse(
        error=ErrorBody(message=error.message, type=error.type, param=error.param, code=error.code)
    )
    response = JSONResponse(body.model_dump(), status_code=error.status, headers=error.headers)
    # Starlette answers a 500 from its outermost layer, outside the SecurityHeaders middleware.
    secure(response.headers)
    return response


def _from_validation(exc: RequestValidationError) -> BadRequest:
    first = exc.errors()[0]
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path", "header")]
    param = ".".join(location) or None
    value = first.get("input")
    message = first.get("msg", "invalid value")
    if param and first.get("type") != "missing":
        return bad_value(param, value, message)
    return BadRequest(f"{param}: {message}" if param else message, param=param, code="invalid_value")


async def handle(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI exception handler: every error goes through ``error_response``."""
    return error_response(exc)


def responses(*errors: type[APIError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` for a route: each status it can answer with, all in the one envelope."""
    return {error.status: {"model": ErrorResponse, "description": error.type} for error in errors}
