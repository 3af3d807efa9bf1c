"""The HTTP router and the ingress deployment: OpenAI's Videos API over FastAPI.

Routes only parse HTTP and call ``VideoService``; every error leaves through ``serve_app.api.errors``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import mimetypes
import os
import pathlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ValidationError
from ray import serve
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import (
    APIError,
    BadRequest,
    Conflict,
    Forbidden,
    GatewayTimeout,
    InsufficientStorage,
    InvalidInput,
    JobFailed,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    RangeNotSatisfiable,
    RequestTimeout,
    Unauthorized,
    Unavailable,
    Unprocessable,
    UnsupportedMediaType,
    bad_value,
)
from core.status import JobStatus, Variant
from core.storage import StoredContent
from serve_app.api import errors
from serve_app.api.bodies import CreateBody, read_create_body
from serve_app.api.downloads import (
    StoredObjectResponse,
    range_not_satisfiable,
    requested_range,
)
from serve_app.api.guard import RequestGuard
from serve_app.api.headers import SecurityHeaders, page_policy
from serve_app.config import AppConfig
from serve_app.protocol import (
    CreateVideoRequest,
    EditRequest,
    ExtendRequest,
    ExtensionFields,
    Health,
    M,
    ModelList,
    RemixRequest,
    VideoDeleted,
    VideoList,
    VideoObject,
    parse_body,
    parse_create,
)
from serve_app.store.jobs import JobStore
from serve_app.videos.content import Content
from serve_app.videos.service import ServeSignals, VideoService
from serve_app.videos.validation import client_errors

logger = logging.getLogger("ray.serve")


class OpenedFileResponse(FileResponse):
    """Starlette's FileResponse (ranges, ETag, HEAD) over a file opened before the route returned.

    FileResponse opens its path only after sending the headers, so a DELETE in between broke the
    transfer; an open file outlives its name, so the download completes. The `Range` header is judged as
    for a kept object (``serve_app.api.downloads``): FileResponse is handed only the one range decided there.
    """

    def __init__(self, content: Content) -> None:
        super().__init__(
            content.file.name,
            media_type=content.media_type,
            filename=content.filename,
            stat_result=os.fstat(content.file.fileno()),
        )
        self.file = content.file

    @asynccontextmanager
    async def _open_file(self) -> AsyncIterator[Any]:
        self.file.seek(0)
        yield anyio.wrap_file(self.file)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        # Without "pathsend" the server would be handed the path to open again, which may be gone.
        extensions = {k: v for k, v in scope.get("extensions", {}).items() if k != "http.response.pathsend"}
        try:
            request = Headers(scope=scope)
            size = os.fstat(self.file.fileno()).st_size
            asked = requested_range(request, size, (self.headers["etag"], self.headers["last-modified"]))
            if asked == "unsatisfiable":
                refusal = range_not_satisfiable(request["range"], size, self.filename or "the file")
                await refusal(scope, receive, send)
                return
            # FileResponse sees the one range decided here, or none: If-Range was judged with it.
            headers = [
                (name, value) for name, value in scope["headers"] if name not in (b"range", b"if-range")
            ]
            if asked is not None:
                headers.append((b"range", f"bytes={asked[0]}-{asked[1] - 1}".encode()))
            await super().__call__({**scope, "extensions": extensions, "headers": headers}, receive, send)
        finally:
            self.file.close()


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
    sent = token.strip().encode()
    # compare_digest's time does not depend on where the first wrong byte is: no guessing a key by timing.
    if not any(hmac.compare_digest(sent, key.encode()) for key in keys):
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
    # /docs is served below from assets shipped with the package: FastAPI's own loads them from a CDN, and
    # renders blank on the offline machines GPU clusters often are. ReDoc would need one too.
    docs_url=None,
    redoc_url=None,
)
# The API proper; /healthz stays on `app` without a key, as health probes (Kubernetes, Serve) carry none.
# Any route may answer 503 with Retry-After: the service is starting, or its job store is unreachable.
api = APIRouter(dependencies=[Depends(authorize)], responses=errors.responses(Unauthorized, Unavailable))
# Known kinds are answered where they are raised; `Exception` is the last resort for bugs (a 500, logged).
for kind in (APIError, InvalidInput, RequestValidationError, StarletteHTTPException, Exception):
    app.add_exception_handler(kind, errors.handle)

VideoId = Annotated[str, Path(description="A video id from POST /v1/videos.")]


# Serve ships a copy of `app` to each replica, so the service cannot hang off `app.state`; the route
# functions stay module-level, and this is the one service of the process (one replica per process).
_services: list[VideoService] = []


def install(service: VideoService) -> None:
    """Make ``service`` the one the routes use (the replica's constructor, or a test, calls this)."""
    _services[:] = [service]


def _current_config() -> AppConfig | None:
    return _services[0].config if _services else None


# Module-level, like the routes: Serve pickles `app` with its middleware, and a function it can import
# by name reads this module's `_services` in the replica, where a lambda would carry a copy of it.
app.add_middleware(RequestGuard, config=_current_config)
# Outermost: the gate's refusals carry the headers too.
app.add_middleware(SecurityHeaders)


def _service(request: Request) -> VideoService:
    if not _services:
        raise Unavailable("the service is starting", code="starting", headers={"Retry-After": "5"})
    return _services[0]


# The create body's schemas, for /openapi.json: its models live in the components (where `$ref`s can
# reach them), and the multipart form is the same fields with `input_reference` a file, `scenes` JSON text.
CREATE_SCHEMAS = CreateVideoRequest.model_json_schema(ref_template="#/components/schemas/{model}")
CREATE_MODELS = {"CreateVideoRequest": CREATE_SCHEMAS, **CREATE_SCHEMAS.pop("$defs")}
CREATE_FORM = {
    **CREATE_SCHEMAS,
    "properties": CREATE_SCHEMAS["properties"]
    | {
        "input_reference": {
            "type": "string",
            "format": "binary",
            "description": "A PNG, JPEG or WebP image; or an MP4, MOV or WebM video, continued from its last frame",
        },
        "music": {"type": "string", "format": "binary", "description": "WAV, MP3, Ogg, FLAC or M4A"},
        "scenes": {"type": "string", "description": "The `scenes` list as JSON text."},
        "narration": {"type": "string", "description": "true, false, or the options object as JSON text."},
        "image_reference": {"type": "string", "description": '`{"image_url": "data:..."}` as JSON text.'},
        "extra_params": {"type": "string", "description": "The `extra_params` object as JSON text."},
    },
}


def _source_body(model: type[BaseModel], form: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The `requestBody` of a route that starts from a video (remix, edit, extension): JSON, or the same
    fields as a multipart form where ``form`` says how a field differs; and the models it refers to."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    models = {model.__name__: schema, **schema.pop("$defs", {})}
    form_schema = {**schema, "properties": schema["properties"] | form}
    body = {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}},
                "multipart/form-data": {"schema": form_schema},
            },
        }
    }
    return body, models


_SCENES_TEXT = {"scenes": {"type": "string", "description": "The `scenes` list as JSON text."}}
_VIDEO_ID = {"video": {"type": "string", "description": "The id (or a field `video[id]`)."}}
REMIX_BODY, REMIX_MODELS = _source_body(RemixRequest, _SCENES_TEXT)
EDIT_BODY, EDIT_MODELS = _source_body(EditRequest, _VIDEO_ID)
EXTEND_BODY, EXTEND_MODELS = _source_body(
    ExtendRequest,
    {
        "video": {
            "type": "string",
            "format": "binary",
            "description": "An MP4, MOV or WebM file to continue; or the id of a video made here (a text "
            "field `video` or `video[id]`).",
        }
    },
)


def openapi() -> dict[str, Any]:
    """FastAPI's description of the app, with the request bodies' models among its components."""
    if app.openapi_schema is None:
        schema = FastAPI.openapi(app)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(CREATE_MODELS | REMIX_MODELS | EDIT_MODELS | EXTEND_MODELS)
        app.openapi_schema = schema
    return app.openapi_schema


app.openapi = openapi  # type: ignore[method-assign]


# Refusals every POST can meet at the gate (serve_app.api.guard), before its route runs.
GATE = (Forbidden, RequestTimeout, PayloadTooLarge, UnsupportedMediaType)
# The create's body (the sync route's too): JSON, or the same fields as a form.
CREATE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/CreateVideoRequest"}},
            "multipart/form-data": {"schema": CREATE_FORM},
            "application/x-www-form-urlencoded": {"schema": CREATE_FORM},
        },
    }
}


@api.post(
    "/v1/videos",
    response_model=VideoObject,
    responses=errors.responses(BadRequest, Unprocessable, Overloaded, *GATE, InsufficientStorage),
    openapi_extra=CREATE_BODY,
)
async def create_video(
    request: Request,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> VideoObject:
    """Start a video job. JSON, a multipart form (`input_reference` as a PNG, JPEG or WebP file, or an MP4,
    MOV or WebM video to continue) or an urlencoded one; vLLM-Omni's fields are taken too (README, "Clients of
    other servers")."""
    service = _service(request)
    create, body = await _parse_create(request, service)
    return await service.create(create, body.upload, idempotency_key, music=body.uploads.get("music"))


@api.post(
    "/v1/videos/sync",
    response_class=OpenedFileResponse,
    status_code=200,
    responses={
        200: {"content": {"video/mp4": {}}, "description": "The finished video, whole."},
        307: {"description": "With `storage.presign`: `Location` is a presigned URL of the video."},
        # 404 and 409: the video was deleted or cancelled meanwhile, or an Idempotency-Key replays one that was.
        **errors.responses(
            BadRequest,
            NotFound,
            Conflict,
            Unprocessable,
            Overloaded,
            *GATE,
            JobFailed,
            GatewayTimeout,
            InsufficientStorage,
        ),
    },
    openapi_extra=CREATE_BODY,
)
async def create_video_sync(
    request: Request,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Response:
    """vLLM-Omni's sync route: the create's body, answered with the MP4 once the video completes within
    `limits.sync_timeout_s`; past it, a 504 whose error carries the video's id (the job goes on)."""
    service = _service(request)
    create, body = await _parse_create(request, service)
    content = await service.create_and_wait(
        create, body.upload, idempotency_key, music=body.uploads.get("music")
    )
    return _download(content)


async def _parse_create(request: Request, service: VideoService) -> tuple[CreateVideoRequest, CreateBody]:
    """A create body (JSON or a form, with its uploads), validated."""
    body = await read_create_body(request)
    if body.upload is not None and body.fields.get("image_reference") is not None:
        raise bad_value("image_reference", "<given>", "is `input_reference` by another name; give one")
    try:
        return parse_create(body.fields, service.config.limits), body
    except ValidationError as exc:
        raise RequestValidationError(client_errors(CreateVideoRequest, exc)) from None


async def _parse(request: Request, model: type[M]) -> M:
    """A remix or edit body (JSON or multipart, no files), validated as a create is."""
    body = await read_create_body(request, file_fields=())
    return _validated(model, body.fields, _service(request))


def _validated(model: type[M], fields: dict[str, Any], service: VideoService) -> M:
    try:
        return parse_body(model, fields, service.config.limits)
    except ValidationError as exc:
        raise RequestValidationError(client_errors(model, exc)) from None


SOURCE_ERRORS = errors.responses(BadRequest, NotFound, Conflict, Overloaded, *GATE, InsufficientStorage)


@api.post(
    "/v1/videos/{video_id}/remix",
    response_model=VideoObject,
    responses=SOURCE_ERRORS,
    openapi_extra=REMIX_BODY,
)
async def remix_video(request: Request, video_id: VideoId) -> VideoObject:
    """A new video with a completed one's settings and a new prompt. With explicit `scenes` (an extension),
    only the scenes that differ from the source's at their place are made again."""
    service = _service(request)
    return await service.remix(video_id, await _parse(request, RemixRequest))


@api.post("/v1/videos/edits", response_model=VideoObject, responses=SOURCE_ERRORS, openapi_extra=EDIT_BODY)
async def edit_video(request: Request) -> VideoObject:
    """OpenAI's successor to remix: `prompt` and `video: {id}`; does what remix does."""
    edit = await _parse(request, EditRequest)
    remix = RemixRequest(prompt=edit.prompt, webhook_url=edit.webhook_url)
    return await _service(request).remix(edit.video.id, remix, param="video.id")


@api.post(
    "/v1/videos/extensions", response_model=VideoObject, responses=SOURCE_ERRORS, openapi_extra=EXTEND_BODY
)
async def extend_video(request: Request) -> VideoObject:
    """A completed video followed by `seconds` more, written from `prompt`, starting from its last frame. In a
    multipart form, `video` may be an MP4, MOV or WebM file instead: the new video starts from its last frame
    (and holds only what was made)."""
    service = _service(request)
    body = await read_create_body(request, file_fields=("video",))
    upload = body.uploads.get("video")
    if upload is None:
        return await service.extend(_validated(ExtendRequest, body.fields, service))
    return await service.extend_upload(_validated(ExtensionFields, body.fields, service), upload)


@api.api_route(
    "/v1/videos/characters{rest:path}",
    methods=["GET", "POST", "DELETE"],
    responses=errors.responses(BadRequest),
    include_in_schema=False,
)
async def characters(request: Request) -> None:
    """OpenAI's characters (reusable likenesses) are not something this service makes."""
    raise BadRequest(
        "characters are not supported by this service; describe the character in the prompt or pass "
        "`input_reference`",
        param="characters",
        code="unsupported",
    )


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


@api.delete(
    "/v1/videos/{video_id}", response_model=VideoDeleted, responses=errors.responses(NotFound, Forbidden)
)
async def delete_video(request: Request, video_id: VideoId) -> VideoDeleted:
    return await _service(request).delete(video_id)


@api.get(
    "/v1/videos/{video_id}/content",
    response_class=OpenedFileResponse,
    status_code=200,
    responses={
        200: {"content": {"video/mp4": {}, "image/jpeg": {}, "text/vtt": {}, "audio/mp4": {}}},
        206: {"description": "The byte range the `Range` header asked for."},
        307: {
            "description": "With `storage.presign`: `Location` is a presigned URL of the file in the store."
        },
        **errors.responses(BadRequest, NotFound, Conflict, RangeNotSatisfiable),
    },
)
async def download_content(request: Request, video_id: VideoId, variant: Variant = Variant.VIDEO) -> Response:
    return _download(await asyncio.to_thread(_service(request).content, video_id, variant))


def _download(content: Content | StoredContent | str) -> Response:
    """The answer that hands over a kept file: a local file, an object of the store, or a presigned URL."""
    if isinstance(content, str):  # storage.presign: the client fetches it from the store itself
        return RedirectResponse(content, status_code=307)
    if isinstance(content, StoredContent):
        return StoredObjectResponse(content)
    return OpenedFileResponse(content)


@api.post(
    "/v1/videos/{video_id}/cancel",
    response_model=VideoObject,
    responses=errors.responses(NotFound, Conflict, *GATE),
)
async def cancel_video(request: Request, video_id: VideoId) -> VideoObject:
    """Stop a queued or running video; 409 if it already finished."""
    return await _service(request).cancel(video_id)


@api.get(
    "/v1/videos/{video_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, **errors.responses(NotFound, Overloaded)},
)
async def video_events(request: Request, video_id: VideoId) -> StreamingResponse:
    """Server-sent events: `event: video` with the video object at each change, until it finishes.

    A stream lasts at most `limits.event_stream_max_seconds`; EventSource then reconnects by itself.
    """
    return StreamingResponse(
        _service(request).open_events(video_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@api.get("/v1/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    return _service(request).models()


@app.get("/healthz", response_model=Health)
async def healthz(request: Request) -> Health:
    counts = _service(request).counts()
    return Health(
        jobs_running=counts.get(JobStatus.IN_PROGRESS, 0), jobs_queued=counts.get(JobStatus.QUEUED, 0)
    )


# -- the studio and the API docs: static pages, open without a key (the studio asks for one itself) --------

STUDIO = pathlib.Path(__file__).parents[1] / "studio"
# The studio's scripts are ES modules, which a browser runs only when served with a JavaScript type; the
# static files take theirs from the host's MIME table, which may say otherwise (text/plain on some hosts).
mimetypes.add_type("text/javascript", ".js")
app.mount("/studio", StaticFiles(directory=STUDIO), name="studio")
app.mount("/docs/assets", StaticFiles(directory=str(files("fastapi_swagger.resources"))), name="docs-assets")


@app.get("/", include_in_schema=False)
async def studio() -> FileResponse:
    """The studio: make, watch and download videos from the browser."""
    return FileResponse(STUDIO / "index.html", media_type="text/html; charset=utf-8")


@app.get("/docs", include_in_schema=False)
async def docs() -> HTMLResponse:
    """Swagger UI over /openapi.json, every asset from this server. URLs are relative, so the page works
    under any route prefix. Its policy lets it run the one inline script that starts Swagger UI."""
    page = get_swagger_ui_html(
        openapi_url="openapi.json",
        title="storyreel API",
        swagger_js_url="docs/assets/swagger-ui-bundle.js",
        swagger_css_url="docs/assets/swagger-ui.css",
        swagger_favicon_url="docs/assets/favicon-32x32.png",
    )
    page.headers["Content-Security-Policy"] = page_policy(bytes(page.body).decode())
    return page


app.include_router(api)  # after its routes: including copies them


@serve.deployment(
    ray_actor_options={"num_cpus": 0.25},
    max_ongoing_requests=200,
    # Past this many requests waiting for the ingress, Serve's proxy answers 429 with Retry-After itself
    # (its default would be 503), so clients back off instead of treating the service as down.
    max_queued_requests=500,
    backpressure_config={"status_code": 429, "retry_after_s": 5},
    # No job runs here: the ingress need not outlast a generation.
    graceful_shutdown_timeout_s=30,
)
@serve.ingress(app)
class VideoAPI:
    """The ingress: validates, stores jobs, answers polls and event streams; the JobRunner makes the videos.

    Args:
        config: the application config.
        runner: handle of the JobRunner deployment (told of each new job).
        board: handle of the JobBoard deployment (told of each cancel and delete).
    """

    def __init__(self, config: AppConfig, runner: Any, board: Any) -> None:
        store = JobStore(config.storage.database_url)
        self.service = VideoService(config, store, ServeSignals(runner, board))
        install(self.service)
