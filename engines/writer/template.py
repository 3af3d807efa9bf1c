"""The template writer: no model, deterministic, always available.

It cuts the prompt into sentences (Latin and CJK punctuation), and those into clauses when it needs more
pieces, then joins neighbours so each scene has about as much to say as the others (its words spread over
the scenes by what each can speak), and gives each scene a shot descriptor and a motion hint. It never
drops or cuts the user's words inside a phrase: with fewer phrases than scenes it makes fewer scenes. It is the default backend and the
fallback of every other one, so it must accept any non-empty text without failing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from engines.writer.config import WriterBounds
from engines.writer.prompting import TokenCounter, approx_clip_tokens, improve_visual_prompt
from engines.writer.script import Motion, Scene, Script
from engines.writer.text import clean_text, is_cjk, shorten, speech_units, split_clauses, split_sentences

# Shots cycle so consecutive scenes differ; the first scene establishes, as an editor would cut it.
_SHOTS = ["establishing wide shot", "medium shot", "close-up shot", "tracking shot", "low-angle shot"]
_SHOT_MOTION = [Motion.GENTLE, Motion.GENTLE, Motion.STILL, Motion.MODERATE, Motion.GENTLE]

_ENDS = ".!?;。！？；…"
# The least a clause says (words, or CJK characters) to be a scene of its own: about a second of speech.
MIN_PHRASE_UNITS = 3

# Words that ask for more (or less) movement than the shot's default.
_DYNAMIC = re.compile(
    r"\b(run\w*|race\w*|chas\w*|fly\w*|flies|flew|explo\w*|storm\w*|danc\w*|jump\w*|crash\w*|fight\w*|"
    r"battle\w*|rush\w*|speed\w*|wave\w*)\b|[跑飞奔冲爆炸舞跳战追闪]",
    re.IGNORECASE,
)
_STILL = re.compile(r"\b(still|calm|quiet|sleep\w*|silent|asleep|rest\w*)\b|[静睡眠寂]", re.IGNORECASE)


def _clauses(sentence: str, joiner: str) -> list[str]:
    """A sentence's clauses, a clause too short to stand as a scene ("Far below,") joined to the next one
    (the last to the one before)."""
    clauses: list[str] = []
    for clause in split_clauses(sentence):
        if clauses and speech_units(clauses[-1]) < MIN_PHRASE_UNITS:
            clauses[-1] = joiner.join([clauses[-1], clause])
        else:
            clauses.append(clause)
    if len(clauses) > 1 and speech_units(clauses[-1]) < MIN_PHRASE_UNITS:
        last = clauses.pop()
        clauses[-1] = joiner.join([clauses[-1], last])
    return clauses


def group_phrases(phrases: list[str], target: int, joiner: str) -> list[str]:
    """``phrases`` joined, in order, into ``target`` pieces (fewer when there are fewer phrases) whose
    speech is as even as it can be: the longest piece as short as possible.

    A piece is never cut inside a phrase, so a scene's caption always ends where a sentence or clause does.
    """
    count = min(target, len(phrases))
    weights = [max(1, speech_units(phrase)) for phrase in phrases]
    # The least capacity with which filling pieces in order needs no more than ``count`` of them.
    low, high = max(weights), sum(weights)
    while low < high:
        middle = (low + high) // 2
        if _pieces_needed(weights, middle) <= count:
            high = middle
        else:
            low = middle + 1
    groups: list[list[str]] = []
    load = 0
    for i, (phrase, weight) in enumerate(zip(phrases, weights, strict=True)):
        phrases_left, pieces_left = len(phrases) - i, count - len(groups)
        # A new piece when this one is full, or when every phrase left must start a piece of its own.
        if not groups or load + weight > low or phrases_left == pieces_left:
            groups.append([])
            load = 0
        groups[-1].append(phrase)
        load += weight
    return [joiner.join(group) for group in groups]


def _pieces_needed(weights: list[int], capacity: int) -> int:
    pieces, load = 1, 0
    for weight in weights:
        if load + weight > capacity:
            pieces, load = pieces + 1, 0
        load += weight
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
        num_scenes: the scene count (fewer when the prompt has fewer phrases); ``None`` takes one scene
            per sentence within the bounds.
        terms: style then quality terms for the visual prompts.
        count: the keyframe model's token counter.
        fallback_reason: recorded on the script when the template stands in for another backend.
    """
    text = prompt[: bounds.max_prompt_chars]
    sentences = split_sentences(text) or [clean_text(text)]
    target = num_scenes or min(max(len(sentences), bounds.min_scenes), bounds.max_scenes)
    # Whole sentences where there are enough of them; else clauses. A prompt with fewer phrases than scenes
    # asked for makes fewer scenes, each lasting longer: a caption never ends inside a phrase.
    joiner = "" if is_cjk(language) else " "
    phrases = sentences if len(sentences) >= target else [c for s in sentences for c in _clauses(s, joiner)]
    pieces = group_phrases(phrases, target, joiner)
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
