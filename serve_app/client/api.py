"""The Videos API's client over HTTP, for the `storyreel` command and the demo.

``Api`` sends requests and turns every failure into an ``ApiError`` carrying the API's own message;
``parse_events`` reads a server-sent event stream; ``create_video``, ``follow_video`` and ``ensure_completed``
make a video, follow it to its end (with progress bars on stderr) and check how it ended.
"""

from __future__ import annotations

import contextlib
import json
import mimetypes
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from core.status import TERMINAL, JobStatus

# Pause before following an event stream again that ended before its video did (the server says 2 s).
RECONNECT_S = 1.0
# An event stream sends a keep-alive every 15 s of quiet: a read this long without one is a dead connection.
STREAM_READ_TIMEOUT_S = 60.0
# Progress is a percentage already, so no rate: " scene 0  40%|████      | 00:03, animating".
BAR_FORMAT = "{desc} {n:3.0f}%|{bar}| {elapsed}{postfix}"


class ApiError(Exception):
    """What to tell the user after a refused request, an unreachable service or a video that did not finish."""


@dataclass
class ServerEvent:
    """One server-sent event: its ``event`` name (``message`` when none is given) and its ``data``."""

    event: str
    data: str


class Api:
    """The Videos API over HTTP: every failure comes out as an ApiError with the API's own message.

    Args:
        base_url: the service, e.g. ``http://127.0.0.1:8000`` (the routes start with ``/v1``).
        api_key: sent as ``Authorization: Bearer``; default None, no header.
        timeout_s: seconds for each request (an event stream's reads wait longer).
        transport: httpx's transport; default None, the network (a test passes an ``httpx.MockTransport``).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout_s: float = 60,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout_s, transport=transport
        )

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request and return its JSON answer."""
        with self._unreachable_as_error():
            response = self.client.request(method, path, **kwargs)
        _raise_for_error(response)
        return response.json()

    def events(self, video_id: str) -> Iterator[dict[str, Any]]:
        """The video objects of one connection to the video's event stream, until the server ends it.

        A connection that drops mid-stream just ends the iteration (``follow_video`` connects again);
        an ``error`` event (the video was deleted) raises ApiError.
        """
        timeout = httpx.Timeout(self.client.timeout.connect, read=STREAM_READ_TIMEOUT_S)
        with (
            self._unreachable_as_error(),
            self.client.stream("GET", f"/v1/videos/{video_id}/events", timeout=timeout) as response,
        ):
            if response.is_error:
                response.read()
                _raise_for_error(response)
            try:
                for event in parse_events(response.iter_lines()):
                    if event.event == "video":
                        yield json.loads(event.data)
                    elif event.event == "error":
                        raise ApiError(_message(json.loads(event.data)))
            except (httpx.ReadError, httpx.ReadTimeout, httpx.RemoteProtocolError):
                return

    def download(self, video_id: str, variant: str, target: Path) -> None:
        """Save a finished video's ``variant`` to ``target``; nothing is left there if it fails midway."""
        partial = target.with_name(target.name + ".part")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with (
                self._unreachable_as_error(),
                self.client.stream(
                    "GET", f"/v1/videos/{video_id}/content", params={"variant": variant}
                ) as response,
            ):
                if response.is_error:
                    response.read()
                    _raise_for_error(response)
                with partial.open("wb") as file:
                    for chunk in response.iter_bytes():
                        file.write(chunk)
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _unreachable_as_error(self) -> Iterator[None]:
        try:
            yield
        except (httpx.ConnectError, httpx.ConnectTimeout) as error:
            raise ApiError(f"could not reach {self.base_url} ({error}); is the service running?") from None
        except httpx.TransportError as error:
            raise ApiError(f"lost the connection to {self.base_url} ({error!r})") from None


def _raise_for_error(response: httpx.Response) -> None:
    if not response.is_error:
        return
    try:
        body = response.json()
    except ValueError:  # not the API's envelope: a proxy, or not this service at all
        raise ApiError(f"HTTP {response.status_code} from {response.url}: {response.text[:200]}") from None
    raise ApiError(_message(body))


def _message(body: Any) -> str:
    """The API's ``error.message`` with its ``code``, e.g. ``no video 'video_...' (video_not_found)``."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or "message" not in error:
        return f"unexpected answer: {json.dumps(body)[:200]}"
    return f"{error['message']} ({error['code']})" if error.get("code") else str(error["message"])


def parse_events(lines: Iterable[str]) -> Iterator[ServerEvent]:
    """Server-sent events from a stream's lines: ``event:`` and ``data:`` fields, dispatched at a blank line.

    Comments (``: keep-alive``) and other fields (``retry:``, ``id:``) are skipped; several ``data:`` lines
    join with newlines; a block without data dispatches nothing, and neither does one cut off by the end.
    """
    event, data = "", list[str]()
    for line in lines:
        if not line:
            if data:
                yield ServerEvent(event or "message", "\n".join(data))
            event, data = "", []
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)


# Making and following videos: the `create`, `remix`, `extend` and `demo` commands share these.


def create_video(
    api: Api, body: dict[str, Any], reference: Path | None = None, music: Path | None = None
) -> dict[str, Any]:
    """POST /v1/videos: JSON, or a multipart form when there are files to upload.

    Args:
        api: the service.
        body: the create fields (``prompt``, ``seconds``, ``size``, ``scenes``, ...); None values are left out.
        reference: an image file sent as ``input_reference`` (the first scene's keyframe); default None.
        music: an audio file sent as ``music`` (the music bed); default None.
    """
    fields = {key: value for key, value in body.items() if value is not None}
    uploads = {name: path for name, path in (("input_reference", reference), ("music", music)) if path}
    if not uploads:
        return api.call("POST", "/v1/videos", json=fields)
    form = {key: value if isinstance(value, str) else json.dumps(value) for key, value in fields.items()}
    files = {
        name: (path.name, path.read_bytes(), mimetypes.guess_type(path.name)[0] or "application/octet-stream")
        for name, path in uploads.items()
    }
    return api.call("POST", "/v1/videos", data=form, files=files)


def follow_video(api: Api, video: dict[str, Any], progress: bool = True) -> dict[str, Any]:
    """Follow a video's event stream until it reaches a final status; return that last video object.

    A stream that ends before the video does (the server's ``event_stream_max_seconds``, a dropped
    connection) is opened again. With ``progress``, bars on stderr show the video and each scene.
    """
    bars = ProgressBars() if progress else None
    try:
        while True:
            if bars:
                bars.show(video)
            if video["status"] in TERMINAL:
                return video
            for update in api.events(video["id"]):
                video = update
                if bars:
                    bars.show(video)
            if video["status"] not in TERMINAL:  # the stream ended early: connect again
                time.sleep(RECONNECT_S)
    finally:
        if bars:
            bars.close()


def ensure_completed(video: dict[str, Any]) -> None:
    """Raise ApiError, with the video's error message, unless it is completed."""
    if video["status"] == JobStatus.COMPLETED:
        return
    error = video.get("error") or {}
    reason = f": {error['message']} ({error.get('code')})" if error.get("message") else ""
    raise ApiError(f"video {video['id']} {video['status']}{reason}")


class ProgressBars:
    """tqdm bars on stderr: the whole video first, then one per scene as the scenes become known."""

    def __init__(self) -> None:
        self.video = self._bar("video", position=0)
        self.scenes: list[tqdm] = []

    def show(self, video: dict[str, Any]) -> None:
        """Bring every bar up to ``video``'s progress and status."""
        self._set(self.video, video["progress"], video["status"])
        for scene in video.get("scenes", []):
            while len(self.scenes) <= scene["index"]:
                self.scenes.append(self._bar(f"scene {len(self.scenes)}", position=len(self.scenes) + 1))
            self._set(self.scenes[scene["index"]], scene["progress"], scene["status"])

    def close(self) -> None:
        for bar in [self.video, *self.scenes]:
            bar.close()

    @staticmethod
    def _bar(name: str, position: int) -> tqdm:
        return tqdm(
            total=100,
            desc=f"{name:>8}",
            bar_format=BAR_FORMAT,
            position=position,
            file=sys.stderr,
            leave=True,
        )

    @staticmethod
    def _set(bar: tqdm, progress: int, status: str) -> None:
        bar.n = progress
        bar.set_postfix_str(status, refresh=False)
        bar.refresh()
