"""The template writer: no model, deterministic, always available.

It cuts the prompt into sentences (Latin and CJK punctuation), merges or splits them to reach the scene
count, and gives each scene a shot descriptor and a motion hint. It is the default backend and the
fallback of every other one, so it must accept any non-empty text without failing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from engines.writer.config import WriterBounds
from engines.writer.prompting import TokenCounter, approx_clip_tokens, improve_visual_prompt
from engines.writer.script import Motion, Scene, Script
from engines.writer.text import clean_text, halve, is_cjk, shorten, split_clauses, split_sentences

# Shots cycle so consecutive scenes differ; the first scene establishes, as an editor would cut it.
_SHOTS = ["establishing wide shot", "medium shot", "close-up shot", "tracking shot", "low-angle shot"]
_SHOT_MOTION = [Motion.GENTLE, Motion.GENTLE, Motion.STILL, Motion.MODERATE, Motion.GENTLE]

_ENDS = ".!?;。！？；…"

# Words that ask for more (or less) movement than the shot's default.
_DYNAMIC = re.compile(
    r"\b(run\w*|race\w*|chas\w*|fly\w*|flies|flew|explo\w*|storm\w*|danc\w*|jump\w*|crash\w*|fight\w*|"
    r"battle\w*|rush\w*|speed\w*|wave\w*)\b|[跑飞奔冲爆炸舞跳战追闪]",
    re.IGNORECASE,
)
_STILL = re.compile(r"\b(still|calm|quiet|sleep\w*|silent|asleep|rest\w*)\b|[静睡眠寂]", re.IGNORECASE)


def _reach_count(pieces: list[str], target: int, cjk: bool) -> list[str]:
    """Merge neighbours or split the longest piece until there are ``target`` pieces."""
    pieces = list(pieces)
    joiner = "" if cjk else " "
    while len(pieces) < target:
        longest = max(range(len(pieces)), key=lambda i: len(pieces[i]))
        clauses = split_clauses(pieces[longest])
        if len(clauses) > 1:
            middle = len(clauses) // 2
            parts: tuple[str, str] | None = (joiner.join(clauses[:middle]), joiner.join(clauses[middle:]))
        else:
            parts = halve(pieces[longest], by_char=cjk)
        if parts is None:
            break
        pieces[longest : longest + 1] = list(parts)
    if len(pieces) < target:
        # Too little text to split further (one short word): the same words recur with other shots.
        pieces = [pieces[i % len(pieces)] for i in range(target)]
    if len(pieces) > target:
        n = len(pieces)
        pieces = [joiner.join(pieces[i * n // target : (i + 1) * n // target]) for i in range(target)]
    return pieces


def _motion(text: str, shot_index: int) -> Motion:
    if _DYNAMIC.search(text):
        return Motion.DYNAMIC
    if _STILL.search(text):
        return Motion.STILL
    return _SHOT_MOTION[shot_index % len(_SHOT_MOTION)]


def write_template_script(
    prompt: str,
    *,
    bounds: WriterBounds,
    language: str,
    num_scenes: int | None = None,
    terms: Sequence[str] = (),
    count: TokenCounter = approx_clip_tokens,
    fallback_reason: str | None = None,
) -> Script:
    """Write a script from the prompt's own sentences.

    Args:
        prompt: the user's idea; non-empty after whitespace cleanup. Only ``bounds.max_prompt_chars`` are read.
        bounds: the limits to respect.
        language: the prompt's language (BCP 47); captions keep the user's words, so they are in it.
        num_scenes: the scene count; ``None`` takes one scene per sentence within the bounds.
        terms: style then quality terms for the visual prompts.
        count: the keyframe model's token counter.
        fallback_reason: recorded on the script when the template stands in for another backend.
    """
    text = prompt[: bounds.max_prompt_chars]
    sentences = split_sentences(text) or [clean_text(text)]
    target = num_scenes or min(max(len(sentences), bounds.min_scenes), bounds.max_scenes)
    pieces = _reach_count(sentences, target, is_cjk(language))
    scenes = []
    for i, piece in enumerate(pieces):
        shot = _SHOTS[i % len(_SHOTS)]
        scenes.append(
            Scene(
                visual_prompt=improve_visual_prompt(
                    f"{shot} of {piece.rstrip(_ENDS)}",
                    terms,
                    token_limit=bounds.clip_token_limit,
                    count=count,
                ),
                caption=shorten(piece, bounds.max_caption_chars),
                duration_s=bounds.default_scene_seconds,
                motion=_motion(piece, i),
            )
        )
    title = shorten(sentences[0].rstrip(_ENDS), min(bounds.max_title_chars, 60))
    return Script(
        title=title or scenes[0].caption,
        language=language,
        scenes=scenes,
        backend="template",
        fallback_reason=fallback_reason,
    )
