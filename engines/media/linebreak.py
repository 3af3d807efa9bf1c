"""Where a line of text may end, by the Unicode line breaking rules (UAX #14), for title cards and subtitles.

Every script the service speaks has its own rules: Latin breaks at spaces and after hyphens, CJK between
most characters, but never before closing punctuation such as 。，）」 or after an opening bracket. The
rules come from a library (uniseg) rather than a hand-written table, so a caption never starts a line with
a lone "。".
"""

from __future__ import annotations

from collections.abc import Callable

from uniseg.linebreak import line_break_units


def wrap_lines(text: str, width_of: Callable[[str], float], max_width: float) -> list[str]:
    """``text`` in lines no wider than ``max_width``, each ending where UAX #14 allows a break.

    Args:
        text: the text; its own line breaks are kept.
        width_of: the width of a piece of text, in the unit of ``max_width`` (pixels from a font, or an
            estimate).
        max_width: the room a line has.

    A unit wider than a whole line (a very long word) is the only thing cut between characters. Never
    returns an empty list.
    """
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for unit in line_break_units(paragraph):
            if not line or width_of((line + unit).rstrip()) <= max_width:
                line += unit
            else:
                lines.append(line.rstrip())
                line = unit
            while width_of(line.rstrip()) > max_width and len(line.rstrip()) > 1:
                head = _longest_head(line, width_of, max_width)
                lines.append(head)
                line = line[len(head) :]
        lines.append(line.rstrip())
    return [line for line in lines if line] or [""]


def _longest_head(text: str, width_of: Callable[[str], float], max_width: float) -> str:
    """The longest start of ``text`` that fits ``max_width`` (at least one character)."""
    end = 1
    while end < len(text) and width_of(text[: end + 1]) <= max_width:
        end += 1
    return text[:end]
