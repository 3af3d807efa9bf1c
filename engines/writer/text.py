"""Text helpers shared by the backends: language guess, sentence split, cleanup, shortening."""

from __future__ import annotations

import re
import unicodedata

# Sentence ends in Latin, CJK and other scripts; a closing quote or bracket right after stays with its
# sentence. "…" and "……" end a sentence too.
_SENTENCE_END = re.compile(r"(?<=[.!?;。！？；…])[\"'”’」』）)\]]*\s*|\n{2,}|\n(?=\s*[-*•])")
_CLAUSE_BREAK = re.compile(r"(?<=[,，、:：—])\s*")

# Unicode ranges that tell a language apart by script alone. Latin-script text is reported as "en":
# telling English from French by script is impossible, so callers pass ``language`` when they know it.
_SCRIPTS: list[tuple[str, re.Pattern[str]]] = [
    ("ja", re.compile(r"[\u3040-\u30ff]")),  # kana first: Japanese text also uses Han characters
    ("ko", re.compile(r"[\uac00-\ud7af\u1100-\u11ff]")),
    ("zh", re.compile(r"[\u4e00-\u9fff\u3400-\u4dbf]")),
    ("ru", re.compile(r"[\u0400-\u04ff]")),
    ("ar", re.compile(r"[\u0600-\u06ff]")),
    ("he", re.compile(r"[\u0590-\u05ff]")),
    ("el", re.compile(r"[\u0370-\u03ff]")),
    ("th", re.compile(r"[\u0e00-\u0e7f]")),
    ("hi", re.compile(r"[\u0900-\u097f]")),
]
# Languages whose captions must contain at least one character of their script.
_SCRIPT_OF = {lang: pattern for lang, pattern in _SCRIPTS}
_CJK_SCRIPT = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff\u3400-\u4dbf\uac00-\ud7af]")


def detect_language(text: str) -> str:
    """Guess the language of ``text`` from its script; ``"en"`` for Latin script or no letters."""
    counts = {lang: len(pattern.findall(text)) for lang, pattern in _SCRIPTS}
    if counts["ja"]:
        return "ja"
    best = max(counts, key=lambda lang: counts[lang])
    return best if counts[best] else "en"


def matches_language(text: str, language: str) -> bool:
    """Whether ``text`` could be in ``language``: for script-specific languages it must use that script."""
    pattern = _SCRIPT_OF.get(language.split("-")[0].lower())
    if language.lower().startswith("ja"):
        # Japanese may be written in kanji alone.
        return bool(_CJK_SCRIPT.search(text))
    return True if pattern is None else bool(pattern.search(text))


def is_cjk(language: str) -> bool:
    """Whether ``language`` is written without spaces between words (Chinese, Japanese)."""
    return language.split("-")[0].lower() in {"zh", "ja"}


def clean_text(text: str) -> str:
    """Drop control and format characters and collapse whitespace to single spaces."""
    kept = "".join(
        " " if ch.isspace() else ch for ch in text if ch.isspace() or unicodedata.category(ch)[0] != "C"
    )
    return " ".join(kept.split())


def split_sentences(text: str) -> list[str]:
    """Split ``text`` into sentences at ., !, ?, ;, 。, ！, ？, ；, … and blank lines; never returns blanks."""
    return [s for s in (clean_text(part) for part in _SENTENCE_END.split(text)) if s]


def split_clauses(text: str) -> list[str]:
    """Split a sentence at commas (, ， 、), colons and dashes; never returns blanks."""
    return [s for s in (part.strip() for part in _CLAUSE_BREAK.split(text)) if s]


def halve(text: str, *, by_char: bool = False) -> tuple[str, str] | None:
    """Cut ``text`` in two near its middle, at the space nearest the middle.

    Args:
        text: the text to cut.
        by_char: cut between characters when there is no space (for Chinese and Japanese, whose words
            are not spaced); each half keeps at least two characters. Default False: a single word is
            never cut.

    Returns:
        The two halves, or ``None`` when ``text`` cannot be cut.
    """
    middle = len(text) // 2
    spaces = [i for i, ch in enumerate(text) if ch == " "]
    if spaces:
        cut = min(spaces, key=lambda i: abs(i - middle))
        left, right = text[:cut].strip(), text[cut:].strip()
    elif by_char and len(text) >= 4:
        left, right = text[:middle], text[middle:]
    else:
        return None
    return (left, right) if left and right else None


def shorten(text: str, limit: int) -> str:
    """Cut ``text`` to at most ``limit`` characters, at a word boundary when one is near, ending in "…"."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space >= limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:，、") + "…"


def ascii_letter_share(text: str) -> float:
    """The share of letters in ``text`` that are ASCII; 1.0 when it has no letters."""
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return 1.0
    return sum(ch.isascii() for ch in letters) / len(letters)
