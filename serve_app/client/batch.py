"""`storyreel batch`: many videos from a JSON Lines file, resumable.

Each line of the file is one create body (any field of `POST /v1/videos`). Every line is sent with an
`Idempotency-Key` made from its text (and which repeat of that text it is), so a rerun after an interruption
gets the jobs it already started back instead of starting them again; a line whose video is already in
`results.jsonl` as completed, with its file there, is skipped. A bad line is reported with its number and
the rest go on.
"""

from __future__ import annotations

import hashlib
import json
import queue
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from core.status import JobStatus, Variant
from serve_app.client.api import Api, ApiError, follow_video

RESULTS = "results.jsonl"


@dataclass
class Line:
    """One line of the batch file: its number (from 1), its body, and its idempotency key."""

    number: int
    body: dict[str, Any]
    key: str


@dataclass
class Result:
    """What became of one line: written to ``results.jsonl``, one JSON object a line, in line order."""

    line: int
    status: str  # the video's final status, `invalid` (not a JSON object) or `refused` (the create failed)
    id: str | None = None
    file: str | None = None
    error: str | None = None


def read_lines(path: Path) -> tuple[list[Line], list[Result]]:
    """The batch file's lines as create bodies, and a result for each line that is not one."""
    lines, bad = [], []
    seen: Counter[str] = Counter()
    try:
        content = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ApiError(f"cannot read {path}: {error}") from None
    for number, text in enumerate(content.splitlines(), start=1):
        if not text.strip():
            continue
        try:
            body = json.loads(text)
        except json.JSONDecodeError as error:
            bad.append(Result(number, "invalid", error=f"not JSON: {error.msg} at character {error.pos}"))
            continue
        if not isinstance(body, dict):
            bad.append(Result(number, "invalid", error="a line is one JSON object, a create body"))
            continue
        canonical = json.dumps(body, sort_keys=True, ensure_ascii=False)
        seen[canonical] += 1  # the same body twice is two videos: each repeat has its own key
        digest = hashlib.sha256(f"{seen[canonical]}:{canonical}".encode()).hexdigest()[:40]
        lines.append(Line(number, body, f"batch-{digest}"))
    return lines, bad


def run_batch(
    api_for: Callable[[], Api], path: Path, out: Path, concurrency: int = 4, progress: bool = True
) -> list[Result]:
    """Make the videos of the batch file ``path`` into ``out`` (``LINE-ID.mp4``, and ``results.jsonl``).

    Args:
        api_for: makes an ``Api`` (each worker thread gets its own connection).
        path: the JSON Lines file, one create body a line.
        out: where the videos and ``results.jsonl`` go; created if missing.
        concurrency: at most this many videos in flight at once.
        progress: one progress bar for the batch on stderr.
    """
    out.mkdir(parents=True, exist_ok=True)
    lines, results = read_lines(path)
    for result in results:
        print(f"storyreel: line {result.line}: {result.error}", file=sys.stderr)
    done = _completed(out)
    todo = [line for line in lines if line.number not in done]
    results += [done[line.number] for line in lines if line.number in done]
    log = _ResultLog(out / RESULTS, results)
    waiting: queue.Queue[Line] = queue.Queue()
    for line in todo:
        waiting.put(line)
    made: queue.Queue[Result] = queue.Queue()

    def worker() -> None:
        while True:
            try:
                line = waiting.get_nowait()
            except queue.Empty:
                return
            try:
                made.put(_make(api_for, line, out))
            except Exception as error:  # noqa: BLE001 - one line's surprise must not stall the batch
                made.put(Result(line.number, "failed", error=repr(error)))

    # Daemon threads: on Ctrl-C the command ends at once; the videos go on in the service, and a rerun
    # gets them back by their keys.
    for _ in range(min(max(1, concurrency), len(todo))):
        threading.Thread(target=worker, daemon=True).start()
    bar = tqdm(
        total=len(lines), initial=len(lines) - len(todo), desc="batch", unit="video", disable=not progress
    )
    try:
        for _ in todo:
            result = made.get()
            if result.status != JobStatus.COMPLETED:
                print(f"storyreel: line {result.line}: {result.status}: {result.error}", file=sys.stderr)
            log.add(result)
            bar.update()
    finally:
        bar.close()
    return log.results


def _make(api_for: Callable[[], Api], line: Line, out: Path) -> Result:
    """Create (or get back, by its key) one line's video, follow it, and download it when completed."""
    api = api_for()
    try:
        try:
            video = api.call("POST", "/v1/videos", json=line.body, headers={"Idempotency-Key": line.key})
        except ApiError as error:
            return Result(line.number, "refused", error=str(error))
        video = follow_video(api, video, progress=False)
        if video["status"] != JobStatus.COMPLETED:
            reason = (video.get("error") or {}).get("message")
            return Result(line.number, video["status"], video["id"], error=reason)
        target = out / f"{line.number:04d}-{video['id']}.mp4"
        api.download(video["id"], Variant.VIDEO, target)
        return Result(line.number, video["status"], video["id"], target.name)
    except ApiError as error:
        return Result(line.number, "failed", error=str(error))
    finally:
        api.client.close()


def _completed(out: Path) -> dict[int, Result]:
    """The lines an earlier run completed, whose files are still there."""
    done = {}
    for result in _read_results(out / RESULTS):
        if result.status == JobStatus.COMPLETED and result.file and (out / result.file).is_file():
            done[result.line] = result
    return done


def _read_results(path: Path) -> Iterator[Result]:
    if not path.is_file():
        return
    for text in path.read_text(encoding="utf-8").splitlines():
        try:
            yield Result(**json.loads(text))
        except (json.JSONDecodeError, TypeError):
            continue  # a line cut short by an interruption: that video is looked at again


class _ResultLog:
    """``results.jsonl`` written whole after every result: an interrupted batch leaves what it finished."""

    def __init__(self, path: Path, results: list[Result]) -> None:
        self.path = path
        self.results = results
        self._write()

    def add(self, result: Result) -> None:
        self.results.append(result)
        self._write()

    def _write(self) -> None:
        self.results.sort(key=lambda result: result.line)
        partial = self.path.with_name(self.path.name + ".part")
        partial.write_text("".join(json.dumps(asdict(r), ensure_ascii=False) + "\n" for r in self.results))
        partial.replace(self.path)
