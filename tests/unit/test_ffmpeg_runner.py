"""Every ffmpeg run is bounded and stoppable: a time limit kills its whole process group, a stopped scope kills
its runs at once and refuses new ones, and a cancelled task stops the ffmpeg of the thread it awaited. Its inputs
are local files only: a URL given as a path opens no connection."""

from __future__ import annotations

import asyncio
import socketserver
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.errors import InvalidInput, MediaError, ProcessStopped
from engines.media import VideoProcessingConfig, audio, ffmpeg
from tests.fixtures.media import pids_running, seconds_until_gone, wait_for_process

pytestmark = pytest.mark.unit


@pytest.fixture
def marker() -> str:
    """A word only this test's processes carry on their command line."""
    return f"storyreel-test-{uuid.uuid4().hex}"


def endless(marker: str) -> list[str]:
    """ffmpeg arguments that never end: a tone made in real time (so it costs next to no CPU) to nowhere."""
    return [
        "-re",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440",
        "-metadata",
        f"title={marker}",
        "-f",
        "null",
        "-",
    ]


@pytest.fixture
def forking_ffmpeg(tmp_path: Path, marker: str) -> Path:
    """An "ffmpeg" that starts a child of its own, as a filter or a helper may, and waits: killing only the
    process the runner started would leave the child, holding the output pipes open."""
    script = tmp_path / "ffmpeg"
    # The child's $0 is the marker; it writes a file once it runs, so a test knows it did.
    child = f"sh -c 'touch {tmp_path}/child-started; sleep 20; true' {marker}-child &"
    script.write_text(f"#!/bin/sh\n{child}\nsleep 20\n")
    script.chmod(0o755)
    return script


@pytest.mark.slow
def test_a_run_past_its_time_limit_is_killed_with_everything_it_started(forking_ffmpeg, marker):
    started = time.monotonic()
    with pytest.raises(MediaError, match="ran past"):
        ffmpeg.run(["-i", "x"], timeout_s=1, ffmpeg=str(forking_ffmpeg))
    assert time.monotonic() - started < 3
    assert (forking_ffmpeg.parent / "child-started").exists()
    assert seconds_until_gone(f"{marker}-child", timeout_s=2) < 2  # the child went with its group


@pytest.mark.slow
def test_a_stream_past_its_time_limit_is_killed_too(forking_ffmpeg, marker):
    frames = (b"\0" * 1024 for _ in range(10))
    with pytest.raises(MediaError, match="ran past"):
        ffmpeg.stream(["-i", "pipe:0"], frames, timeout_s=1, ffmpeg=str(forking_ffmpeg))
    assert (forking_ffmpeg.parent / "child-started").exists()
    assert seconds_until_gone(f"{marker}-child", timeout_s=2) < 2


def test_stopping_a_scope_kills_its_ffmpeg_within_two_seconds(marker):
    scope = ffmpeg.ProcessScope()
    raised: list[BaseException] = []

    def work() -> None:
        try:
            scope.call(ffmpeg.run, endless(marker), timeout_s=120)
        except BaseException as exc:  # noqa: BLE001 - the test reads it
            raised.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    wait_for_process(marker, timeout_s=20)
    stopped_at = time.monotonic()
    scope.stop()
    thread.join(timeout=2)
    assert not thread.is_alive() and time.monotonic() - stopped_at < 2
    assert isinstance(raised[0], ProcessStopped)  # a cancel, not an ffmpeg failure
    assert not isinstance(raised[0], MediaError)
    assert pids_running(marker) == []


def test_nothing_starts_under_a_stopped_scope(tmp_path):
    started = tmp_path / "started"
    script = tmp_path / "ffmpeg"
    script.write_text(f"#!/bin/sh\ntouch {started}\n")
    script.chmod(0o755)
    scope = ffmpeg.ProcessScope()
    scope.stop()
    with pytest.raises(ProcessStopped):
        scope.call(ffmpeg.run, ["-i", "x"], timeout_s=10, ffmpeg=str(script))
    with pytest.raises(ProcessStopped):
        scope.call(ffmpeg.stream, ["-i", "pipe:0"], [b"x"], timeout_s=10, ffmpeg=str(script))
    assert not started.exists()
    # Outside the scope, the same run starts as always.
    ffmpeg.run(["-i", "x"], timeout_s=10, ffmpeg=str(script))
    assert started.exists()


def test_cancelling_the_awaiting_task_kills_the_threads_ffmpeg(marker):
    async def scenario() -> float:
        task = asyncio.create_task(ffmpeg.to_thread_in_scope(ffmpeg.run, endless(marker), timeout_s=120))
        await asyncio.to_thread(wait_for_process, marker, 20)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await asyncio.to_thread(seconds_until_gone, marker, 5)

    assert asyncio.run(scenario()) < 2


def test_the_time_limit_grows_with_the_media():
    config = VideoProcessingConfig(ffmpeg_timeout_base_s=30, ffmpeg_timeout_per_media_s=4)
    assert config.ffmpeg_timeout_s(0) == 30
    assert config.ffmpeg_timeout_s(10) == 70
    with pytest.raises(ValueError, match="ffmpeg_timeout_base_s"):
        VideoProcessingConfig(ffmpeg_timeout_base_s=0)


@dataclass
class Listener:
    """A TCP server on 127.0.0.1 that records who connects and hangs up on them at once, so an ffmpeg that
    does reach it fails fast instead of waiting for an answer."""

    url: str
    connections: list[tuple[str, int]]


@pytest.fixture
def listener() -> Iterator[Listener]:
    connections: list[tuple[str, int]] = []

    class Hangup(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            connections.append(self.client_address)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Hangup)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield Listener(f"http://127.0.0.1:{server.server_address[1]}/music.wav", connections)
    finally:
        server.shutdown()
        server.server_close()


def test_ffmpeg_refuses_an_input_that_names_a_url(listener):
    with pytest.raises(MediaError, match="not on whitelist"):
        ffmpeg.run(
            [*ffmpeg.INPUT_PROTOCOLS, "-f", "wav", "-i", listener.url, "-f", "null", "-"], timeout_s=20
        )
    assert listener.connections == []


def test_a_caller_given_a_url_for_a_path_opens_no_connection(listener):
    # check_music takes any path string and reads a file a client uploaded: the whitelist on its ffmpeg is
    # what keeps a URL there from being fetched.
    with pytest.raises(InvalidInput, match="music"):
        audio.check_music(listener.url, "wav")
    assert listener.connections == []
