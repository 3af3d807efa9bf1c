"""A neural voice: a VITS text-to-speech model through transformers (`VitsModel`, e.g. MMS-TTS checkpoints).

MMS-TTS ships one checkpoint per language (`facebook/mms-tts-eng`, `-fra`, `-deu`, ...); the configured one
speaks its `languages`, and scenes in other languages are spoken by eSpeak NG, which each scene records.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from core.errors import ModelUnavailable
from engines.loading import ModelSourceConfig, cpu_threads, load_pipeline, release_memory, resolve_placement

if TYPE_CHECKING:
    import torch


class NeuralVoiceConfig(ModelSourceConfig):
    """The neural voice: which VITS checkpoint, and the languages it speaks."""

    model: str = Field(
        "facebook/mms-tts-eng",
        description="Hub id of a VITS checkpoint (MMS-TTS: one per language, about 150 MB each).",
    )
    languages: list[str] = Field(
        default_factory=lambda: ["en"],
        min_length=1,
        description="Languages the checkpoint speaks (ISO 639 codes as `narration.language` takes them); "
        "scenes in other languages are spoken by eSpeak NG.",
    )


class VitsVoice:
    """A loaded VITS model; one synthesis at a time (the model's speaking rate is set per call)."""

    name = "vits"

    def __init__(self, config: NeuralVoiceConfig) -> None:
        self.config = config
        self._model: Any = None
        self._tokenizer: Any = None
        self._device: torch.device | None = None
        self._lock = threading.Lock()

    @property
    def sample_rate(self) -> int:
        return int(self._model.config.sampling_rate)

    def load(self) -> None:
        """Load the model and its tokenizer once.

        Raises:
            ModelUnavailable: weights missing, not cached with downloads off, unreadable, or no usable device.
        """
        from transformers import AutoTokenizer, VitsModel

        with self._lock:
            if self._model is not None:
                return
            placement = resolve_placement(self.config)
            model = load_pipeline(VitsModel, self.config, placement.dtype, marker="config.json")
            tokenizer = load_pipeline(AutoTokenizer, self.config, placement.dtype, marker="config.json")
            self._model, self._tokenizer = model.to(placement.device).eval(), tokenizer
            self._device = placement.device

    def unload(self) -> None:
        with self._lock:
            device, self._model, self._tokenizer = self._device, None, None
            release_memory(device)

    def speaks(self, language: str) -> bool:
        return language in self.config.languages

    def speak(self, text: str, rate: float, seed: int) -> np.ndarray:
        """``text`` spoken at ``rate`` times the model's pace, as mono float32 samples in [-1, 1]."""
        import torch  # here, not at the top: narrators that speak with eSpeak NG never load it

        with self._lock:
            if self._model is None:
                raise ModelUnavailable("the neural voice is not loaded")
            inputs = self._tokenizer(text, return_tensors="pt").to(self._device)
            if inputs["input_ids"].shape[-1] == 0:
                return np.zeros(0, dtype=np.float32)
            self._model.speaking_rate = rate
            generator_state = torch.random.get_rng_state()
            torch.manual_seed(seed)  # VITS samples noise for durations and pitch: a seed makes it repeat
            try:
                with torch.inference_mode(), cpu_threads(self.config.cpu_threads, self._device):
                    waveform = self._model(**inputs).waveform[0]
            finally:
                torch.random.set_rng_state(generator_state)
        return waveform.float().clamp(-1, 1).cpu().numpy()
