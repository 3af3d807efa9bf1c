"""What a remix or an extension takes over from the video it starts from, and the fingerprints that decide it.

An extension keeps every scene of the video it extends (their clips were copied when it was created) and
adds its own. A remix makes its scenes again, except those made of the same things as the source's scene at
the same place (the same fingerprint): these take the source's clip over.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

from core.files import JobFiles
from core.status import Animator, SceneStatus
from serve_app.config import AppConfig
from serve_app.jobs.plan import JobPlan, seed_of
from serve_app.protocol import CreateVideoRequest
from serve_app.store.jobs import JobRow, SceneRow

logger = logging.getLogger("ray.serve")


def take_over(job: JobRow, inherited: list[SceneRow], files: JobFiles) -> list[SceneRow]:
    """The scenes of the video an extension extends, done, with the clips copied when it was created."""
    for scene in inherited:
        files.move(files.inherited(scene.idx), files.clip(scene.idx))
        files.move(files.inherited_narration(scene.idx), files.narration(scene.idx))
    return [_done(scene, job, files.clip(scene.idx)) for scene in inherited]


def reuse(
    config: AppConfig,
    job: JobRow,
    request: CreateVideoRequest,
    plan: JobPlan,
    rows: list[SceneRow],
    files: JobFiles,
) -> list[SceneRow]:
    """A remix's scenes. Each scene made of the same things as the source's scene at its place takes
    over that scene's clip and is done; the others are made.

    With continuity a scene starts from the one before, so only an unbroken run from the first scene is
    taken over. A fallback's clip is made again unless the fallback is all this deployment makes.
    """
    source = {scene.idx: scene for scene in job.inherited}
    frames = plan.scene_frames([row.duration_s for row in rows])
    kept: list[SceneRow] = []
    unbroken = True  # every scene so far taken over (what a chained scene needs)
    for row in rows:
        old = source.get(row.idx)
        chained = request.continuity and row.idx > 0
        same = (
            old is not None
            and old.fingerprint == fingerprint(config, request, plan, row, frames[row.idx], files, chained)
            and (old.generator != Animator.FALLBACK or config.fallback == "always")
            and unbroken
            and files.has(files.inherited(row.idx))
        )
        if same and old is not None:
            files.move(files.inherited(row.idx), files.clip(row.idx))
            kept.append(_done(old, job, files.clip(row.idx)))
        else:
            kept.append(row)
            unbroken = not request.continuity
    taken = sum(1 for row in kept if row.source_video_id)
    logger.info(
        "job %s: %d of %d scenes taken over from %s", job.id, taken, len(kept), job.remixed_from_video_id
    )
    return kept


def fingerprint(
    config: AppConfig,
    request: CreateVideoRequest,
    plan: JobPlan,
    scene: SceneRow,
    frames: int,
    files: JobFiles,
    chained: bool,
) -> str:
    """What a scene's clip is made from: a remix whose scene has the same fingerprint takes its clip over."""
    motion = scene.motion_bucket_id if request.motion_bucket_id is None else request.motion_bucket_id
    if scene.idx == 0 and files.has(files.reference):
        start = "reference:" + hashlib.sha256(files.local(files.reference).read_bytes()).hexdigest()
    else:
        start = "previous scene" if chained else "painted"
    made_of = {
        "caption": scene.caption,
        "visual_prompt": scene.visual_prompt,
        "frames": frames,
        "seed": seed_of(plan, scene.idx),
        "size": plan.generation_size,
        "steps": plan.steps,
        "fps": plan.fps,
        "motion": motion,
        "noise": request.noise_aug_strength,
        "interpolation": request.interpolation or config.video_processing.interpolation_factor,
        "start": start,
    }
    # Only when asked for: the clips made before these fields existed keep their fingerprints.
    for name in ("negative_prompt", "guidance_scale", "guidance_scale_2", "boundary_ratio", "flow_shift"):
        if getattr(request, name) is not None:
            made_of[name] = getattr(request, name)
    return hashlib.sha256(json.dumps(made_of, sort_keys=True).encode()).hexdigest()


def _done(scene: SceneRow, job: JobRow, clip: Path) -> SceneRow:
    """``scene`` of another video as a finished scene of ``job``, saying which video made it."""
    return dataclasses.replace(
        scene,
        job_id=job.id,
        status=SceneStatus.COMPLETED,
        progress=100,
        attempts=0,
        clip_path=str(clip),
        source_video_id=scene.source_video_id or scene.job_id,
    )
