"""Text helpers shared by the backends: language guess, sentence split, cleanup, shortening."""

from __future__ import annotations

import re
import unicodedata

# Where a sentence ends: Latin marks (repeated, as in "?!" or "...") before a space or the end of the text,
# so "3.5" and "e.g.x" stay whole; CJK marks and "…" anywhere, since CJK text has no spaces; a blank line, or a line
# break before a list item. A closing quote or bracket right after the mark stays with its sentence.
_CLOSERS = "\"'”’」』）)\\]»"
_SENTENCE_END = re.compile(rf"[.!?;…]+[{_CLOSERS}]*(?=\s|$)|[。！？；…]+[{_CLOSERS}]*|\n\s*\n|\n(?=\s*[-*•])")
# Where a clause ends inside a sentence: a Latin comma, colon or dash before a space (not "3,000"), or a
# CJK comma, enumeration comma or colon.
_CLAUSE_END = re.compile(rf"[,:;—–]+[{_CLOSERS}]*(?=\s)|—|[，、：]+[{_CLOSERS}]*")
# What a narrator speaks word by word in languages written without spaces: Han, kana, Hangul syllables.
_CJK_CHAR = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff\u3400-\u4dbf\uac00-\ud7af]")
_WORD = re.compile(r"[^\W_]+(?:['’.-][^\W_]+)*")
_UNIT = re.compile(rf"{_CJK_CHAR.pattern}|(?:(?!{_CJK_CHAR.pattern})[^\W_])+(?:['’.-][^\W_]+)*")

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


def unit_name(language: str) -> str:
    """What ``speech_units`` counts in ``language``'s captions, for messages and prompts."""
    return "characters" if language.split("-")[0].lower() in {"zh", "ja", "ko"} else "words"


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
    """Split ``text`` into sentences after ., !, ?, ;, … (before a space), 。, ！, ？, ； and at blank lines;
    never returns blanks."""
    return [s for s in (clean_text(part) for part in _cut_after(_SENTENCE_END, text)) if s]


def split_clauses(text: str) -> list[str]:
    """Split a sentence after its commas (", " ， 、), colons and dashes; never inside a number such as
    3,000 or a run of CJK characters; never returns blanks."""
    return [s for s in (part.strip() for part in _cut_after(_CLAUSE_END, text)) if s]


def split_phrases(text: str) -> list[str]:
    """``text`` as its clauses, sentence by sentence: the places a scene or a line may end."""
    return [clause for sentence in split_sentences(text) for clause in split_clauses(sentence)]


def trim_to_budget(text: str, budget: int) -> str:
    """``text`` cut to at most ``budget`` ``speech_units``: its first phrases that fit, or, when not even the
    first one does, its first words (CJK characters) ending in "…". Unchanged when it fits."""
    if speech_units(text) <= budget:
        return text
    kept, used = [], 0
    for phrase in split_phrases(text):
        used += speech_units(phrase)
        if used > budget:
            break
        kept.append(phrase)
    if kept:
        return (" " if " " in text else "").join(kept).rstrip(" ,;:—，、：")
    # One phrase too long to say in time: its first units.
    cut = 0
    for count, match in enumerate(_UNIT.finditer(text), start=1):
        if count > budget:
            break
        cut = match.end()
    return text[:cut].rstrip(" ,;:—，、：") + "…"


def _cut_after(pattern: re.Pattern[str], text: str) -> list[str]:
    pieces, start = [], 0
    for match in pattern.finditer(text):
        pieces.append(text[start : match.end()])
        start = match.end()
    return [*pieces, text[start:]]


def speech_units(text: str) -> int:
    """How much there is to say in ``text``: its CJK characters plus its words in spaced scripts (the units
    of ``WriterConfig.speech_rates``)."""
    cjk = len(_CJK_CHAR.findall(text))
    return cjk + len(_WORD.findall(_CJK_CHAR.sub(" ", text)))


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
