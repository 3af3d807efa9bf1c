"""Running ffmpeg: finding the binary, streaming frames through pipes, and surfacing its own errors."""

from __future__ import annotations

import contextlib
import functools
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

from core.errors import InvalidInput, MediaError

# ffmpeg may only open local files and its own pipes: no URLs, even if a path string were to carry one.
INPUT_PROTOCOLS = ["-protocol_whitelist", "file,pipe"]


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


def run(
    args: list[str], stdin: bytes | None = None, ffmpeg: str | None = None, timeout_s: float | None = None
) -> bytes:
    """Run ffmpeg with ``args``, feeding it ``stdin`` if given, and return what it wrote to stdout.

    Raises:
        MediaError: ffmpeg failed, or ran past ``timeout_s`` (then it is killed); its own error text is in
            the message.
    """
    cmd = _command(args, ffmpeg, reads_stdin=stdin is not None)
    try:
        proc = subprocess.run(
            cmd,
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            check=False,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        raise MediaError(f"ffmpeg ran past {timeout_s} s and was stopped", " ".join(args)) from None
    _check(proc.returncode, proc.stderr, args)
    return proc.stdout


def stream(args: list[str], chunks: Iterable[bytes], ffmpeg: str | None = None) -> None:
    """Run ffmpeg with ``args``, writing ``chunks`` to its stdin one by one (its output goes to a file).

    Frames are streamed rather than joined first, so a long clip never needs a second copy in memory.

    Raises:
        MediaError: ffmpeg failed; its own error text is in the message.
    """
    # stderr goes to a file so a chatty ffmpeg can never block on a full pipe while we write.
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            _command(args, ffmpeg, reads_stdin=True),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        assert proc.stdin is not None
        try:
            for chunk in chunks:
                proc.stdin.write(chunk)
        except BrokenPipeError:
            pass  # ffmpeg exited early; its stderr, checked below, says why
        finally:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
        proc.wait()
        err.seek(0)
        _check(proc.returncode, err.read(), args)


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


def _check(returncode: int, stderr: bytes, args: list[str]) -> None:
    if returncode != 0:
        text = stderr.decode("utf-8", "replace").strip()[-2000:]
        raise MediaError(f"ffmpeg exited with status {returncode}", text or " ".join(args))
