"""The HTTP router and the ingress deployment: OpenAI's Videos API over FastAPI.

Routes only parse HTTP and call ``VideoService``; every error leaves through ``serve_app.errors``.
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import ValidationError
from ray import serve
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from engines.errors import InvalidInput
from serve_app import errors
from serve_app.config import AppConfig
from serve_app.errors import (
    BadRequest,
    Conflict,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    Unauthorized,
    Unprocessable,
)
from serve_app.jobs import Handles, JobRunner
from serve_app.protocol import (
    CreateVideoRequest,
    Health,
    ModelList,
    Variant,
    VideoDeleted,
    VideoList,
    VideoObject,
)
from serve_app.serving import VideoService
from serve_app.store import JobStore

logger = logging.getLogger("ray.serve")

# Form fields that carry JSON in a multipart body (the OpenAI SDK sends every field as a form field).
JSON_FORM_FIELDS = ("scenes", "input_reference")


async def authorize(request: Request) -> None:
    """With API keys configured (``auth.api_keys_env``), a request to the API needs one of them."""
    keys = _service(request).config.auth.keys()
    if not keys:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(
            "missing API key: send the header `Authorization: Bearer <key>`",
            param="authorization",
            code="missing_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    token = token.strip().encode()
    # compare_digest's time does not depend on where the first wrong byte is: no guessing a key by timing.
    if not any(hmac.compare_digest(token, key.encode()) for key in keys):
        raise Unauthorized(
            "invalid API key in the Authorization header",
            param="authorization",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )


app = FastAPI(
    title="storyreel",
    version="0.1.0",
    description="Text-to-video on Ray Serve, compatible with OpenAI's Videos API.",
)
# The API proper; /healthz stays on `app` without a key, as health probes (Kubernetes, Serve) carry none.
api = APIRouter(dependencies=[Depends(authorize)], responses=errors.responses(Unauthorized))
# Known kinds are answered where they are raised; `Exception` is the last resort for bugs (a 500, logged).
for kind in (errors.APIError, InvalidInput, RequestValidationError, StarletteHTTPException, Exception):
    app.add_exception_handler(kind, errors.handle)

VideoId = Annotated[str, Path(description="A video id from POST /v1/videos.")]


# Serve ships a copy of `app` to each replica, so the service cannot hang off `app.state`; the route
# functions stay module-level, and this is the one service of the process (one replica per process).
_services: list[VideoService] = []


def install(service: VideoService) -> None:
    """Make ``service`` the one the routes use (the replica's constructor, or a test, calls this)."""
    _services[:] = [service]


def _service(request: Request) -> VideoService:
    if not _services:
        raise errors.Unavailable("the service is starting", code="starting", headers={"Retry-After": "5"})
    _services[0].start_background()  # idempotent; whichever comes first, a request or a health check
    return _services[0]


@api.post(
    "/v1/videos",
    response_model=VideoObject,
    responses=errors.responses(BadRequest, PayloadTooLarge, Unprocessable, Overloaded),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": CreateVideoRequest.model_json_schema()},
                "multipart/form-data": {
                    "schema": {"type": "object", "properties": {"prompt": {"type": "string"}}}
                },
            },
        }
    },
)
async def create_video(
    request: Request,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> VideoObject:
    """Start a video job. JSON or multipart (`input_reference` as an image file)."""
    service = _service(request)
    body, reference = await _read_body(request, service.config.limits.max_body_bytes)
    try:
        create = CreateVideoRequest.model_validate(body)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
    return await service.create(create, reference, idempotency_key)


@api.get("/v1/videos", response_model=VideoList, responses=errors.responses(BadRequest))
async def list_videos(
    request: Request,
    after: Annotated[str | None, Query(description="List after this video id.")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
) -> VideoList:
    return _service(request).list(after, limit, order)


@api.get("/v1/videos/{video_id}", response_model=VideoObject, responses=errors.responses(NotFound))
async def retrieve_video(request: Request, video_id: VideoId) -> VideoObject:
    return _service(request).retrieve(video_id)


@api.delete("/v1/videos/{video_id}", response_model=VideoDeleted, responses=errors.responses(NotFound))
async def delete_video(request: Request, video_id: VideoId) -> VideoDeleted:
    return await _service(request).delete(video_id)


@api.get(
    "/v1/videos/{video_id}/content",
    response_class=FileResponse,
    responses={
        200: {"content": {"video/mp4": {}, "image/jpeg": {}, "text/vtt": {}}},
        **errors.responses(BadRequest, NotFound, Conflict),
    },
)
async def download_content(request: Request, video_id: VideoId, variant: Variant = "video") -> FileResponse:
    path, media_type = _service(request).content(video_id, variant)
    extension = path.suffix
    return FileResponse(path, media_type=media_type, filename=f"{video_id}{extension}")


@api.post(
    "/v1/videos/{video_id}/cancel", response_model=VideoObject, responses=errors.responses(NotFound, Conflict)
)
async def cancel_video(request: Request, video_id: VideoId) -> VideoObject:
    """Stop a queued or running video; 409 if it already finished."""
    return await _service(request).cancel(video_id)


@api.get(
    "/v1/videos/{video_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, **errors.responses(NotFound)},
)
async def video_events(request: Request, video_id: VideoId) -> StreamingResponse:
    """Server-sent events: `event: video` with the video object at each change, until it finishes."""
    service = _service(request)
    service.retrieve(video_id)  # 404 before the stream starts
    return StreamingResponse(
        service.events(video_id), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


@api.get("/v1/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    return _service(request).models()


@app.get("/healthz", response_model=Health)
async def healthz(request: Request) -> Health:
    return Health(jobs_running=_service(request).running)


app.include_router(api)  # after its routes: including copies them


async def _read_body(request: Request, limit: int) -> tuple[dict[str, Any], bytes | None]:
    """The create body as a dict, and the uploaded reference image's bytes if any."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes is over the {limit}-byte limit")
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data") or content_type.startswith(
        "application/x-www-form-urlencoded"
    ):
        return await _read_form(request, limit)
    raw = await request.body()
    if len(raw) > limit:
        raise PayloadTooLarge(f"request body of {len(raw)} bytes is over the {limit}-byte limit")
    try:
        body = json.loads(raw or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object with at least `prompt`", code="invalid_json")
    return body, None


async def _read_form(request: Request, limit: int) -> tuple[dict[str, Any], bytes | None]:
    form = await request.form(max_part_size=limit)
    body: dict[str, Any] = {}
    reference = None
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            if key != "input_reference":
                raise errors.bad_value(key, value.filename, "only input_reference may be a file")
            reference = await value.read(limit + 1)
            if len(reference) > limit:
                raise PayloadTooLarge(f"input_reference is over the {limit}-byte limit")
        elif key in JSON_FORM_FIELDS:
            try:
                body[key] = json.loads(value)
            except json.JSONDecodeError:
                raise errors.bad_value(key, value[:60], "must be JSON in a form field") from None
        else:
            body[key] = value
    return body, reference


@serve.deployment(
    ray_actor_options={"num_cpus": 0.25},
    max_ongoing_requests=200,
    # Past this many requests waiting for the ingress, Serve's proxy answers 429 with Retry-After itself
    # (its default would be 503), so clients back off instead of treating the service as down.
    max_queued_requests=500,
    backpressure_config={"status_code": 429, "retry_after_s": 5},
    # Jobs are checkpointed and resume on the next replica, so the ingress need not outlast a generation.
    graceful_shutdown_timeout_s=30,
)
@serve.ingress(app)
class VideoAPI:
    """The ingress: HTTP in, jobs run from here through the other deployments.

    Args:
        config: the application config.
        writer, painter, svd, encoder, board: handles of the SceneWriter, KeyframePainter, SVDGenerator,
            Encoder and JobBoard deployments.
    """

    def __init__(
        self, config: AppConfig, writer: Any, painter: Any, svd: Any, encoder: Any, board: Any
    ) -> None:
        store = JobStore(config.storage.database_path)
        handles = Handles(writer=writer, painter=painter, svd=svd, encoder=encoder, board=board)
        self.service = VideoService(config, store, JobRunner(config, store, handles))
        install(self.service)

    async def check_health(self) -> None:
        # Health checks run on the replica's event loop as soon as it is up: the place to start the sweep
        # that takes up jobs an earlier replica left unfinished (they run as tasks on this loop).
        self.service.start_background()
