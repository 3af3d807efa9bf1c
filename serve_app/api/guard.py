"""The gate in front of every route: cross-origin access, content types, and the body's size and time.

A cross-site page may send a "simple" POST (a form, or a `text/plain` or bodiless fetch) without asking
the server first. So a POST with a body must say it is JSON or a form (multipart or urlencoded; else 415),
and a POST or DELETE that a browser marks as coming from another origin (`Origin`, which browsers send on
every cross-origin POST, forms included) is refused (403) unless `cors.allowed_origins` names that origin; CORS itself is Starlette's own
middleware, added only when origins are configured. Non-browser clients (the SDK, curl) send no `Origin`
and are unaffected.

The body is counted as it arrives: past `limits.max_body_bytes` the request fails with 413 at once
(chunked bodies and multipart files included, nothing is read whole first), and a body that takes longer
than `limits.body_timeout_s` fails with 408.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.errors import APIError, Forbidden, PayloadTooLarge, RequestTimeout, UnsupportedMediaType
from serve_app.api.errors import error_response
from serve_app.config import AppConfig, CorsConfig

BODY_TYPES = ("application/json", "multipart/form-data", "application/x-www-form-urlencoded")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class RequestGuard:
    """ASGI middleware; ``config`` returns the running service's config (None while it starts)."""

    def __init__(self, app: ASGIApp, config: Callable[[], AppConfig | None]) -> None:
        self.app = app
        self.config = config
        self._cors: tuple[CorsConfig, ASGIApp] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        config = self.config() if scope["type"] == "http" else None
        if config is None:
            await self.app(scope, receive, send)
            return
        if not config.cors.allowed_origins:
            await self._guarded(scope, receive, send)
            return
        # CORS outermost: preflights are answered there, and the guard's refusals carry CORS headers.
        if self._cors is None or self._cors[0] != config.cors:
            self._cors = (config.cors, _cors_middleware(self._guarded, config.cors))
        await self._cors[1](scope, receive, send)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        config = self.config()
        assert config is not None  # checked by __call__
        try:
            self._check(scope, config)
        except APIError as exc:
            await error_response(exc)(scope, receive, send)
            return
        limits = config.limits
        await self.app(scope, _bounded(receive, limits.max_body_bytes, limits.body_timeout_s), send)

    @staticmethod
    def _check(scope: Scope, config: AppConfig) -> None:
        method = scope["method"]
        if method in SAFE_METHODS:
            return
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        origin = headers.get("origin")
        if origin is not None and not _same_origin(origin, headers.get("host", "")):
            allowed = config.cors.allowed_origins
            if origin not in allowed and "*" not in allowed:
                raise Forbidden(
                    f"requests from pages at {origin[:100]!r} are not allowed; add the origin to "
                    "cors.allowed_origins to let it call the API",
                    param="origin",
                    code="cross_origin_request",
                )
        media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        # A POST without a body (a cancel from curl) has no type to judge; a browser's cross-site one was
        # refused above by its Origin.
        bodiless = headers.get("content-length", "0") == "0" and "transfer-encoding" not in headers
        if method == "POST" and media_type not in BODY_TYPES and not (bodiless and not media_type):
            raise UnsupportedMediaType(
                f"content-type={media_type or '<none>'!r}: POST takes application/json, multipart/form-data or "
                "application/x-www-form-urlencoded",
                param="content-type",
                code="unsupported_media_type",
            )
        declared = headers.get("content-length", "")
        limit = config.limits.max_body_bytes
        if declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"request body of {declared} bytes is over the {limit}-byte limit")


def _bounded(receive: Receive, limit: int, timeout_s: float) -> Receive:
    """``receive`` that fails once the body passes ``limit`` bytes or ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    received = 0
    complete = False

    async def bounded_receive() -> Message:
        nonlocal received, complete
        if complete:  # after the body only a disconnect can come; a stream may wait for it for hours
            return await receive()
        try:
            message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise RequestTimeout(
                f"the request body did not arrive within {timeout_s:g} s (limits.body_timeout_s)"
            ) from None
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            complete = not message.get("more_body", False)
            if received > limit:
                raise PayloadTooLarge(f"request body is over the {limit}-byte limit")
        else:
            complete = True
        return message

    return bounded_receive


def _same_origin(origin: str, host: str) -> bool:
    return bool(host) and urlsplit(origin).netloc.lower() == host.lower()


def _cors_middleware(app: ASGIApp, cors: CorsConfig) -> ASGIApp:
    return CORSMiddleware(
        app,
        allow_origins=cors.allowed_origins,
        allow_methods=["GET", "POST", "DELETE"],
        allow_headers=["authorization", "content-type", "idempotency-key"],
        expose_headers=["retry-after"],
        max_age=cors.max_age_s,
    )
