"""A fake clock for code that waits with `time.monotonic` and `time.sleep`: sleeping moves it, nothing waits."""

from __future__ import annotations

import time

import pytest


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now
        self.waits: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeClock:
        """Stand in for `time.monotonic` and `time.sleep` until the test ends."""
        monkeypatch.setattr(time, "monotonic", self.monotonic)
        monkeypatch.setattr(time, "sleep", self.sleep)
        return self
