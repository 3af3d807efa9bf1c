"""Narrated videos in process, over the real engines (eSpeak NG, title cards) and real ffmpeg: a voice per
scene, an audio track as long as the picture, captions timed to the voice, burned-in subtitles, music."""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from pathlib import Path

import av
import numpy as np
import pytest

from core.errors import BadRequest
from core.files import JobFiles
from engines.media import VideoProcessor
from engines.media.ffmpeg import ffmpeg_exe
from engines.narrator.narrator import write_wav
from serve_app.config import AppConfig
from serve_app.jobs.recipe import VideoRecipe
from serve_app.jobs.runner import JobWorker
from serve_app.protocol import CreateVideoRequest
from tests.fixtures.jobs import runners, service_with, stages_with
from tests.fixtures.media import wav_bytes

pytestmark = pytest.mark.integration

ENGLISH = [
    {"caption": "A lighthouse keeper finds a map. It glows in the dark."},
    {"caption": "She follows it to the sea."},
]


@pytest.fixture
def narrated(local_config: AppConfig) -> AppConfig:
    """The in-process settings, narrated by eSpeak NG, cut between scenes (clips' edges are exact)."""
    return local_config.model_copy(
        update={
            "narration": local_config.narration.model_copy(update={"backend": "espeak"}),
            "video_processing": local_config.video_processing.model_copy(update={"transition": "cut"}),
        }
    )


def make(config: AppConfig, upload: bytes | None = None, **body):
    """Make a video of ``body`` (with ``upload`` as its uploaded music bed) and return its row and object."""

    async def scenario():
        service = service_with(config)
        created = await service.create(CreateVideoRequest(prompt="A map.", **body), None, None, music=upload)
        await runners(service).finished(created.id)
        return service.store.get(created.id), service.retrieve(created.id)

    return asyncio.run(scenario())


def decoded_audio(path) -> tuple[np.ndarray, int, float, float]:
    """(mono samples, rate, audio seconds, video seconds) of an MP4."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        rate = stream.rate
        samples = np.concatenate(
            [
                frame.to_ndarray().reshape(len(frame.layout.channels), -1).mean(axis=0)
                for frame in container.decode(stream)
            ]
        )
    info = VideoProcessor.probe(path)
    return samples, rate, len(samples) / rate, info.duration


def rms(samples: np.ndarray, rate: int, start: float, end: float) -> float:
    window = samples[int(start * rate) : int(end * rate)]
    return float(np.sqrt(np.mean(window**2))) if len(window) else 0.0


def test_a_narrated_video_has_a_voice_track_as_long_as_the_picture_and_captions_on_the_voice(narrated):
    job, video = make(narrated, scenes=ENGLISH, seconds=2)

    assert job.status == "completed", job.error_message
    files = JobFiles(narrated.storage.root, job.id)
    samples, rate, audio_seconds, video_seconds = decoded_audio(files.variant("video"))
    assert rate == 48000
    with av.open(str(files.variant("video"))) as container:
        assert container.streams.audio[0].codec_context.name == "aac"
        assert len(container.streams.audio[0].layout.channels) == 2
    assert abs(audio_seconds - video_seconds) <= 1 / narrated.video.fps
    # Three sentences cannot be said in 2 s: the pauses shrink to the gap between sentences, the voice speaks
    # at its fastest, and each scene lasts at least its narration, so the video outgrew 2 s and says so.
    for scene in video.scenes:
        assert scene.narrator == "espeak" and scene.narration is not None
        assert scene.narration.voice == "en-US" and scene.narration.language == "en"
        assert scene.narration.rate == narrated.narration.max_rate
        assert scene.duration_s >= scene.narration.seconds + narrated.narration.sentence_gap_s - 1e-3
    assert float(video.seconds) > 2
    assert [notice.code for notice in video.notices] == ["narration_longer_than_asked"]
    assert [len(scene.narration.sentences) for scene in video.scenes] == [2, 1]
    assert "audio" in video.variants and files.variant("audio").is_file()
    # A cue per sentence; speech inside each cue, near silence between them.
    cues = _cues(files.variant("captions").read_text())
    assert len(cues) == 3
    inside = [rms(samples, rate, start + 0.05, end - 0.05) for start, end in cues]
    gaps = [(0.0, cues[0][0])] + [(a[1], b[0]) for a, b in zip(cues, cues[1:], strict=False)]
    between = [rms(samples, rate, start + 0.05, end - 0.05) for start, end in gaps if end - start > 0.15]
    assert between and min(inside) > 10 * max(between), (inside, between)


@pytest.mark.slow
def test_chinese_text_is_spoken_in_mandarin_and_burned_in_as_glyphs(narrated):
    scenes = [{"caption": "灯塔看守人发现了一张地图。它在黑暗中发光！"}]
    job, video = make(narrated, scenes=scenes, burn_subtitles=True, size="320x180")

    assert job.status == "completed", job.error_message
    (scene,) = video.scenes
    assert (scene.narration.language, scene.narration.voice) == ("cmn", "cmn")
    assert [s.text for s in scene.narration.sentences] == ["灯塔看守人发现了一张地图。", "它在黑暗中发光！"]
    # The picture under the first sentence differs from the same video made without subtitles only where
    # the subtitles sit.
    unburned, _ = make(narrated, scenes=scenes, size="320x180", seed=job.request["seed"])
    first = scene.narration.sentences[0]
    at = scene.narration.lead + (first.start + first.end) / 2
    burned = _frame_at(JobFiles(narrated.storage.root, job.id).variant("video"), at)
    plain = _frame_at(JobFiles(narrated.storage.root, unburned.id).variant("video"), at)
    height = burned.shape[0]
    assert _changed(burned[: height // 2], plain[: height // 2]) < 0.001  # above: untouched
    assert _changed(burned[-height // 4 :], plain[-height // 4 :]) > 0.02  # below: the text


def test_burned_cjk_subtitles_draw_each_character_not_a_box(tmp_path):
    """Missing glyphs draw one box each, the same for every character: two lines of as many different
    characters would then look alike."""
    from engines.media import subtitles
    from engines.media.captions import Cue

    processor = VideoProcessor()
    black = np.zeros((8, 180, 320, 3), dtype=np.uint8)
    clip = processor.frames_to_video(black, tmp_path / "black.mp4", fps=8)
    font = subtitles.subtitle_font(None)
    drawn = []
    for i, text in enumerate(["灯塔发光", "黑暗地图"]):
        style = subtitles.SubtitleStyle(font_scale=0.15)
        script = subtitles.write_ass([Cue(0, 1, text)], 320, 180, style, font, tmp_path / f"{i}.ass")
        out = subtitles.burn(
            clip, script, font, tmp_path / f"{i}.mp4", processor.encoder_args(), timeout_s=60
        )
        drawn.append(_frame_at(out, 0.5)[120:])  # the bottom third, where subtitles sit
    blank = np.zeros_like(drawn[0])
    assert _changed(drawn[0], blank) > 0.02 and _changed(drawn[1], blank) > 0.02  # something is drawn
    assert _changed(drawn[0], drawn[1]) > 0.02  # and it differs with the characters


def test_narration_off_gives_a_silent_video(narrated):
    job, video = make(narrated, scenes=ENGLISH, seconds=2, narration=False)

    assert job.status == "completed", job.error_message
    with av.open(str(JobFiles(narrated.storage.root, job.id).variant("video"))) as container:
        assert not container.streams.audio
    assert all(scene.narrator is None for scene in video.scenes)
    assert "audio" not in video.variants and float(video.seconds) == pytest.approx(2, abs=0.3)


TATWEELS = "ـــــ ـــ"  # letters to the sentence splitter, silence to eSpeak NG


def test_a_scene_whose_voice_says_nothing_keeps_silence_and_the_video_completes(narrated):
    job, video = make(narrated, scenes=[{"caption": TATWEELS}, *ENGLISH[1:]], seconds=4)

    assert job.status == "completed", job.error_message
    silent, spoken = video.scenes
    assert silent.narrator is None and silent.narration.silent and silent.narration.sentences == []
    assert spoken.narrator == "espeak"
    assert [notice.code for notice in video.notices] == ["silent_narration"]
    assert "scene 1" in video.notices[0].message
    samples, rate, audio_seconds, video_seconds = decoded_audio(
        JobFiles(narrated.storage.root, job.id).variant("video")
    )
    assert np.isfinite(samples).all() and audio_seconds == pytest.approx(video_seconds, abs=0.05)
    assert rms(samples, rate, 0.1, silent.duration_s - 0.1) < 0.001  # silence for the whole first scene
    assert rms(samples, rate, silent.duration_s, video_seconds) > 0.01  # the second scene speaks


def test_a_video_whose_every_voice_says_nothing_completes_without_an_audio_track(narrated):
    job, video = make(narrated, scenes=[{"caption": TATWEELS}], seconds=2)

    assert job.status == "completed", job.error_message
    assert "audio" not in video.variants and job.has_audio == 0
    assert [notice.code for notice in video.notices] == ["silent_narration"]


def test_a_music_bed_plays_under_the_voice(narrated, tmp_path):
    rate = 44100
    tone = 0.3 * np.sin(2 * np.pi * 3000 * np.arange(rate) / rate)  # one second, looped to the video
    write_wav(tmp_path / "bed.wav", tone, rate)

    job, video = make(narrated, upload=(tmp_path / "bed.wav").read_bytes(), scenes=ENGLISH[1:], seconds=4)

    assert job.status == "completed", job.error_message
    samples, audio_rate, audio_seconds, video_seconds = decoded_audio(
        JobFiles(narrated.storage.root, job.id).variant("video")
    )
    assert abs(audio_seconds - video_seconds) <= 1 / narrated.video.fps
    (scene,) = video.scenes
    assert float(video.seconds) == pytest.approx(4, abs=0.2)  # the narration fits: the video lasts `seconds`
    # The bed is there where nobody speaks (after the voice, before the fade-out).
    voice_end = scene.narration.lead + scene.narration.seconds
    assert _tone(samples, audio_rate, voice_end + 0.2, voice_end + 0.6, 3000) > 0.01


def test_the_music_bed_is_ducked_under_speech(tmp_path):
    """The mix alone, with a voice that is a pure 300 Hz tone, so the 3 kHz bed can be measured under it."""
    from engines.media import audio

    rate = 48000
    t = np.arange(rate * 4) / rate
    voice = np.where((t > 1) & (t < 2.5), 0.5 * np.sin(2 * np.pi * 300 * t), 0.0)
    write_wav(tmp_path / "voice.wav", voice, rate)
    write_wav(tmp_path / "bed.wav", 0.3 * np.sin(2 * np.pi * 3000 * t), rate)
    config = audio.AudioConfig(fade_out_s=0)

    track = audio.mix(
        [audio.Voice(tmp_path / "voice.wav", 0.0)],
        4.0,
        tmp_path / "mix.m4a",
        config,
        (tmp_path / "bed.wav", "wav"),
        timeout_s=60,
    )

    with av.open(str(track)) as container:
        samples = np.concatenate([f.to_ndarray().mean(axis=0) for f in container.decode(audio=0)])
    under = _tone(samples, rate, 1.6, 2.3, 3000)
    between = _tone(samples, rate, 3.0, 3.7, 3000)
    assert between > 3 * under, (under, between)  # about 10 dB quieter under the voice
    assert _tone(samples, rate, 1.6, 2.3, 300) > 5 * _tone(samples, rate, 3.0, 3.7, 300)  # the voice is there


@pytest.mark.parametrize(
    "level, with_bed", [(0.01, False), (0.9, True)], ids=["quiet-voice", "loud-voice-and-bed"]
)
def test_the_mix_is_normalised_to_minus_16_lufs(tmp_path, level, with_bed):
    """The README's -16 LUFS (EBU R128), measured on the track by ffmpeg's own meter, whatever the voice's level."""
    from engines.media import audio

    rate, seconds = 48000, 6.0
    t = np.arange(int(rate * seconds)) / rate
    # A 300 Hz voice in syllables (4 a second), a pause every two seconds: speech to a loudness meter.
    speech = level * np.sin(2 * np.pi * 300 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) * ((t % 2) < 1.5)
    write_wav(tmp_path / "voice.wav", speech, rate)
    write_wav(tmp_path / "bed.wav", 0.3 * np.sin(2 * np.pi * 3000 * t), rate)
    bed = (tmp_path / "bed.wav", "wav") if with_bed else None

    track = audio.mix(
        [audio.Voice(tmp_path / "voice.wav", 0.5)],
        seconds,
        tmp_path / "mix.m4a",
        audio.AudioConfig(),
        bed,
        timeout_s=60,
    )

    # EBU R128 allows a programme 1 LU either side of its target; loudnorm on 6 s lands within 0.5 LU.
    assert integrated_loudness(track) == pytest.approx(-16, abs=1.0)


def test_a_resumed_job_does_not_speak_its_scenes_again(narrated):
    spoken: list[int] = []

    class Counting:
        def __init__(self, inner):
            self.inner = inner

        async def narrate(self, request):
            spoken.append(request.index)
            return await self.inner.narrate(request)

    async def scenario():
        stages = stages_with(narrated)
        service = service_with(narrated, narrator=Counting(stages.narrator))
        created = await service.create(CreateVideoRequest(prompt="A map.", scenes=ENGLISH), None, None)
        job_id = created.id
        while not service.store.get(job_id).scenes:
            await asyncio.sleep(0.01)
        runners(service).worker.tasks[job_id].cancel()  # the runner dies after the script and its voice
        await runners(service).finished(job_id)
        service.store.update(job_id, runner_id="runner-dead", lease_until=time.time() - 1)
        again = stages_with(narrated, narrator=Counting(stages.narrator))
        worker = JobWorker(narrated, service.store, VideoRecipe(narrated, service.store, again))
        assert await worker.run(job_id)
        return service.store.get(job_id)

    job = asyncio.run(scenario())
    assert job.status == "completed", job.error_message
    assert sorted(spoken) == [0, 1]  # spoken once, by the first run
    assert job.has_audio == 1


def test_bad_narration_and_music_are_refused_at_create_naming_the_field(narrated):
    with pytest.raises(ValueError, match="not an eSpeak NG voice"):
        CreateVideoRequest.model_validate({"prompt": "x", "narration": {"voice": "klingon"}})

    async def refused(**kwargs):
        service = service_with(narrated)
        music = kwargs.pop("music_bytes", None)
        with pytest.raises(BadRequest) as caught:
            await service.create(CreateVideoRequest(prompt="A map.", **kwargs), None, None, music=music)
        return caught.value

    assert asyncio.run(refused(music="calm")).param == "music"  # no music folder configured
    assert asyncio.run(refused(music_bytes=b"not audio at all" * 10)).param == "music"
    assert asyncio.run(refused(music_bytes=b"RIFF\x00\x00\x00\x00WAVEjunkjunk" * 20)).param == "music"
    assert not list(Path(narrated.storage.root).glob("jobs/*"))  # nothing stored for a refused request


def test_a_named_music_bed_comes_from_the_configured_folder(narrated, tmp_path):
    folder = tmp_path / "music"
    folder.mkdir()
    rate = 22050
    write_wav(folder / "calm.wav", 0.2 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate), rate)
    config = narrated.model_copy(deep=True)
    config.video_processing.audio.music_folder = str(folder)

    job, video = make(config, music="calm", narration=False, scenes=ENGLISH[1:], seconds=2)

    assert job.status == "completed", job.error_message
    assert "audio" in video.variants
    samples, rate, _, _ = decoded_audio(JobFiles(config.storage.root, job.id).variant("video"))
    assert _tone(samples, rate, 0.2, 0.8, 440) > 0.01

    async def unknown():
        service = service_with(config)
        with pytest.raises(BadRequest, match="calm"):  # the message lists the tracks there are
            await service.create(CreateVideoRequest(prompt="x", music="storm"), None, None)

    asyncio.run(unknown())


def test_an_empty_track_of_the_music_folder_is_refused_at_create(narrated, tmp_path):
    """An operator's bare header in the folder is a 400 naming `music`, not a stitch that loops for ever."""
    folder = tmp_path / "music"
    folder.mkdir()
    (folder / "silence.wav").write_bytes(wav_bytes(0))
    config = narrated.model_copy(deep=True)
    config.video_processing.audio.music_folder = str(folder)

    async def refused() -> BadRequest:
        service = service_with(config)
        with pytest.raises(BadRequest) as caught:
            await service.create(CreateVideoRequest(prompt="x", music="silence"), None, None)
        return caught.value

    error = asyncio.run(refused())
    assert error.param == "music" and "'silence'" in str(error) and "holds 0.00 s of wav audio" in str(error)
    assert not list(Path(config.storage.root).glob("jobs/*"))


def test_narration_longer_than_the_limit_is_spoken_faster_then_refused(narrated):
    limits = narrated.limits.model_copy(update={"max_seconds": 6})
    config = narrated.model_copy(update={"limits": limits})
    long = " ".join(["The keeper walks along the shore and counts the waves that break on the rocks."] * 3)

    job, _ = make(config, scenes=[{"caption": long}], seconds=2)

    assert job.status == "failed" and job.error_code == "narration_too_long", job.error_message
    assert "limits.max_seconds=6" in job.error_message

    job, video = make(config, scenes=[{"caption": long[:100]}], seconds=2)  # fits when spoken faster
    assert job.status == "completed", job.error_message
    assert video.scenes[0].narration.rate > 1 and float(video.seconds) <= 6.05


def _cues(vtt: str) -> list[tuple[float, float]]:
    def seconds(stamp: str) -> float:
        hours, minutes, rest = stamp.split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(rest)

    return [
        (seconds(line.split(" --> ")[0]), seconds(line.split(" --> ")[1]))
        for line in vtt.splitlines()
        if " --> " in line
    ]


def _frame_at(path, seconds: float) -> np.ndarray:
    info = VideoProcessor.probe(path)
    index = min(info.frames - 1, int(seconds * info.fps))
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == index:
                return frame.to_ndarray(format="rgb24")
    raise AssertionError(f"no frame {index} in {path}")


def _changed(a: np.ndarray, b: np.ndarray) -> float:
    """The share of pixels that differ clearly (beyond compression noise) between two images."""
    return float((np.abs(a.astype(int) - b.astype(int)).max(axis=-1) > 40).mean())


def integrated_loudness(path: Path) -> float:
    """The integrated loudness of a media file in LUFS, from ffmpeg's EBU R128 meter (its summary, on stderr)."""
    meter = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostats", "-i", str(path), "-af", "ebur128", "-f", "null", "-"],
        capture_output=True,
        text=True,
        check=True,
    )
    summary = meter.stderr.rsplit("Integrated loudness:", 1)[-1]
    found = re.search(r"I:\s+(-?[0-9.]+) LUFS", summary)
    assert found is not None, meter.stderr[-2000:]
    return float(found.group(1))


def _tone(samples: np.ndarray, rate: int, start: float, end: float, frequency: float) -> float:
    """The amplitude of one frequency in a window (a single DFT bin, Hann-windowed)."""
    window = samples[int(start * rate) : int(end * rate)]
    t = np.arange(len(window)) / rate
    hann = np.hanning(len(window))
    return float(2 * abs(np.sum(window * hann * np.exp(-2j * np.pi * frequency * t))) / hann.sum())


@pytest.mark.slow
def test_the_mix_benchmark_compares_like_with_like(tmp_path):
    """Both sides of bench/narration.py's mix_ratio write a picture with an AAC track of the same length."""
    from bench.narration import measure_mix

    result = measure_mix(tmp_path, rounds=1)

    assert result["mix_ratio"] > 0
    lengths = []
    for name in ("ours.mp4", "cli.mp4"):
        with av.open(str(tmp_path / "mix" / name)) as container:
            (track,) = container.streams.audio
            assert track.codec_context.name == "aac" and container.streams.video
            lengths.append(sum(frame.samples for frame in container.decode(track)) / track.rate)
    assert lengths[0] == pytest.approx(lengths[1], abs=0.05) and lengths[0] == pytest.approx(12, abs=0.1)
