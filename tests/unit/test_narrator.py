"""The narrator engine: eSpeak NG from its wheel and a tiny VITS voice through our loader, the language read
from the script, sentence timings, the fallback from the neural voice, and the voices a request may name."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import InvalidInput, ModelUnavailable
from engines.narrator import (
    NarrateRequest,
    NarrationConfig,
    NarratorEngine,
    detect_language,
    read_wav,
    split_sentences,
)
from engines.narrator.espeak import check_voice, voice_names
from engines.narrator.narrator import check_language
from engines.narrator.neural import NeuralVoiceConfig
from serve_app.jobs.plan import faster_rates, fit_narration, fit_pauses

pytestmark = pytest.mark.unit

JOB = "video_" + "a" * 32


@pytest.fixture
def storage(tmp_path):
    (tmp_path / "jobs" / JOB).mkdir(parents=True)
    return tmp_path


def vits(path, languages=("en",)) -> NarrationConfig:
    neural = NeuralVoiceConfig(model_path=str(path), device="cpu", languages=list(languages))
    return NarrationConfig(backend="vits", neural=neural)


@pytest.mark.parametrize(
    "text, language",
    [
        ("The keeper finds a map.", "en"),
        ("灯塔看守人发现了一张地图。", "cmn"),
        ("灯台守は地図を見つけた。", "ja"),  # kana with Han: Japanese
        ("등대지기가 지도를 찾았다.", "ko"),
        ("Смотритель нашёл карту.", "ru"),
    ],
)
def test_the_language_comes_from_the_script(text, language):
    assert detect_language(text) == language


def test_sentences_split_on_latin_and_cjk_stops_but_not_inside_numbers():
    assert split_sentences("It costs 3.5 coins. Really? Yes!") == ["It costs 3.5 coins.", "Really?", "Yes!"]
    assert split_sentences("你好。今天很好！走吧") == ["你好。", "今天很好！", "走吧"]


def test_espeak_speaks_each_sentence_with_its_timing(storage):
    engine = NarratorEngine(NarrationConfig(), storage)
    engine.load()

    said = engine.narrate(NarrateRequest(JOB, 0, "The keeper finds a map. It glows."))

    samples, rate = read_wav(said.path)
    assert (said.narrator, said.voice, said.language) == ("espeak", "en-US", "en")
    assert said.seconds == pytest.approx(len(samples) / rate)
    first, second = said.sentences
    assert 0 == first.start < first.end < second.start < second.end == pytest.approx(said.seconds)
    assert second.start - first.end == pytest.approx(NarrationConfig().sentence_gap_s, abs=1e-3)
    assert np.abs(samples[int(first.start * rate) : int(first.end * rate)]).max() > 0.1  # speech, not silence
    faster = engine.narrate(NarrateRequest(JOB, 1, "The keeper finds a map. It glows.", rate=1.5))
    assert faster.seconds < 0.85 * said.seconds


def test_a_voice_must_be_one_espeak_has():
    assert check_voice("en-US+f3") == "en-US+f3"
    for bad in ("klingon", "en-US+nobody", "../../etc", "en US"):
        with pytest.raises(InvalidInput) as caught:
            check_voice(bad)
        assert caught.value.param == "voice"


def test_the_neural_voice_loads_through_our_loader_and_repeats_with_its_seed(storage, tiny_voice_path):
    engine = NarratorEngine(vits(tiny_voice_path), storage, "never")
    engine.load()

    one = engine.narrate(NarrateRequest(JOB, 0, "A map glows.", seed=3))
    two = engine.narrate(NarrateRequest(JOB, 1, "A map glows.", seed=3))

    assert (one.narrator, one.fallback_reason) == ("vits", None)
    assert read_wav(one.path)[1] == 16000
    assert np.array_equal(read_wav(one.path)[0], read_wav(two.path)[0])
    assert one.seconds > 0


def test_a_language_the_neural_voice_lacks_is_spoken_by_espeak_with_the_reason(storage, tiny_voice_path):
    engine = NarratorEngine(vits(tiny_voice_path), storage, "auto")
    engine.load()

    said = engine.narrate(NarrateRequest(JOB, 0, "灯塔看守人发现了一张地图。"))

    assert (said.narrator, said.voice) == ("espeak", "cmn")
    assert "not 'cmn'" in said.fallback_reason
    strict = NarratorEngine(vits(tiny_voice_path), storage, "never")
    strict.load()
    with pytest.raises(ModelUnavailable):
        strict.narrate(NarrateRequest(JOB, 0, "灯塔看守人发现了一张地图。"))


def test_missing_neural_weights_fall_back_to_espeak_with_the_reason(storage, tmp_path):
    engine = NarratorEngine(vits(tmp_path / "nothing-here"), storage, "auto")
    engine.load()

    said = engine.narrate(NarrateRequest(JOB, 0, "The keeper finds a map."))

    assert said.narrator == "espeak" and "no config.json" in said.fallback_reason
    with pytest.raises(ModelUnavailable):
        NarratorEngine(vits(tmp_path / "nothing-here"), storage, "never").load()


def test_narration_wins_over_the_planned_lengths():
    # Written scenes share the video's length when all narration fits: the longer narration takes more.
    assert fit_narration([3, 3], [4, 1], explicit=False) == pytest.approx([4.5, 1.5])
    assert sum(fit_narration([2, 2, 2], [1, 1, 1], explicit=False)) == pytest.approx(6)
    # When it does not fit, each scene lasts its narration: the video grows.
    assert fit_narration([1, 1], [2, 3], explicit=False) == [2, 3]
    # Explicit scenes keep their own lengths where their narration fits.
    assert fit_narration([5, 1], [2, 3], explicit=True) == [5, 3]


def test_pauses_give_way_before_the_voice_speeds_up():
    # Two scenes of 3 s each must fit 8 s: their pauses shrink from 1.1 s to 1 s, no faster voice needed.
    assert fit_pauses([3, 3], [([0, 1], 8)], pause=1.1, shortest=0.25) == pytest.approx([1, 1])
    # They must fit 6.2 s: the pauses stop at the gap between sentences; the rest is the voice's to give.
    assert fit_pauses([3, 3], [([0, 1], 6.2)], pause=1.1, shortest=0.25) == [0.25, 0.25]
    # No goal: every scene keeps its pause.
    assert fit_pauses([3, 9], [], pause=1.1, shortest=0.25) == [1.1, 1.1]


def test_a_group_of_scenes_speeds_up_together_and_never_past_the_fastest_pace():
    speech, needs = [2.5, 2.5], [3.25, 3.25]  # 0.75 s of pauses and gaps each
    # 6.0 s asked: the voices must give 0.5 of their 5 s, a rate of 1/0.9, a little more for the pauses inside.
    assert faster_rates(speech, needs, [1, 1], [([0, 1], 6.0)], fastest=1.35) == [1.144, 1.144]
    # Explicit scenes fit one by one: only the one over its length speeds up.
    assert faster_rates(speech, needs, [1, 1], [([0], 3.25), ([1], 3.0)], fastest=1.35) == [1, 1.144]
    # Far too much to say: the fastest pace, and no further.
    assert faster_rates(speech, needs, [1, 1], [([0, 1], 2.0)], fastest=1.35) == [1.35, 1.35]
    assert faster_rates(speech, needs, [1.35, 1.35], [([0, 1], 2.0)], fastest=1.35) == [1.35, 1.35]
    # What fits stays as it is.
    assert faster_rates(speech, needs, [1, 1], [([0, 1], 7.0)], fastest=1.35) == [1, 1]


def test_only_voices_that_speak_are_accepted():
    # eSpeak NG ships Faroese without its dictionary: it speaks nothing, so it is no voice to choose.
    with pytest.raises(InvalidInput, match="not an eSpeak NG voice that speaks") as caught:
        check_voice("fo")
    assert caught.value.param == "voice"
    with pytest.raises(InvalidInput) as caught:
        check_language("fo")
    assert caught.value.param == "language"
    assert "fo" not in voice_names() and {"en-us", "cmn", "ar"} <= voice_names()


def test_a_text_that_speaks_as_silence_is_a_silent_narration(storage):
    engine = NarratorEngine(NarrationConfig(), storage)

    # Arabic tatweels are letters to the sentence splitter and silence to eSpeak NG.
    said = engine.narrate(NarrateRequest(JOB, 0, "ـــــ ـــ"))

    assert said.silent and said.seconds == 0 and said.sentences == []
    assert read_wav(said.path)[0].size == 0
    assert not engine.narrate(NarrateRequest(JOB, 1, "The keeper finds a map.")).silent


def test_a_text_with_nothing_to_say_is_a_narration_of_no_length(storage):
    engine = NarratorEngine(NarrationConfig(), storage)

    said = engine.narrate(NarrateRequest(JOB, 0, " … "))

    assert said.seconds == 0 and said.sentences == [] and read_wav(said.path)[0].size == 0


def test_a_voice_the_request_names_is_espeaks_even_beside_a_neural_voice(storage, tiny_voice_path):
    engine = NarratorEngine(vits(tiny_voice_path), storage, "never")
    engine.load()

    said = engine.narrate(NarrateRequest(JOB, 0, "A map glows.", voice="en-GB-x-rp"))

    assert (said.narrator, said.voice, said.fallback_reason) == ("espeak", "en-GB-x-rp", None)


def test_a_deleted_jobs_folder_is_not_brought_back(tmp_path):
    from core.errors import JobGone

    with pytest.raises(JobGone):
        NarratorEngine(NarrationConfig(), tmp_path).narrate(NarrateRequest(JOB, 0, "Too late."))
    assert not (tmp_path / "jobs").exists()


def test_config_and_request_voices_and_languages_are_checked_when_read():
    from pydantic import ValidationError

    from serve_app.protocol import CreateVideoRequest

    with pytest.raises(ValidationError, match="voice"):
        NarrationConfig(voice="klingon")
    with pytest.raises(ValidationError, match="language"):
        NarrationConfig(language="xx")
    with pytest.raises(ValidationError, match="no voice for this language"):
        CreateVideoRequest.model_validate({"prompt": "x", "narration": {"language": "xx"}})
    request = CreateVideoRequest.model_validate(
        {"prompt": "x", "narration": {"language": "yue", "rate": 1.2}}
    )
    assert request.narration_options(default=True).language == "yue"
    assert CreateVideoRequest(prompt="x").narration_options(default=False) is None
    assert CreateVideoRequest(prompt="x", narration=False).narration_options(default=True) is None
