"""A job's narration: each scene's caption spoken, and the scenes made to last it.

The recipe's narrate step (``serve_app.jobs.recipe.VideoRecipe.narrate``) calls `narrate_scenes` before
anything is animated, so a scene's length is known when its frames are counted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Iterable

from core.errors import NarrationTooLong
from core.status import NoticeCode
from engines.narrator import NarrateRequest, Narration
from engines.stages.protocols import Narrator
from serve_app.config import AppConfig
from serve_app.jobs.plan import Fit, JobPlan, faster_rates, fit_narration, fit_pauses, seed_of
from serve_app.protocol import NarrationOptions
from serve_app.store.jobs import SceneRow

logger = logging.getLogger("ray.serve")

# Times a job's narration is spoken again, faster, to fit: a voice's length is not exactly inverse to its
# rate (its pauses stay), so the first correction may fall a little short.
NARRATION_ATTEMPTS = 3
# How much longer than asked a narrated video must run for its notices to say so (less is a frame or two).
LONGER_NOTICE_S = 0.1


async def narrate_scenes(
    narrator: Narrator,
    config: AppConfig,
    job_id: str,
    plan: JobPlan,
    rows: list[SceneRow],
    options: NarrationOptions,
    fit: Fit,
) -> tuple[list[SceneRow], list[dict[str, str]]]:
    """Speak each scene's caption and make each scene last at least its narration plus a pause.

    Scenes of an asked length (``fit.asked``) keep shorter pauses (down to the gap between sentences),
    then are spoken faster, up to `narration.max_rate`, until their narration fits; what does not fit
    even then makes the video longer, and a notice says by how much. Otherwise the narration sets the
    length, as long as the video stays within `limits.max_seconds` (spoken faster up to `max_rate` to stay
    there; past that the job fails with `narration_too_long`). A scene whose voice says nothing keeps
    silence, and a notice says so.

    Returns the scenes with their lengths and narrations, and the notices.
    """
    settings = config.narration
    planned = [row.duration_s for row in rows]
    fastest = max(options.rate, settings.max_rate)
    limit = config.limits.max_seconds - fit.fixed
    rates = [options.rate] * len(rows)

    async def speak(which: Iterable[int]) -> list[Narration]:
        """The narrations of scenes ``which`` (indexes into ``rows``), each at its rate, spoken together."""
        requests = [
            NarrateRequest(
                job_id,
                rows[i].idx,
                rows[i].caption,
                seed_of(plan, rows[i].idx),
                options.voice,
                rates[i],
                options.language,
            )
            for i in which
        ]
        return list(await asyncio.gather(*(narrator.narrate(request) for request in requests)))

    spoken = await speak(range(len(rows)))
    for attempt in range(NARRATION_ATTEMPTS + 1):
        # Where the narration does not fit, the pauses shrink first, then the voice speeds up.
        goals = fit.goals(planned, [said.seconds + fit.pause for said in spoken], limit)
        pauses = fit_pauses([said.seconds for said in spoken], goals, fit.pause, settings.sentence_gap_s)
        needs = [said.seconds + pause for said, pause in zip(spoken, pauses, strict=True)]
        faster = faster_rates([_speech_seconds(said) for said in spoken], needs, rates, goals, fastest)
        changed = [i for i, (old, new) in enumerate(zip(rates, faster, strict=True)) if new != old]
        if not changed or attempt == NARRATION_ATTEMPTS:
            break
        logger.info("job %s: speaking scenes %s at %s to fit", job_id, changed, [faster[i] for i in changed])
        rates = faster
        for i, said in zip(changed, await speak(changed), strict=True):
            spoken[i] = said
    durations = fit_narration(planned, needs, fit.explicit)
    total = sum(durations)
    if total > limit + 1e-6:
        raise NarrationTooLong(
            f"the narration needs {fit.fixed + total:.1f} s, more than limits.max_seconds="
            f"{config.limits.max_seconds:g} even spoken {fastest:g}x as fast as the voice's pace; "
            "shorten the scenes' text or ask for fewer scenes"
        )
    notices = []
    if fit.asked and total > sum(planned) + LONGER_NOTICE_S:
        notices.append(
            _notice(
                NoticeCode.NARRATION_LONGER_THAN_ASKED,
                f"the narration needs {total:.1f} s at {max(rates):g}x; {sum(planned):g} s asked",
            )
        )
    for row, said in zip(rows, spoken, strict=True):
        if said.silent:
            notices.append(
                _notice(
                    NoticeCode.SILENT_NARRATION,
                    f"scene {row.idx + 1}: the voice {said.voice!r} said nothing for its caption; the "
                    "scene keeps silence for its length",
                )
            )
    rows = [
        dataclasses.replace(row, duration_s=duration, narration_json=_narration_json(said, pause / 2))
        for row, said, duration, pause in zip(rows, spoken, durations, pauses, strict=True)
    ]
    return rows, notices


def _notice(code: NoticeCode, message: str) -> dict[str, str]:
    return {"code": code.value, "message": message}


def _speech_seconds(said: Narration) -> float:
    """How long the voice itself speaks (the gaps between sentences do not shorten with the pace)."""
    return sum(part.end - part.start for part in said.sentences)


def _narration_json(said: Narration, lead: float) -> str:
    """A scene's narration as the scene row keeps it (the video object's `narration`)."""
    return json.dumps(
        {
            "narrator": said.narrator,
            "voice": said.voice,
            "language": said.language,
            "seconds": round(said.seconds, 3),
            "lead": round(lead, 3),
            "rate": round(said.rate, 3),
            "sentences": [
                {"text": part.text, "start": round(part.start, 3), "end": round(part.end, 3)}
                for part in said.sentences
            ],
            "fallback_reason": said.fallback_reason,
            "silent": said.silent,
        },
        ensure_ascii=False,
    )
