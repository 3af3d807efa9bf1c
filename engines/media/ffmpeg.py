"""Running ffmpeg: finding the binary, streaming frames through pipes, surfacing its own errors, and keeping
every run bounded and stoppable.

Each ffmpeg runs in a process group of its own with a time limit; past it the whole group is killed
(SIGKILL), so an input that makes ffmpeg loop for ever (``-stream_loop -1`` over a file without samples)
costs a failed job, not a core held for ever. Work that may be cancelled (a job's encodes and its stitch)
runs under a ``ProcessScope``: ``to_thread_in_scope`` stops the scope when the awaiting task is cancelled,
which kills the ffmpeg it runs at once and refuses any it would start after, so a stitch of several steps
stops at the step it is in.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, ParamSpec, TypeVar

from core.errors import InvalidInput, MediaError, ProcessStopped

# ffmpeg may only open local files and its own pipes: no URLs, even if a path string were to carry one.
INPUT_PROTOCOLS = ["-protocol_whitelist", "file,pipe"]

P = ParamSpec("P")
T = TypeVar("T")


@functools.lru_cache(maxsize=4)
def ffmpeg_exe(preferred: str | None = None) -> str:
    """The ffmpeg binary: ``preferred`` if given, else the one imageio-ffmpeg ships, else the system's."""
    if preferred:
        if not Path(preferred).is_file():
            raise InvalidInput("ffmpeg_path", preferred, "no such file")
        return preferred
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        system = shutil.which("ffmpeg")
        if system is None:
            raise MediaError("ffmpeg not found: install imageio-ffmpeg or put ffmpeg on PATH") from None
        return system


class ProcessScope:
    """The ffmpeg processes of one piece of work (a scene's encode, a job's stitch), stopped together.

    ``call`` runs a function with this scope current (in its thread); every ``run`` and ``stream`` under it
    registers its process here. ``stop`` kills them all and makes every later start under the scope raise
    ``ProcessStopped`` at once. Thread-safe: the work runs in a worker thread, ``stop`` comes from the event
    loop.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen[bytes]] = set()
        self._stopped = False

    @property
    def stopped(self) -> bool:
        return self._stopped

    def call(self, func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``func(*args, **kwargs)``, with this scope current for every ffmpeg it starts."""
        token = _SCOPE.set(self)
        try:
            return func(*args, **kwargs)
        finally:
            _SCOPE.reset(token)

    def stop(self) -> None:
        """Kill every process running under this scope (their groups, at once) and refuse any later start."""
        with self._lock:
            self._stopped = True
            running = list(self._running)
        for process in running:
            _kill_group(process)

    def _add(self, process: subprocess.Popen[bytes]) -> bool:
        """Hold ``process``; False (and it is not held) when the scope was stopped meanwhile."""
        with self._lock:
            if self._stopped:
                return False
            self._running.add(process)
            return True

    def _discard(self, process: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._running.discard(process)


# The scope of the work this thread does; asyncio.to_thread carries it into the worker thread.
_SCOPE: contextvars.ContextVar[ProcessScope | None] = contextvars.ContextVar("ffmpeg_scope", default=None)


async def to_thread_in_scope(func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """``asyncio.to_thread(func, ...)``, every ffmpeg it starts under a new ``ProcessScope``.

    A cancel of the awaiting task cannot stop a thread, so it stops the scope instead: the ffmpeg running is
    killed at once and the next one refuses to start, and the thread ends soon after with ``ProcessStopped``
    (which nobody awaits any more). The cancel goes on up as it came.
    """
    scope = ProcessScope()
    try:
        return await asyncio.to_thread(scope.call, func, *args, **kwargs)
    except asyncio.CancelledError:
        scope.stop()
        raise


def run(args: list[str], *, timeout_s: float, stdin: bytes | None = None, ffmpeg: str | None = None) -> bytes:
    """Run ffmpeg with ``args``, feeding it ``stdin`` if given, and return what it wrote to stdout.

    Args:
        args: ffmpeg's arguments after the common ones (``-hide_banner -v error -y``).
        timeout_s: how long it may run; past it its process group is killed. Callers size it to the media
            it reads and writes (``VideoProcessingConfig.ffmpeg_timeout_s``).
        stdin: bytes to feed it; default none (its stdin is closed).
        ffmpeg: the binary; default ``ffmpeg_exe()``'s.

    Raises:
        MediaError: ffmpeg failed, or ran past ``timeout_s``; its own error text is in the message.
        ProcessStopped: the current ``ProcessScope`` was stopped (before or while it ran).
    """
    with _Child(args, ffmpeg, timeout_s, reads_stdin=stdin is not None, stdout=subprocess.PIPE) as child:
        out, err = child.process.communicate(stdin)
    child.check(err)
    return out


def stream(args: list[str], chunks: Iterable[bytes], *, timeout_s: float, ffmpeg: str | None = None) -> None:
    """Run ffmpeg with ``args``, writing ``chunks`` to its stdin one by one (its output goes to a file).

    Frames are streamed rather than joined first, so a long clip never needs a second copy in memory.
    ``timeout_s`` and ``ffmpeg`` as for ``run``.

    Raises:
        MediaError: ffmpeg failed, or ran past ``timeout_s``; its own error text is in the message.
        ProcessStopped: the current ``ProcessScope`` was stopped (before or while it ran).
    """
    # stderr goes to a file so a chatty ffmpeg can never block on a full pipe while we write.
    with tempfile.TemporaryFile() as err:
        with _Child(args, ffmpeg, timeout_s, reads_stdin=True, stderr=err) as child:
            pipe = child.process.stdin
            assert pipe is not None
            try:
                for chunk in chunks:
                    pipe.write(chunk)
            except BrokenPipeError:
                pass  # ffmpeg exited early (or was killed); check() says why
            finally:
                with contextlib.suppress(BrokenPipeError):
                    pipe.close()
            child.process.wait()
        err.seek(0)
        child.check(err.read())


class _Child:
    """One ffmpeg process: in a session (so a process group) of its own, in the current scope, with a timer
    that kills its group at ``timeout_s``. Leaving the ``with`` block never leaves it running."""

    def __init__(
        self,
        args: list[str],
        ffmpeg: str | None,
        timeout_s: float,
        reads_stdin: bool,
        stdout: int = subprocess.DEVNULL,
        stderr: int | IO[bytes] = subprocess.PIPE,
    ) -> None:
        if not timeout_s > 0:
            raise InvalidInput("timeout_s", timeout_s, "must be greater than 0")
        self.args = args
        self.timeout_s = timeout_s
        self.scope = _SCOPE.get()
        self.timed_out = False
        self._refuse_if_stopped()
        self.process = subprocess.Popen(
            _command(args, ffmpeg, reads_stdin),
            stdin=subprocess.PIPE if reads_stdin else subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
        if self.scope is not None and not self.scope._add(self.process):
            _kill_group(self.process)  # stopped between the check above and the start
        self._timer = threading.Timer(timeout_s, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def __enter__(self) -> _Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        if self.process.poll() is None:
            _kill_group(self.process)  # our side failed while it ran: it must not outlive the call
        # An exception may have left the pipes open: ours to close, then the process to reap.
        for pipe in (self.process.stdin, self.process.stdout, self.process.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        if self.scope is not None:
            self.scope._discard(self.process)

    def check(self, stderr: bytes) -> None:
        """Raise for a run that did not end well: stopped, too long, or ffmpeg's own failure."""
        self._refuse_if_stopped()
        if self.timed_out:
            raise MediaError(
                f"ffmpeg ran past its time limit of {self.timeout_s:.0f} s and was stopped",
                " ".join(self.args),
            )
        if self.process.returncode != 0:
            text = stderr.decode("utf-8", "replace").strip()[-2000:]
            raise MediaError(
                f"ffmpeg exited with status {self.process.returncode}", text or " ".join(self.args)
            )

    def _refuse_if_stopped(self) -> None:
        if self.scope is not None and self.scope.stopped:
            raise ProcessStopped("the work was stopped (its job was cancelled or deleted)")

    def _expire(self) -> None:
        self.timed_out = True
        _kill_group(self.process)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process's group (it leads one: ``start_new_session``), whatever it started included."""
    if process.returncode is not None:
        return  # reaped: its id may belong to another process by now
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def _command(args: list[str], ffmpeg: str | None, reads_stdin: bool) -> list[str]:
    return [
        ffmpeg_exe(ffmpeg),
        "-hide_banner",
        "-v",
        "error",
        "-y",
        *([] if reads_stdin else ["-nostdin"]),
        *args,
    ]
