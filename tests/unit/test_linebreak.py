"""Lines of title cards and burned-in subtitles end where the Unicode line breaking rules (UAX #14) allow."""

from __future__ import annotations

import pytest

from engines.media.cards import wrap_text
from engines.media.fonts import load_font
from engines.media.linebreak import wrap_lines
from engines.media.subtitles import wrap

pytestmark = pytest.mark.unit

# Closing punctuation: UAX #14 never starts a line with it.
CLOSING = "。，、．！？）」』】"
CAT = "一只小猫在月光下的屋顶上散步。"  # 14 characters and the full stop


def test_a_cjk_full_stop_never_starts_a_subtitle_line():
    # Room for exactly 14 wide characters: a break between any two would leave "。" alone on line 2.
    lines = wrap(CAT, room=14 * 40, size=40, max_lines=3)
    assert "".join(lines) == CAT
    assert not any(line[0] in CLOSING for line in lines), lines
    assert lines == ["一只小猫在月光下的屋顶上散", "步。"]


def test_a_cjk_full_stop_never_starts_a_title_card_line():
    font = load_font(40)  # the CJK font `make install` puts there (fonts-wqy-zenhei)
    lines = wrap_text(CAT, font, font.getlength(CAT[:14]))
    assert "".join(lines) == CAT and len(lines) == 2
    assert not any(line[0] in CLOSING for line in lines), lines


def test_brackets_and_commas_stay_with_their_words():
    text = "主人给它一碗牛奶，说：「晚安」。"
    for room in range(3, len(text) + 1):
        lines = wrap_lines(text, len, room)
        assert "".join(lines) == text
        assert not any(line[0] in CLOSING for line in lines), (room, lines)
        assert not any(line[-1] in "「（『【" for line in lines), (room, lines)


def test_latin_breaks_at_spaces_and_a_word_wider_than_a_line_is_the_only_cut():
    assert wrap_lines("A fox runs through the snow", len, 10) == ["A fox runs", "through", "the snow"]
    assert wrap_lines("Supercalifragilistic", len, 8) == ["Supercal", "ifragili", "stic"]
    assert wrap_lines("first line\nsecond", len, 20) == ["first line", "second"]
    assert wrap_lines("", len, 5) == [""]
