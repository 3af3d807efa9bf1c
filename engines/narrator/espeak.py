"""eSpeak NG through its C library, as the `espeakng-loader` package ships it (library and voice data).

No system package and no network: the wheel carries `libespeak-ng.so` and `espeak-ng-data`, over a hundred
languages among them Mandarin (`cmn`), Cantonese (`yue`), Japanese (`ja`) and Korean (`ko`). The library
keeps global state, so one process synthesises one text at a time.
"""

from __future__ import annotations

import ctypes
import functools
import re
import threading
from pathlib import Path

import numpy as np

from core.errors import InvalidInput, ModelUnavailable
from engines.media.audio import is_audible

# speak_lib.h: AUDIO_OUTPUT_SYNCHRONOUS, POS_CHARACTER, espeakCHARS_UTF8, espeakRATE.
_SYNCHRONOUS, _POS_CHARACTER, _CHARS_UTF8, _RATE = 2, 1, 1, 1
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
# A voice name, optionally with a variant: "en-US", "cmn", "en-GB-x-rp+f3".
PROBE_TEXT = "hello 1 2 3"
VOICE_NAME = re.compile(r"([A-Za-z0-9-]{1,40})(?:\+([A-Za-z0-9_]{1,20}))?")  # always with fullmatch


class Espeak:
    """The process's eSpeak NG, loaded on first use (``Espeak.get()``)."""

    _instance: Espeak | None = None
    _create_lock = threading.Lock()

    def __init__(self) -> None:
        try:
            import espeakng_loader

            self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
            self.data = Path(espeakng_loader.get_data_path())
        except (ImportError, OSError, RuntimeError) as exc:
            raise ModelUnavailable(f"eSpeak NG cannot load (install espeakng-loader): {exc}") from exc
        self._lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self._lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        rate = self._lib.espeak_Initialize(_SYNCHRONOUS, 0, str(self.data).encode(), 0)
        if rate <= 0:
            raise ModelUnavailable(f"eSpeak NG did not initialise with its data at {self.data}")
        self.sample_rate = int(rate)
        self._chunks: list[bytes] = []
        self._callback = _CALLBACK(self._collect)  # kept alive as long as the library may call it
        self._lib.espeak_SetSynthCallback(self._callback)
        self._lock = threading.Lock()

    @classmethod
    def get(cls) -> Espeak:
        with cls._create_lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def speak(self, text: str, voice: str, words_per_minute: int) -> np.ndarray:
        """``text`` spoken by ``voice`` as mono int16 samples at ``sample_rate``.

        Raises:
            InvalidInput: ``voice`` is not one of eSpeak's voices that speak.
        """
        check_voice(voice)
        return self._synthesize(text, voice, words_per_minute)

    def _synthesize(self, text: str, voice: str, words_per_minute: int) -> np.ndarray:
        data = text.encode("utf-8")
        with self._lock:
            if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise InvalidInput("voice", voice, "is not an eSpeak NG voice")
            self._lib.espeak_SetParameter(_RATE, max(80, min(450, words_per_minute)), 0)
            self._chunks = []
            self._lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            samples = b"".join(self._chunks)
            self._chunks = []
        return np.frombuffer(samples, dtype=np.int16).copy()

    def _collect(self, wav: ctypes._Pointer[ctypes.c_short], count: int, events: int) -> int:
        if wav and count > 0:
            self._chunks.append(ctypes.string_at(wav, count * 2))
        return 0  # go on


@functools.lru_cache(maxsize=1)
def voice_names() -> frozenset[str]:
    """Every eSpeak NG voice that speaks (lower case).

    The package ships some voices without their dictionary (eSpeak NG then says nothing for them), so each
    voice it ships is probed once, the first time one is asked for: a word and a few digits, which every
    dictionary speaks (or spells), must come out audible. Empty when the voice data is missing; every voice shipped
    when the library cannot load (narration then fails with its own reason).
    """
    shipped = _shipped_voices()
    try:
        espeak = Espeak.get()
    except ModelUnavailable:
        return shipped
    return frozenset(
        voice
        for voice in shipped
        if is_audible(
            espeak._synthesize(PROBE_TEXT, voice, 165).astype(np.float32) / 32768, espeak.sample_rate
        )
    )


def _shipped_voices() -> frozenset[str]:
    try:
        import espeakng_loader

        data = Path(espeakng_loader.get_data_path())
    except (ImportError, RuntimeError):
        return frozenset()
    return frozenset(path.name.lower() for path in (data / "lang").rglob("*") if path.is_file())


@functools.lru_cache(maxsize=1)
def variant_names() -> frozenset[str]:
    """Voice variants (`+f3`, `+Annie`, ...), lower case."""
    try:
        import espeakng_loader

        folder = Path(espeakng_loader.get_data_path()) / "voices" / "!v"
    except (ImportError, RuntimeError):
        return frozenset()
    return frozenset(path.name.lower() for path in folder.iterdir() if path.is_file())


def check_voice(voice: str, field: str = "voice") -> str:
    """``voice`` if eSpeak NG has it (a language voice, optionally ``+variant``).

    Raises:
        InvalidInput: naming ``field`` and the value.
    """
    match = VOICE_NAME.fullmatch(voice) if isinstance(voice, str) else None
    if match is None:
        raise InvalidInput(field, voice, "expected an eSpeak NG voice such as 'en-US', 'cmn' or 'en-US+f3'")
    name, variant = match.groups()
    if name.lower() not in voice_names():
        raise InvalidInput(
            field, voice, "is not an eSpeak NG voice that speaks (e.g. 'en-US', 'cmn', 'yue', 'ja', 'ko')"
        )
    if variant is not None and variant.lower() not in variant_names():
        raise InvalidInput(field, voice, f"has no eSpeak NG variant '+{variant}' (e.g. '+f3', '+m2')")
    return voice
