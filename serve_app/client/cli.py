"""`storyreel`: make, follow and fetch videos from the command line, or run the service locally.

    storyreel create "A fox finds a lantern." --seconds 6 --wait --out fox.mp4
    storyreel list | get ID | cancel ID | rm ID | download ID [--variant thumbnail] [--out FILE]
    storyreel remix ID PROMPT | extend ID PROMPT --seconds S
    storyreel serve [--profile cpu|gpu]      # `serve run -a local` in the foreground, until Ctrl-C
    storyreel demo [--out DIR]               # start the CPU profile, make a video, save it, shut down

The service is ``--base-url`` (default ``$STORYREEL_BASE_URL`` or http://127.0.0.1:8000); an API key in
``$STORYREEL_API_KEY`` is sent as ``Authorization: Bearer``. ``--json`` prints the API's JSON and nothing
else on stdout; progress and messages always go to stderr. Exit status: 0 done, 1 an API error (or a video
that ended failed or cancelled), 2 a usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import mimetypes
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from core.files import VARIANT_FILES
from core.status import TERMINAL, JobStatus, Variant
from serve_app.client.demo import DEFAULT_PROMPT, ServiceFailed, local_service

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
BASE_URL_ENV = "STORYREEL_BASE_URL"
API_KEY_ENV = "STORYREEL_API_KEY"
PROFILES = {"cpu": "serve_config.cpu.yaml", "gpu": "serve_config.yaml"}
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


# 1. Talking to the API


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


# 2. Making and following videos (the `create`, `remix`, `extend` and `demo` commands share these)


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


def summary(video: dict[str, Any]) -> str:
    """A video in a few lines: title, length, size, then each scene with its length, what made it and who
    spoke it, then its notices (where it differs from what was asked)."""
    lines = [
        f"{video['title'] or 'Video'} ({seconds(video['seconds'])}, {video['size']}, "
        f"{len(video['scenes'])} scenes):"
    ]
    for scene in video["scenes"]:
        spoken = scene.get("narration")
        voice = f"{spoken['narrator']}:{spoken['voice']}" if spoken and not spoken.get("silent") else "silent"
        lines.append(
            f"  scene {scene['index']}: {scene['generator'] or '-':<8} {voice:<14} "
            f"{seconds(scene['duration_s']):>6}  {scene['caption']}"
        )
    lines += [f"  notice: {notice['message']} ({notice['code']})" for notice in video.get("notices", [])]
    return "\n".join(lines)


def seconds(value: str | float) -> str:
    """A length as people read it: "2.6 s", not "2.648208616780045 s"."""
    try:
        return f"{round(float(value), 1):g} s"
    except (TypeError, ValueError):
        return f"{value} s"


# 3. The commands: each takes the API and its arguments and returns the exit status


def _create(api: Api, args: argparse.Namespace) -> int:
    body = {"prompt": args.prompt, "seconds": args.seconds, "size": args.size, "style": args.style}
    body["scenes"] = args.scenes_file
    if args.no_narration:
        body["narration"] = False
    elif args.voice:
        body["narration"] = {"voice": args.voice}
    if args.burn_subtitles:
        body["burn_subtitles"] = True
    music_file = Path(args.music) if args.music and Path(args.music).is_file() else None
    body["music"] = None if music_file else args.music
    return _finish(api, args, create_video(api, body, args.reference, music_file))


def _remix(api: Api, args: argparse.Namespace) -> int:
    return _finish(api, args, api.call("POST", f"/v1/videos/{args.id}/remix", json={"prompt": args.prompt}))


def _extend(api: Api, args: argparse.Namespace) -> int:
    body = {"video": {"id": args.id}, "prompt": args.prompt, "seconds": args.seconds}
    return _finish(api, args, api.call("POST", "/v1/videos/extensions", json=body))


def _finish(api: Api, args: argparse.Namespace, video: dict[str, Any]) -> int:
    """After a create, remix or extension: print the id, or with --wait follow it and save it to --out."""
    if not args.wait:
        _print(args, video, video["id"])
        return 0
    print(f"{video['id']} {video['status']}", file=sys.stderr)
    try:
        video = follow_video(api, video)
    except KeyboardInterrupt:
        print(
            f"storyreel: stopped following {video['id']}, which goes on (`storyreel get ID`)", file=sys.stderr
        )
        return 130
    if video["status"] != JobStatus.COMPLETED and args.json:
        _print(args, video, "")
    ensure_completed(video)
    if args.out:
        api.download(video["id"], Variant.VIDEO, args.out)
        print(f"Wrote {args.out}", file=sys.stderr)
    _print(args, video, summary(video))
    return 0


def _list(api: Api, args: argparse.Namespace) -> int:
    page = api.call("GET", "/v1/videos", params={"limit": args.limit} if args.limit else None)
    rows = [
        f"{video['id']}  {video['status']:<11} {video['progress']:>3}%  {seconds(video['seconds']):>6}  "
        f"{video['size']:<9}  {video['prompt'][:60]}"
        for video in page["data"]
    ]
    _print(args, page, "\n".join(rows) if rows else "no videos")
    return 0


def _get(api: Api, args: argparse.Namespace) -> int:
    video = api.call("GET", f"/v1/videos/{args.id}")
    error = f"\nerror: {video['error']['message']}" if video.get("error") else ""
    _print(args, video, f"{video['id']} {video['status']} {video['progress']}%{error}\n{summary(video)}")
    return 0


def _cancel(api: Api, args: argparse.Namespace) -> int:
    video = api.call("POST", f"/v1/videos/{args.id}/cancel")
    _print(args, video, f"{video['id']} {video['status']}")
    return 0


def _rm(api: Api, args: argparse.Namespace) -> int:
    deleted = api.call("DELETE", f"/v1/videos/{args.id}")
    _print(args, deleted, f"deleted {deleted['id']}")
    return 0


def _download(api: Api, args: argparse.Namespace) -> int:
    target = args.out or Path(f"{args.id}{VARIANT_FILES[Variant(args.variant)].suffix}")
    api.download(args.id, args.variant, target)
    print(f"Wrote {target}", file=sys.stderr)
    return 0


def _serve(api: Api, args: argparse.Namespace) -> int:
    """`serve run -a local` in the foreground; Ctrl-C (or SIGTERM) stops it and every Ray process it started."""
    signal.signal(signal.SIGTERM, _interrupt)
    with local_service(profile_config(args.profile), api.base_url, startup_timeout_s=None) as server:
        print(f"Serving {api.base_url} (docs at {api.base_url}/docs); Ctrl-C stops it.", file=sys.stderr)
        try:
            return server.wait()
        except KeyboardInterrupt:
            return 0


def _demo(api: Api, args: argparse.Namespace) -> int:
    """`make demo`: start the CPU profile, make one video through `create`'s functions, save it, shut down."""
    log = args.out.with_name(f"{args.out.name}-serve.log")
    with local_service(profile_config(args.profile), api.base_url, log, args.startup_timeout):
        video = create_video(api, {"prompt": args.prompt, "seconds": args.seconds, "size": args.size})
        video = follow_video(api, video)
        ensure_completed(video)
        saved = [args.out / file.filename for file in VARIANT_FILES.values()]
        for variant, path in zip(VARIANT_FILES, saved, strict=True):
            api.download(video["id"], variant, path)
    _print(args, video, f"\n{summary(video)}\n\nWrote {', '.join(str(path) for path in saved)}")
    return 0


def _print(args: argparse.Namespace, data: Any, text: str) -> None:
    """The API's JSON with --json, else the text for people."""
    print(json.dumps(data) if args.json else text)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def profile_config(profile: str) -> Path:
    """The Serve config of a profile: in the working directory, else in the checkout this package runs from."""
    name = PROFILES[profile]
    for folder in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (folder / name).is_file():
            return folder / name
    raise ApiError(f"no {name} in {Path.cwd()}: run `storyreel serve` from the storyreel checkout")


# 4. Arguments


def read_scenes(path: str) -> list[dict[str, Any]]:
    """A scenes file: a JSON list of scenes (objects, or captions as strings), or text with one caption a line.

    Raises:
        argparse.ArgumentTypeError: the file cannot be read, or its JSON is not a list.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {error}") from None
    if not text.lstrip().startswith("["):
        return [{"caption": line.strip()} for line in text.splitlines() if line.strip()]
    try:
        scenes = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"{path} is not valid JSON: {error}") from None
    return [{"caption": scene} if isinstance(scene, str) else scene for scene in scenes]


def _existing_file(path: str) -> Path:
    if not Path(path).is_file():
        raise argparse.ArgumentTypeError(f"no file {path}")
    return Path(path)


def build_parser() -> argparse.ArgumentParser:
    """The `storyreel` parser; each subcommand's function is its ``command`` default."""
    parser = argparse.ArgumentParser(
        prog="storyreel",
        description="Make, follow and fetch videos from the command line, or run the service locally.",
        epilog=f"environment: {BASE_URL_ENV} (the default --base-url), {API_KEY_ENV} (sent as a Bearer key)",
    )
    _global_options(parser, defaults=True)
    # The same options after the subcommand (`storyreel list --json`); unset there, the ones above hold.
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, defaults=False)
    commands = parser.add_subparsers(dest="command_name", required=True, metavar="COMMAND")

    def command(
        name: str, function: Callable[[Api, argparse.Namespace], int], help: str
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[common], help=help, description=help)
        sub.set_defaults(command=function)
        return sub

    create = command("create", _create, "make a video from a story idea")
    create.add_argument("prompt", help="the story idea")
    create.add_argument("--seconds", help="length in seconds (default the service's)")
    create.add_argument("--size", help="WIDTHxHEIGHT, e.g. 1280x720 (default the service's)")
    create.add_argument("--style", help="style terms added to every keyframe prompt")
    create.add_argument(
        "--scenes-file",
        type=read_scenes,
        metavar="FILE",
        help="explicit scenes: a JSON list, or one caption a line",
    )
    create.add_argument(
        "--reference", type=_existing_file, metavar="IMAGE", help="the first scene's keyframe"
    )
    create.add_argument("--no-narration", action="store_true", help="a silent video")
    create.add_argument("--voice", help="an eSpeak NG voice, e.g. en-GB-x-rp or cmn (default by language)")
    create.add_argument(
        "--music", metavar="NAME|FILE", help="a music bed: a track of the service's folder, or an audio file"
    )
    create.add_argument("--burn-subtitles", action="store_true", help="draw the captions into the picture")
    _follow_options(create)

    remix = command("remix", _remix, "a new video with a completed one's settings and a new prompt")
    remix.add_argument("id", help="the completed video")
    remix.add_argument("prompt", help="the new story idea")
    _follow_options(remix)

    extend = command("extend", _extend, "a completed video, then new scenes written from PROMPT")
    extend.add_argument("id", help="the completed video")
    extend.add_argument("prompt", help="what happens next")
    extend.add_argument("--seconds", required=True, help="how much longer")
    _follow_options(extend)

    listing = command("list", _list, "the newest videos")
    listing.add_argument("--limit", type=int, help="at most this many (default the service's page size)")
    for name, function, help in [
        ("get", _get, "a video and its scenes"),
        ("cancel", _cancel, "stop a video"),
        ("rm", _rm, "stop a video and remove it with every file"),
    ]:
        command(name, function, help).add_argument("id", help="the video")

    download = command("download", _download, "save a finished video's file")
    download.add_argument("id", help="the video")
    download.add_argument(
        "--variant", choices=[str(v) for v in Variant], default=Variant.VIDEO, help="default video"
    )
    download.add_argument("--out", type=Path, metavar="FILE", help="where to (default ID.mp4, .jpg or .vtt)")

    serve = command("serve", _serve, "run the service here: `serve run -a local` until Ctrl-C")
    serve.add_argument("--profile", choices=list(PROFILES), default="cpu", help=_profile_help())

    demo = command("demo", _demo, "start the CPU profile, make a video, save its files, shut down")
    demo.add_argument("--out", type=Path, default=Path("out/demo"), metavar="DIR", help="default out/demo")
    demo.add_argument("--prompt", default=DEFAULT_PROMPT, help="the story idea")
    demo.add_argument("--seconds", default="10", help="default 10: time to say the default prompt")
    demo.add_argument("--size", default="1280x720", help="default 1280x720")
    demo.add_argument("--profile", choices=list(PROFILES), default="cpu", help=_profile_help())
    demo.add_argument("--startup-timeout", type=float, default=300, help="seconds to wait for the service")
    return parser


def _global_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    parser.add_argument(
        "--base-url",
        default=(os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL) if defaults else argparse.SUPPRESS,
        help=f"the service (default ${BASE_URL_ENV} or {DEFAULT_BASE_URL})",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=False if defaults else argparse.SUPPRESS,
        help="print the API's JSON only (progress and messages go to stderr)",
    )


def _follow_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wait", action="store_true", help="follow it to the end with progress bars")
    parser.add_argument("--out", type=Path, metavar="FILE", help="with --wait: save the MP4 here")


def _profile_help() -> str:
    return ", ".join(f"{profile}: {name}" for profile, name in PROFILES.items()) + " (default cpu)"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse a command line; exits with status 2 (argparse's) on a usage error."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "out", None) and hasattr(args, "wait") and not args.wait:
        parser.error("--out needs --wait")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run one `storyreel` command line (default ``sys.argv[1:]``); returns the exit status."""
    try:
        args = parse_args(argv)
    except SystemExit as exit:  # --help (0) or a usage error (2)
        return exit.code if isinstance(exit.code, int) else 2
    api = Api(args.base_url, os.environ.get(API_KEY_ENV))
    try:
        return int(args.command(api, args))
    except (ApiError, ServiceFailed) as error:
        print(f"storyreel: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("storyreel: interrupted", file=sys.stderr)
        return 130
    finally:
        api.client.close()


if __name__ == "__main__":
    raise SystemExit(main())
