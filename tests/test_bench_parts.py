"""Parts of `double11 bench` that can be checked without running it."""

from __future__ import annotations

import sys

import pytest

from double11.bench.run import StolenTime


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/stat is Linux's")
def test_stolen_time_is_a_share_of_the_cpu_time_that_passed():
    stolen = StolenTime()
    work = sum(i * i for i in range(2_000_000))  # let some CPU time pass
    share = stolen.share()
    assert work > 0
    assert share is None or 0.0 <= share <= 1.0  # None only if no tick passed at all


def test_stolen_time_says_none_when_the_os_does_not_say(monkeypatch):
    monkeypatch.setattr(StolenTime, "_times", staticmethod(lambda: None))
    assert StolenTime().share() is None
