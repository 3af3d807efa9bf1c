"""The runner's store waits out an outage (`PatientStore`): calls are made again, backing off, until the store
answers or the patience is spent; then the outage's error stands. A fake clock: nothing here sleeps."""

from __future__ import annotations

import pytest

from core.errors import StoreUnavailable
from serve_app.store.patience import PatientStore
from tests.support.clock import FakeClock as Clock

pytestmark = pytest.mark.unit


class FlakyStore:
    """Refuses every call until ``back_at`` on the clock, then answers."""

    lease_s = 15

    def __init__(self, clock: Clock, back_at: float) -> None:
        self.clock, self.back_at, self.calls = clock, back_at, 0

    def get(self, job_id: str) -> str:
        self.calls += 1
        if self.clock.now < self.back_at:
            raise StoreUnavailable("the job store is unreachable")
        return f"row of {job_id}"


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return Clock().install(monkeypatch)


def test_a_call_during_an_outage_waits_for_the_store_backing_off(clock: Clock):
    store = FlakyStore(clock, back_at=6.0)
    assert PatientStore(store, patience_s=25).get("video_1") == "row of video_1"
    assert clock.now >= 6.0
    assert clock.waits[:4] == [0.25, 0.5, 1.0, 2.0] and max(clock.waits) == 2.0  # backs off, then steady


def test_past_the_patience_the_outage_stands(clock: Clock):
    store = FlakyStore(clock, back_at=60.0)
    with pytest.raises(StoreUnavailable):
        PatientStore(store, patience_s=10).get("video_1")
    assert clock.now <= 10.0  # gave up within its patience, not after


def test_attributes_other_than_methods_pass_through(clock: Clock):
    assert PatientStore(FlakyStore(clock, back_at=0), patience_s=1).lease_s == 15
