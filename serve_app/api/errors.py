"""One error envelope, and the one place an exception becomes an HTTP response.

Every error the API returns looks like ``{"error": {"message", "type", "param", "code"}}`` (OpenAI's
shape). Domain code raises ``core.errors.APIError`` (or an engine error), with no web framework in sight;
``error_response`` is the only place that turns an exception into a response, through
``core.errors.classify``, which the job runner uses too. FastAPI's own errors (a body that fails
validation, a route that does not exist) are mapped here as well.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import (
    APIError,
    BadRequest,
    Conflict,
    Forbidden,
    InsufficientStorage,
    NotFound,
    Outage,
    Overloaded,
    PayloadTooLarge,
    RequestTimeout,
    Unauthorized,
    Unavailable,
    Unprocessable,
    UnsupportedMediaType,
    bad_value,
    classify,
)
from serve_app.api.headers import secure

logger = logging.getLogger("ray.serve")


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None
    video_id: str | None = Field(
        None, description="The video the request made, when the error came after it (`POST /v1/videos/sync`)."
    )


class ErrorResponse(BaseModel):
    """The one error envelope."""

    error: ErrorBody


_BY_STATUS: dict[int, type[APIError]] = {
    kind.status: kind
    for kind in (BadRequest, Unauthorized, Forbidden, NotFound, Conflict, RequestTimeout, PayloadTooLarge)
    + (UnsupportedMediaType, Unprocessable, Overloaded, Unavailable, InsufficientStorage)
}


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
            message,
            param=getattr(exc, "param", None),
            code=kind.code,
            # An outage the client can wait out (the job store's, the object store's) says when to ask again.
            headers={"Retry-After": str(exc.retry_after_s)} if isinstance(exc, Outage) else None,
        )
    body = ErrorResponse(
        error=ErrorBody(
            message=error.message,
            type=error.type,
            param=error.param,
            code=error.code,
            video_id=error.video_id,
        )
    )
    # `video_id` only where there is one: every other error keeps the four fields OpenAI's envelope has.
    content = body.model_dump(exclude={"error": {"video_id"}} if error.video_id is None else None)
    response = JSONResponse(content, status_code=error.status, headers=error.headers)
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
