"""The narrator engine: a scene's text spoken sentence by sentence, written as a WAV, with each sentence's time.

Sentences are synthesised one by one and joined with a short gap, so the time each one takes is known
exactly: captions are timed from it, and a scene lasts at least its narration. Plain Python (no Ray): the
Narrator deployment wraps it, and in-process runs call it directly.
"""

from __future__ import annotations

import logging
import re
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.errors import InvalidInput, JobGone, ModelUnavailable, as_value_error
from core.files import JobFiles, atomic_output
from core.storage import Storage, open_storage
from engines.fallback import FallbackPolicy
from engines.media.audio import is_audible
from engines.narrator.espeak import Espeak, check_voice
from engines.narrator.neural import NeuralVoiceConfig, VitsVoice

logger = logging.getLogger(__name__)

Backend = Literal["espeak", "vits", "none"]

# eSpeak NG's voice for each language a script reveals (and the usual names for them).
ESPEAK_VOICES = {
    "en": "en-US",
    "zh": "cmn",
    "cmn": "cmn",
    "yue": "yue",
    "ja": "ja",
    "ko": "ko",
    "ru": "ru",
    "ar": "ar",
    "hi": "hi",
    "el": "el",
    "he": "he",
    "th": "th",
}
LANGUAGE = re.compile(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})?")  # always with fullmatch
# A sentence ends at . ! ? followed by a space (not "3.5"), or at CJK full stops, which take no space.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[。！？；…])")
_WORD = re.compile(r"\w")
_SCRIPTS = (
    ("ja", re.compile(r"[\u3040-\u30ff]")),  # kana first: Japanese text also holds Han characters
    ("ko", re.compile(r"[\uac00-\ud7af\u1100-\u11ff]")),
    ("cmn", re.compile(r"[\u4e00-\u9fff\u3400-\u4dbf]")),
    ("ru", re.compile(r"[\u0400-\u04ff]")),
    ("ar", re.compile(r"[\u0600-\u06ff]")),
    ("hi", re.compile(r"[\u0900-\u097f]")),
    ("el", re.compile(r"[\u0370-\u03ff]")),
    ("he", re.compile(r"[\u0590-\u05ff]")),
    ("th", re.compile(r"[\u0e00-\u0e7f]")),
)


class NarrationConfig(BaseModel):
    """Who speaks each scene's text, how fast, and the pauses around it."""

    model_config = ConfigDict(extra="forbid")

    backend: Backend = Field(
        "espeak",
        description="`espeak`: eSpeak NG, offline, over 100 languages (CJK included), robotic but instant on a "
        "CPU; `vits`: the neural voice in `neural` (falls back to eSpeak under `fallback: auto`); `none`: "
        "silent videos. A request turns narration off with `narration: false`.",
    )
    language: str = Field(
        "en",
        pattern=LANGUAGE.pattern,
        description="Language of text in the Latin script (which cannot be told apart by its letters). Text "
        "in Chinese, Japanese, Korean, Cyrillic, Arabic, Greek, Hebrew, Devanagari or Thai is recognised by "
        "its script; a request may name the language itself.",
    )
    voice: str | None = Field(
        None,
        description="eSpeak NG voice for text in `language`, e.g. `en-GB-x-rp` (British) or `en-US+f3`; default by language.",
    )
    words_per_minute: int = Field(
        165, ge=80, le=450, description="eSpeak NG's pace at `rate` 1 (its own default is 175)."
    )
    sentence_gap_s: float = Field(0.25, ge=0, le=3, description="Silence between two sentences of a scene.")
    pause_s: float = Field(
        0.6,
        ge=0,
        le=5,
        description="Silence each scene keeps around its narration, half before and half after: a scene lasts "
        "at least its narration plus this (plus a cross-fade).",
    )
    max_rate: float = Field(
        1.35,
        ge=1,
        le=3,
        description="The fastest a narration is spoken to fit, as a multiple of the voice's normal pace: to "
        "fit the `seconds` a request asks for (past it the video runs longer and its `notices` say so), "
        "and to fit `limits.max_seconds` (past it the job fails with `narration_too_long`). A request "
        "that asks for a faster `rate` itself is spoken at that rate.",
    )
    neural: NeuralVoiceConfig = Field(
        default_factory=NeuralVoiceConfig, description="The neural voice (`backend: vits`)."
    )

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        # `max_speedup` (a multiple of the request's rate) became `max_rate` (of the voice's own pace).
        # At the default request rate of 1 the two are the same number.
        if isinstance(data, dict) and "max_speedup" in data:
            logger.warning("narration.max_speedup is now narration.max_rate; rename it in your config")
            data = dict(data)
            data.setdefault("max_rate", data.pop("max_speedup"))
        return data

    @field_validator("voice")
    @classmethod
    def _voice_exists(cls, value: str | None) -> str | None:
        return None if value is None else as_value_error(check_voice, value)

    @field_validator("language")
    @classmethod
    def _language_is_spoken(cls, value: str) -> str:
        return as_value_error(check_language, value)


@dataclass
class NarrateRequest:
    """One scene's text to speak.

    Args:
        job_id, index: whose scene, and which (the WAV goes into the job's folder).
        text: what to say.
        seed: the scene's seed (a neural voice samples noise).
        voice: an eSpeak NG voice; default by language.
        rate: pace, 1 as configured; 2 twice as fast.
        language: the text's language; default from its script, else ``narration.language``.
    """

    job_id: str
    index: int
    text: str
    seed: int = 0
    voice: str | None = None
    rate: float = 1.0
    language: str | None = None


@dataclass(frozen=True)
class Sentence:
    """One sentence of a narration, spoken from ``start`` to ``end`` seconds into it."""

    text: str
    start: float
    end: float


@dataclass
class Narration:
    """A scene's narration: its WAV in the job folder, how long it lasts, and who spoke it.

    Args:
        path: the WAV (mono, 16-bit, the voice's own rate).
        seconds: its length.
        sentences: each sentence's timing within it.
        narrator: 'espeak' or 'vits'.
        voice, language: the voice that spoke and the language it spoke.
        fallback_reason: why eSpeak NG spoke instead of the neural voice, when it did.
        rate: the pace it was spoken at (1: the voice's normal pace).
        silent: the voice said nothing for this text (a voice without its data, text of no sound): the
            narration lasts no time and has no sentences, and the scene keeps silence.
    """

    path: str
    seconds: float
    sentences: list[Sentence]
    narrator: str
    voice: str
    language: str
    fallback_reason: str | None = None
    rate: float = 1.0
    silent: bool = False


def detect_language(text: str, default: str = "en") -> str:
    """The language ``text``'s script says (``cmn`` for Han, ``ja`` where there is kana...), else ``default``."""
    for language, script in _SCRIPTS:
        if script.search(text):
            return language
    return default


def split_sentences(text: str) -> list[str]:
    """``text`` cut into sentences (Latin and CJK punctuation), each stripped; those without a word (only
    punctuation or spaces) are left out."""
    return [part.strip() for part in _SENTENCE_END.split(text) if _WORD.search(part)]


def voice_for(language: str, configured: str | None = None, config_language: str = "en") -> str:
    """The eSpeak NG voice for ``language``: the configured voice for the configured language, else by name."""
    if configured is not None and language == config_language:
        return configured
    base = language.split("-")[0]
    return ESPEAK_VOICES.get(language) or ESPEAK_VOICES.get(base) or language


def check_language(language: str, field: str = "language") -> str:
    """``language`` if eSpeak NG has a voice for it (every scene can be spoken, whatever the backend).

    Raises:
        InvalidInput: naming ``field`` and the value.
    """
    try:
        check_voice(voice_for(language))
    except InvalidInput:
        raise InvalidInput(
            field, language, "eSpeak NG has no voice for this language (e.g. en, cmn, yue, ja)"
        ) from None
    return language


class NarratorEngine:
    """Speaks scenes with the configured backend, under the fallback policy.

    Args:
        config: the `narration` section of the app config.
        storage: where the job files are kept (a path: a local folder).
        policy: `always` never loads the neural voice; `auto` speaks with eSpeak NG when it cannot load or
            does not speak a scene's language (recording why); `never` fails instead.
    """

    def __init__(
        self, config: NarrationConfig, storage: Storage | str | Path, policy: FallbackPolicy = "auto"
    ) -> None:
        self.config = config
        self.storage = open_storage(storage)
        self.policy = policy
        self.neural: VitsVoice | None = None
        self.neural_unavailable: str | None = None

    def load(self) -> None:
        """Load the neural voice if configured (and allowed); check that eSpeak NG loads.

        Raises:
            ModelUnavailable: a voice cannot load and the policy is `never`, or eSpeak NG cannot load.
        """
        if self.config.backend == "vits":
            if self.policy == "always":
                self.neural_unavailable = "fallback policy is 'always'"
            else:
                voice = VitsVoice(self.config.neural)
                try:
                    voice.load()
                    self.neural = voice
                except ModelUnavailable as exc:
                    if self.policy == "never":
                        raise
                    logger.warning("Neural voice unavailable, eSpeak NG speaks instead: %s", exc)
                    self.neural_unavailable = str(exc)
        if self.config.backend != "none":
            Espeak.get()

    def narrate(self, request: NarrateRequest) -> Narration:
        """Speak ``request.text`` and write it to the job's narration WAV for the scene; blocking.

        A text with nothing to say (punctuation, spaces) makes a narration of no length. A request that
        names a voice is spoken by eSpeak NG, whose voices they are.

        Raises:
            InvalidInput: an unknown voice or language, or a bad rate.
            ModelUnavailable: the neural voice cannot speak and the policy is `never`.
            JobGone: the job's folder is gone (deleted or expired meanwhile).
        """
        if not 0.25 <= request.rate <= 4:
            raise InvalidInput("rate", request.rate, "must be between 0.25 and 4")
        files = JobFiles(self.storage, request.job_id)
        if not files.exists():  # a write after a DELETE must not bring the folder back
            raise JobGone(f"job {request.job_id} has no folder: it was deleted or expired meanwhile")
        language = request.language or detect_language(request.text, self.config.language)
        refusal = "the request named an eSpeak NG voice" if request.voice else self._neural_refusal(language)
        if refusal is None and self.neural is not None:
            neural = self.neural
            rate = neural.sample_rate
            narrator, voice = "vits", self.config.neural.model_path or self.config.neural.model

            def speak(text: str) -> np.ndarray:
                return neural.speak(text, request.rate, request.seed)
        else:
            if self.config.backend == "vits" and self.policy == "never" and request.voice is None:
                raise ModelUnavailable(f"the neural voice cannot speak this scene: {refusal}")
            espeak = Espeak.get()
            voice = request.voice or voice_for(language, self.config.voice, self.config.language)
            check_voice(voice)
            pace = round(self.config.words_per_minute * request.rate)
            rate, narrator = espeak.sample_rate, "espeak"

            def speak(text: str) -> np.ndarray:
                return espeak.speak(text, voice, pace).astype(np.float32) / 32768

        gap = np.zeros(round(self.config.sentence_gap_s * rate), dtype=np.float32)
        parts: list[np.ndarray] = []
        timings: list[Sentence] = []
        at = 0
        for i, text in enumerate(split_sentences(request.text)):
            if i > 0:
                parts.append(gap)
                at += len(gap)
            samples = _trim_silence(speak(text))
            parts.append(samples)
            timings.append(Sentence(text, at / rate, (at + len(samples)) / rate))
            at += len(samples)
        audio = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
        # Speech a loudness meter cannot hear would make the mix's normalisation NaN: say it is silence.
        silent = len(timings) > 0 and not is_audible(audio, rate)
        if silent:
            logger.warning("job %s: %s spoke nothing for scene %d", request.job_id, voice, request.index)
            audio, timings = audio[:0], []
        write_wav(files.narration(request.index), audio, rate)
        files.keep(files.narration(request.index))
        if files.storage.remote:  # the encoder reads it from the store; this process never does
            files.narration(request.index).unlink()
        fell_back = self.config.backend == "vits" and narrator == "espeak" and request.voice is None
        return Narration(
            path=str(files.narration(request.index)),
            seconds=len(audio) / rate,
            sentences=timings,
            narrator=narrator,
            voice=voice,
            language=language,
            fallback_reason=refusal if fell_back else None,
            rate=request.rate,
            silent=silent,
        )

    def _neural_refusal(self, language: str) -> str | None:
        """Why the neural voice does not speak ``language`` (None: it does)."""
        if self.config.backend != "vits":
            return "not configured"
        if self.neural is None:
            return self.neural_unavailable or "the neural voice is not loaded"
        if not self.neural.speaks(language):
            return f"the neural voice speaks {', '.join(self.config.neural.languages)}, not {language!r}"
        return None


def write_wav(path: str | Path, samples: np.ndarray, rate: int) -> Path:
    """Write mono float samples in [-1, 1] as a 16-bit WAV, atomically."""
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with atomic_output(path) as temp, wave.open(str(temp), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())
    return Path(path)


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """A WAV this engine wrote, as mono float samples and its rate."""
    with wave.open(str(path), "rb") as source:
        rate = source.getframerate()
        pcm = np.frombuffer(source.readframes(source.getnframes()), dtype="<i2")
    return pcm.astype(np.float32) / 32768, rate


def _trim_silence(samples: np.ndarray, threshold: float = 0.01) -> np.ndarray:
    """``samples`` without the silence a synthesiser leaves before and after speech."""
    loud = np.flatnonzero(np.abs(samples) > threshold)
    if len(loud) == 0:
        return samples
    return samples[loud[0] : loud[-1] + 1]
