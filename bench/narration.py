"""Narration benchmark: its share of a CPU-profile job's wall time, and our mix-and-mux against ffmpeg's CLI.

    python -m bench.narration [--rounds N] [--out PATH]
    python -m bench.narration --smoke     # one round of each: checks that it runs, measures nothing

1. narration_share  the time the narrator spends over the whole job's wall time, for in-process jobs with
                    the CPU profile's engines (eSpeak NG, title cards, real encoding), narrated in English
                    and in Mandarin.
2. mix_ratio        ``engines.media.audio.mix`` then ``mux`` (two ffmpeg runs: the M4A variant is a file of
                    its own) over one ffmpeg command line a person would type for the same result: the
                    voices at their places, the bed looped, ducked, faded, loudness-normalised, the picture
                    copied. Interleaved rounds; the median of the per-round ratios with its spread.

The figures go to bench/out/narration.json and to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.encode import synthetic_frames
from bench.pipeline import InProcessJob
from bench.timing import median, timed
from engines.media import VideoProcessingConfig, VideoProcessor, audio
from engines.media import ffmpeg as ffmpeg_runner
from engines.narrator import NarrateRequest, NarrationConfig, NarratorEngine
from engines.narrator.narrator import write_wav
from serve_app.config import AppConfig

JOBS = {
    "en": {
        "prompt": "A lighthouse keeper climbs the stairs at dusk. A whale glows under the sea. "
        "The keeper follows it. Dawn breaks over the water.",
        "num_scenes": 4,
        "seconds": 8,
        "size": "640x360",
        "seed": 3,
    },
    "cmn": {
        "prompt": "灯塔看守人在黄昏爬上楼梯。一条鲸鱼在海里发光。看守人跟着它。黎明来到海面。",
        "num_scenes": 4,
        "seconds": 8,
        "size": "640x360",
        "seed": 3,
    },
}
OUT = Path(__file__).parent / "out"
VOICES = ["The keeper climbs the stairs at dusk.", "A whale glows under the sea.", "Dawn breaks."]


def cpu_profile(storage: Path) -> AppConfig:
    """serve_config.cpu.yaml's args, stored under ``storage``."""
    from serve_app.config import load_serve_config

    config = load_serve_config(Path(__file__).parents[1] / "serve_config.cpu.yaml")
    return AppConfig.model_validate(config.model_dump() | {"storage": {"root": str(storage)}})


class TimedNarrator:
    """The in-process narrator, adding up the wall time of its calls (they overlap: one job's scenes)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.busy = 0.0
        self._open = 0
        self._since = 0.0

    async def narrate(self, request: NarrateRequest) -> Any:
        if self._open == 0:
            self._since = time.perf_counter()
        self._open += 1
        try:
            return await self.inner.narrate(request)
        finally:
            self._open -= 1
            if self._open == 0:
                self.busy += time.perf_counter() - self._since


def measure_share(workdir: Path, rounds: int) -> dict[str, Any]:
    job = InProcessJob(cpu_profile(workdir / "storage"), workdir / "job")
    narrator = TimedNarrator(job.stages)
    job.stages.narrator = narrator  # type: ignore[assignment]  # the recipe calls stages.narrator
    result: dict[str, Any] = {}
    for language, body in JOBS.items():
        job.run(body)  # warm-up: fonts, ffmpeg, eSpeak NG's voice data
        shares, walls = [], []
        for _ in range(rounds):
            narrator.busy = 0.0
            sample = timed(job.run, body)
            shares.append(narrator.busy / sample.wall)
            walls.append(sample.wall)
        result[language] = {
            "narration_share": median(shares),
            "spread": [min(shares), max(shares)],
            "job_wall_s": median(walls),
            "narration_s": median(shares) * median(walls),
        }
    return result


def _inputs(folder: Path) -> tuple[Path, list[audio.Voice], Path, float]:
    """A 12 s picture at 640x360, three narrations (eSpeak NG) and a 5 s music bed."""
    processor = VideoProcessor(VideoProcessingConfig(preset="veryfast"))
    picture = processor.frames_to_video(synthetic_frames(84, 640, 360), folder / "picture.mp4", fps=7)
    job = "video_" + "b" * 32
    (folder / "jobs" / job).mkdir(parents=True)
    narrator = NarratorEngine(NarrationConfig(), folder)
    narrator.load()
    voices = [
        audio.Voice(Path(narrator.narrate(NarrateRequest(job, i, text)).path), 0.3 + 4 * i)
        for i, text in enumerate(VOICES)
    ]
    rate = 44100
    t = np.arange(rate * 5) / rate
    bed = write_wav(folder / "bed.wav", 0.2 * np.sin(2 * np.pi * 220 * t) * (1 + 0.3 * np.sin(t)), rate)
    return picture, voices, bed, 12.0


def cli_command(picture: Path, voices: list[audio.Voice], bed: Path, seconds: float, out: Path) -> list[str]:
    """The one ffmpeg command line for the same mix, muxed straight into the MP4."""
    config = audio.AudioConfig()
    args = ["-i", str(picture)]
    graph = []
    for i, voice in enumerate(voices, start=1):
        args += ["-i", str(voice.path)]
        graph.append(f"[{i}:a]aresample=48000,adelay={round(voice.start * 1000)}:all=1,apad[v{i}]")
    args += ["-stream_loop", "-1", "-t", str(seconds + 1), "-i", str(bed)]
    music = len(voices) + 1
    labels = "".join(f"[v{i}]" for i in range(1, music))
    graph += [
        f"{labels}amix=inputs={len(voices)}:normalize=0:duration=longest,atrim=end={seconds},asplit=2[speech][key]",
        f"[{music}:a]aresample=48000,atrim=end={seconds},volume={config.music_volume_db}dB,"
        f"afade=t=out:st={seconds - config.fade_out_s}:d={config.fade_out_s}[bed]",
        f"[bed][key]sidechaincompress=threshold={config.duck_threshold}:ratio={config.duck_ratio}:"
        "attack=20:release=300[ducked]",
        f"[speech][ducked]amix=inputs=2:normalize=0:duration=first,loudnorm=I={config.loudness_lufs}:"
        f"TP={config.true_peak_db}:LRA=11,aresample=48000,aformat=channel_layouts=stereo,apad,"
        f"atrim=end={seconds}[out]",
    ]
    # fmt: off
    return [
        ffmpeg_runner.ffmpeg_exe(), "-hide_banner", "-v", "error", "-y", *args,
        "-filter_complex", ";".join(graph), "-map", "0:v", "-map", "[out]", "-c:v", "copy",
        "-c:a", "aac", "-b:a", config.bitrate, "-movflags", "+faststart", str(out),
    ]
    # fmt: on


def measure_mix(workdir: Path, rounds: int) -> dict[str, Any]:
    folder = workdir / "mix"
    folder.mkdir(parents=True, exist_ok=True)
    picture, voices, bed, seconds = _inputs(folder)
    config = audio.AudioConfig()
    timeout_s = VideoProcessingConfig().ffmpeg_timeout_s(seconds)

    def ours() -> None:
        track = audio.mix(voices, seconds, folder / "audio.m4a", config, (bed, "wav"), timeout_s=timeout_s)
        audio.mux(picture, track, folder / "ours.mp4", timeout_s=timeout_s)

    command = cli_command(picture, voices, bed, seconds, folder / "cli.mp4")

    def cli() -> None:
        subprocess.run(command, check=True, stdin=subprocess.DEVNULL)

    ours(), cli()  # warm-up: page cache, the binary
    ratios, cpu_ratios, walls = [], [], {"ours": [], "cli": []}
    for round_index in range(rounds):
        order = [("ours", ours), ("cli", cli)]
        if round_index % 2:
            order.reverse()
        samples = {name: timed(run) for name, run in order}
        ratios.append(samples["ours"].wall / samples["cli"].wall)
        cpu_ratios.append(samples["ours"].cpu / samples["cli"].cpu)
        for name, sample in samples.items():
            walls[name].append(sample.wall)
    return {
        "mix_ratio": median(ratios),
        "spread": [min(ratios), max(ratios)],
        "cpu_ratio": median(cpu_ratios),
        "median_wall_s": {name: median(values) for name, values in walls.items()},
        "rounds": rounds,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds of the mix (default 7)")
    parser.add_argument(
        "--share-rounds", type=int, default=3, help="timed jobs per language for the share (default 3)"
    )
    parser.add_argument("--out", type=Path, default=OUT / "narration.json")
    parser.add_argument("--smoke", action="store_true", help="one round of each: checks that it runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds = args.share_rounds = 1
    with tempfile.TemporaryDirectory() as scratch:
        load = os.getloadavg()[0]
        result = {
            "load_average_at_start": load,
            "mix": measure_mix(Path(scratch), args.rounds),
            "share": measure_share(Path(scratch), args.share_rounds),
            "load_average_at_end": os.getloadavg()[0],
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
