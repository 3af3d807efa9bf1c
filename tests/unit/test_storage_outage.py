"""An object store that refuses or does not answer (`ObjectStorage._reaching`): the stages' storage tries
again, backing off, within its patience; the ingress's within a second, then refuses, and for a moment
after without trying. A fake clock and a fake operation: nothing here connects or sleeps."""

from __future__ import annotations

import botocore.exceptions
import pytest

from core import storage as storage_module
from core.errors import StorageUnavailable
from core.storage import ObjectStorage
from tests.support.clock import FakeClock as Clock

pytestmark = pytest.mark.unit


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return Clock(now=100.0).install(monkeypatch)


def refusing_until(clock: Clock, back_at: float, calls: list[float]):
    def operation() -> str:
        calls.append(clock.now)
        if clock.now < back_at:
            raise botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:9/bucket")
        return "bytes"

    return operation


def test_the_stages_storage_waits_out_an_outage_within_its_patience(clock: Clock):
    calls: list[float] = []
    patient = ObjectStorage("s3://bucket/prefix")
    assert patient._reaching(refusing_until(clock, clock.now + 20, calls)) == "bytes"
    assert len(calls) > 2 and clock.now - calls[0] < storage_module.PATIENCE_S

    calls.clear()
    with pytest.raises(StorageUnavailable) as refused:
        patient._reaching(refusing_until(clock, clock.now + 600, calls))
    assert clock.now - calls[0] <= storage_module.PATIENCE_S  # gave up within its patience
    assert refused.value.status == 503 and refused.value.retry_after_s > 0


def test_the_ingress_storage_gives_up_within_a_second_then_refuses_without_trying(clock: Clock):
    calls: list[float] = []
    impatient = ObjectStorage("s3://bucket/prefix", patient=False)
    assert (
        impatient._reaching(refusing_until(clock, clock.now + 0.1, calls)) == "bytes"
    )  # a dropped connection
    calls.clear()
    with pytest.raises(StorageUnavailable):
        impatient._reaching(refusing_until(clock, clock.now + 600, calls))
    assert clock.now - calls[0] <= storage_module.IMPATIENCE_S
    tried = len(calls)
    with pytest.raises(StorageUnavailable):  # within DOWN_S: not tried
        impatient._reaching(refusing_until(clock, 0, calls))
    assert len(calls) == tried
    clock.now += storage_module.DOWN_S
    assert impatient._reaching(refusing_until(clock, 0, calls)) == "bytes"  # back: tried, and answered
