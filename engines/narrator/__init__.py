"""Narration: each scene's text spoken (eSpeak NG offline, or a neural VITS voice), with sentence timings."""

from engines.narrator.narrator import (
    NarrateRequest,
    Narration,
    NarrationConfig,
    NarratorEngine,
    Sentence,
    detect_language,
    read_wav,
    split_sentences,
)

__all__ = [
    "NarrateRequest",
    "Narration",
    "NarrationConfig",
    "NarratorEngine",
    "Sentence",
    "detect_language",
    "read_wav",
    "split_sentences",
]
