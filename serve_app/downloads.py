"""The content route over an object store: the object streamed through the ingress, with HTTP ranges.

Local files go out through Starlette's FileResponse; this is its counterpart for a kept object, read a
chunk at a time so a long video never sits whole in the ingress's memory. One range per request (a
player's seek, a resumed download); a request for several, or a malformed one, gets the whole object,
as RFC 9110 allows.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any
from urllib.parse import quote

from starlette.datastructures import Headers
from starlette.responses import Response

from core.storage import Storage, StoredObject

CHUNK_BYTES = 1 << 20
# At most 18 digits a side: a longer number is no object's size, and int() of thousands of digits raises.
RANGE = re.compile(r"bytes=(\d{0,18})-(\d{0,18})")


@dataclass
class StoredContent:
    """A finished video's file in an object store, found (its size and entity tag read) before any header."""

    storage: Storage
    key: str
    object: StoredObject
    media_type: str
    filename: str


def byte_range(header: str | None, size: int) -> tuple[int, int] | None | str:
    """The ``(start, end)`` (end exclusive) a Range header asks of ``size`` bytes.

    None: serve the whole object (no header, several ranges, a malformed one). "unsatisfiable": a range
    that starts past the end (416).
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
        return max(0, size - suffix), size
    start = int(first)
    end = min(size, int(last) + 1) if last else size
    if last and int(last) < start:
        return None
    if start >= size:
        return "unsatisfiable"
    return start, end


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
        asked = byte_range(request.get("range"), size)
        if_range = request.get("if-range")
        if if_range is not None and if_range != self.content.object.etag:
            asked = None  # the client's copy is of another version: it gets the whole object
        if asked == "unsatisfiable":
            self.status_code = 416
            self.headers["content-range"] = f"bytes */{size}"
            self.headers["content-length"] = "0"
            await send({"type": "http.response.start", "status": 416, "headers": self.raw_headers})
            await send({"type": "http.response.body", "body": b""})
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
