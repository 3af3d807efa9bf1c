"""The content route's answer to a `Range` header, for a local file and for a kept object alike, and the
response that streams a kept object through the ingress.

One range per request (a player's seek, a resumed download). A header this service cannot use is ignored
and the whole file sent (200), as RFC 9110 section 14.2 allows a server to do with any `Range`: a unit
other than bytes, a malformed or backwards range, several ranges. A well-formed range that starts past
the end is a 416 in the error envelope. Local files go out through Starlette's FileResponse, which is
handed only a range decided here (its own parser answered malformed headers with a plain-text 400); a
kept object is read from the store a chunk at a time, so a long video never sits whole in memory.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from email.utils import formatdate
from typing import Any, Literal
from urllib.parse import quote

from starlette.datastructures import Headers
from starlette.responses import Response

from core.errors import RangeNotSatisfiable
from core.storage import StoredContent
from serve_app.api.errors import error_response

CHUNK_BYTES = 1 << 20
# At most 18 digits a side: a longer number is no object's size, and int() of thousands of digits raises.
# Range units are case-insensitive (RFC 9110 section 14.1).
RANGE = re.compile(r"bytes=(\d{0,18})-(\d{0,18})", re.IGNORECASE)

Asked = tuple[int, int] | None | Literal["unsatisfiable"]


def byte_range(header: str | None, size: int) -> Asked:
    """The ``(start, end)`` (end exclusive) a Range header asks of ``size`` bytes.

    None: serve the whole file (no header, several ranges, a malformed one, or nothing to cut from an
    empty file). "unsatisfiable": a range that starts past the end (416).
    """
    if header is None:
        return None
    match = RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        suffix = int(last)
        if suffix == 0:
            return "unsatisfiable"
        start, end = max(0, size - suffix), size
    else:
        start = int(first)
        if last and int(last) < start:
            return None
        if start >= size:
            return "unsatisfiable"
        end = min(size, int(last) + 1) if last else size
    return (start, end) if start < end else None


def requested_range(request: Headers, size: int, validators: Iterable[str]) -> Asked:
    """What a request's `Range` and `If-Range` headers ask of a file of ``size`` bytes.

    ``validators``: the file's entity tag and last-modified date; an `If-Range` that matches neither (a
    client holding another version, or a weak tag) gets the whole file, whatever range it asked for.
    """
    if_range = request.get("if-range")
    if if_range is not None and (if_range.startswith("W/") or if_range not in validators):
        return None
    return byte_range(request.get("range"), size)


def range_not_satisfiable(header: str, size: int, what: str) -> Response:
    """The 416 of a range that starts past the end of ``what`` (``size`` bytes), in the error envelope."""
    return error_response(
        RangeNotSatisfiable(
            f"range={header[:80]!r}: {what} has {size} bytes; a range must start before the end",
            param="range",
            code="range_not_satisfiable",
            headers={"Content-Range": f"bytes */{size}"},
        )
    )


class StoredObjectResponse(Response):
    """A 200 or 206 response whose body is read from the store as the client takes it."""

    def __init__(self, content: StoredContent) -> None:
        super().__init__(media_type=content.media_type)
        self.content = content
        stored = content.object
        self.headers["accept-ranges"] = "bytes"
        self.headers["etag"] = stored.etag
        self.headers["last-modified"] = formatdate(stored.modified, usegmt=True)
        self.headers["content-disposition"] = f"attachment; filename*=utf-8''{quote(content.filename)}"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        size = self.content.object.size
        request = Headers(scope=scope)
        asked = requested_range(request, size, (self.headers["etag"], self.headers["last-modified"]))
        if asked == "unsatisfiable":
            refusal = range_not_satisfiable(request["range"], size, self.content.filename)
            await refusal(scope, receive, send)
            return
        start, end = asked if isinstance(asked, tuple) else (0, size)
        status = 206 if isinstance(asked, tuple) else 200
        if status == 206:
            self.headers["content-range"] = f"bytes {start}-{end - 1}/{size}"
        self.headers["content-length"] = str(end - start)
        await send({"type": "http.response.start", "status": status, "headers": self.raw_headers})
        if scope.get("method") == "HEAD":
            await send({"type": "http.response.body", "body": b""})
            return
        at = start
        while at < end:
            step = min(CHUNK_BYTES, end - at)
            chunk = await asyncio.to_thread(self.content.storage.read, self.content.key, at, at + step)
            if not chunk:
                raise RuntimeError(f"{self.content.key} ended at byte {at} of {size}")
            at += len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": at < end})
        if start == end:
            await send({"type": "http.response.body", "body": b""})
