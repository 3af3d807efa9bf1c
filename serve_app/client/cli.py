"""`storyreel`: make, follow and fetch videos from the command line, or run the service locally.

    storyreel create "A fox finds a lantern." --seconds 6 --wait --out fox.mp4
    storyreel list | get ID | cancel ID | rm ID | download ID [--variant thumbnail] [--out FILE]
    storyreel remix ID PROMPT | extend ID PROMPT --seconds S
    storyreel batch prompts.jsonl [--out DIR] [--concurrency N]   # one create body a line; rerun to resume
    storyreel serve [--profile cpu|gpu]      # `serve run -a local` in the foreground, until Ctrl-C
    storyreel demo [--out DIR]               # start the CPU profile, make a video, save it, shut down

The service is ``--base-url`` (default ``$STORYREEL_BASE_URL`` or http://127.0.0.1:8000); an API key in
``$STORYREEL_API_KEY`` is sent as ``Authorization: Bearer``. ``--json`` prints the API's JSON and nothing
else on stdout; progress and messages always go to stderr. Exit status: 0 done, 1 an API error (or a video
that ended failed or cancelled), 2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.files import VARIANT_FILES
from core.status import JobStatus, Variant
from serve_app.client.api import Api, ApiError, create_video, ensure_completed, follow_video
from serve_app.client.batch import RESULTS, run_batch
from serve_app.client.demo import DEFAULT_PROMPT, ServiceFailed, local_service, make_demo

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
BASE_URL_ENV = "STORYREEL_BASE_URL"
API_KEY_ENV = "STORYREEL_API_KEY"
PROFILES = {"cpu": "serve_config.cpu.yaml", "gpu": "serve_config.yaml"}


# Videos as people read them


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


# 1. The commands: each takes the API and its arguments and returns the exit status


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


def _batch(api: Api, args: argparse.Namespace) -> int:
    out = args.out or args.file.with_suffix("")
    # A connection of its own for each video in flight.
    results = run_batch(
        lambda: Api(api.base_url, os.environ.get(API_KEY_ENV)), args.file, out, concurrency=args.concurrency
    )
    done = sum(result.status == JobStatus.COMPLETED for result in results)
    print(f"{done} of {len(results)} lines completed; results in {out / RESULTS}", file=sys.stderr)
    return 0 if done == len(results) else 1


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
    body = {"prompt": args.prompt, "seconds": args.seconds, "size": args.size}
    video, saved = make_demo(api, profile_config(args.profile), args.out, body, args.startup_timeout)
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


# 2. Arguments


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


def _positive(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return number


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

    batch = command("batch", _batch, "many videos from a JSON Lines file, one create body a line (resumable)")
    batch.add_argument("file", type=_existing_file, help="the JSON Lines file")
    batch.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="where the videos and results.jsonl go (default FILE without .jsonl)",
    )
    batch.add_argument(
        "--concurrency", type=_positive, default=4, metavar="N", help="videos in flight at once (default 4)"
    )

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
