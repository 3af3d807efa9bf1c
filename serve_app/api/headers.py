"""Security headers: a browser may neither guess an answer's type nor run in a page what this server did
not send.

Every answer says ``X-Content-Type-Options: nosniff``, so a download, a caption file or an error is never
run as a script or shown as a page because its bytes look like one. A page (the studio, Swagger UI at
/docs) gets a Content-Security-Policy that lets it load and run only this server's own files: no inline
script or style, no ``eval``, no other origin, no framing by another site. The studio needs nothing more
(plain files, styles set through the DOM); Swagger UI's page has one inline script, allowed by its hash
(``page_policy``). JSON answers get a policy that lets them load nothing, should one be opened as a page.
"""

from __future__ import annotations

import base64
import hashlib
import re

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

NOSNIFF = {"X-Content-Type-Options": "nosniff"}
JSON_POLICY = "default-src 'none'; frame-ancestors 'none'"
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def page_policy(html: str = "") -> str:
    """The Content-Security-Policy of a page of this server whose text is ``html``: its inline scripts (if
    any) may run, by their hashes; everything else must come from this origin."""
    hashes = [
        "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
        for script in _INLINE_SCRIPT.findall(html)
    ]
    return "; ".join(
        [
            "default-src 'self'",
            " ".join(["script-src 'self'", *hashes]),
            "style-src 'self'",
            # data: the studio's empty favicon and Swagger UI's icons; blob: images and videos the studio
            # fetched with an API key (an <img> or <video> cannot send one).
            "img-src 'self' data: blob:",
            "media-src 'self' blob:",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


STUDIO_POLICY = page_policy()


class SecurityHeaders:
    """ASGI middleware: ``nosniff`` on every answer, and a policy on each page and JSON answer that has none
    of its own (a route may set one: /docs does)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(raw=list(message.get("headers", [])))
                secure(headers)
                message["headers"] = headers.raw
            await send(message)

        await self.app(scope, receive, send_secured)


def secure(headers: MutableHeaders) -> None:
    """Add the security headers an answer lacks (by its content type)."""
    for name, value in NOSNIFF.items():
        headers.setdefault(name, value)
    if "content-security-policy" in headers:
        return
    media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type == "text/html":
        headers["Content-Security-Policy"] = STUDIO_POLICY
    elif media_type == "application/json":
        headers["Content-Security-Policy"] = JSON_POLICY
