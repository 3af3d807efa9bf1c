"""A job's ffmpeg dies with the job over real Ray Serve: a cancel or a DELETE kills the stitch's ffmpeg in the
Encoder replica within 2 s, and the runner's one slot takes the next job.

The stitch hangs as the issue found it: the job's music bed is swapped, after the create checked it, for a bare
WAV header, which the mix's `-stream_loop -1` loops over for ever at full CPU.
"""

from __future__ import annotations

import time

import pytest

from tests.fixtures.media import seconds_until_gone, wait_for_process, wav_bytes
from tests.fixtures.serve import Deployed

pytestmark = pytest.mark.e2e

SCENE = {"prompt": "A bell rings.", "num_scenes": "1", "seconds": "2", "narration": "false"}


@pytest.fixture(scope="module")
def app(serial_app: Deployed) -> Deployed:
    # One job at a time: a job whose ffmpeg outlived it would hold the slot the next one needs.
    return serial_app


@pytest.mark.parametrize("stop", ["cancel", "delete"])
def test_a_cancel_or_delete_kills_the_stitch_ffmpeg_within_two_seconds(app: Deployed, stop: str):
    fields = [(name, (None, value)) for name, value in SCENE.items()]
    created = app.client.post("/v1/videos", files=[*fields, ("music", ("bed.wav", wav_bytes(1)))])
    assert created.status_code == 200, created.text
    job_id = created.json()["id"]
    assert app.storage is not None
    # Its scene takes seconds to make; the stitch reads the bed after it.
    (app.storage / "jobs" / job_id / "music.audio").write_bytes(wav_bytes(0))
    wait_for_process(f"{job_id}/music.audio", timeout_s=120)  # the mix, and only it, reads the bed

    asked = time.monotonic()
    if stop == "cancel":
        assert app.client.post(f"/v1/videos/{job_id}/cancel").status_code == 200
    else:
        assert app.client.delete(f"/v1/videos/{job_id}").status_code == 200
    seconds_until_gone(job_id, timeout_s=10)
    took = time.monotonic() - asked  # until no ffmpeg of the job is left, from the request on
    assert took < 2, f"the job's ffmpeg ran on for {took:.1f} s after the {stop}"

    if stop == "cancel":  # a cancel, not a failure of ffmpeg
        video = app.client.get(f"/v1/videos/{job_id}").json()
        assert (video["status"], video["error"]) == ("cancelled", None)
    after = app.client.post("/v1/videos", json={**SCENE, "num_scenes": 1, "seconds": 2, "narration": False})
    assert app.wait(after.json()["id"], timeout_s=120)["status"] == "completed"
