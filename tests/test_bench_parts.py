"""Parts of `double11 bench` that can be checked without running it."""

from __future__ import annotations

import argparse
import sys
import threading

import pytest

from double11.bench import run as bench_run
from double11.bench.run import OfferSchedule, StolenTime


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


class _Limits:
    """resource's open-files limit, as the bench sees it."""

    def __init__(self, soft: int, hard: int) -> None:
        self.soft, self.hard = soft, hard

    def getrlimit(self, which):
        return self.soft, self.hard

    def setrlimit(self, which, limits):
        self.soft, self.hard = limits


@pytest.mark.parametrize("soft, hard, connections, after", [
    (1024, 1_048_576, 2048, 2048 + bench_run.OPEN_FILES_BESIDE_CONNECTIONS),  # raised to what the load needs
    (1_048_576, 1_048_576, 2048, 1_048_576),  # already enough: left alone
    (1024, -1, 4096, 4096 + bench_run.OPEN_FILES_BESIDE_CONNECTIONS),  # no hard limit
])
def test_the_bench_raises_the_open_files_limit_for_its_connections(monkeypatch, soft, hard, connections, after):
    limits = _Limits(soft, hard)
    monkeypatch.setattr(bench_run.resource, "getrlimit", limits.getrlimit)
    monkeypatch.setattr(bench_run.resource, "setrlimit", limits.setrlimit)
    monkeypatch.setattr(bench_run.resource, "RLIM_INFINITY", -1)
    bench_run.allow_open_files(connections)
    assert (limits.soft, limits.hard) == (after, hard)


def test_the_bench_says_when_the_hard_limit_is_too_low(monkeypatch):
    limits = _Limits(1024, 2048)
    monkeypatch.setattr(bench_run.resource, "getrlimit", limits.getrlimit)
    monkeypatch.setattr(bench_run.resource, "setrlimit", limits.setrlimit)
    with pytest.raises(RuntimeError, match="--single-connections"):
        bench_run.allow_open_files(2048)
    assert (limits.soft, limits.hard) == (1024, 2048)  # unchanged


def test_the_offer_schedule_spaces_what_it_gives_out_at_its_rate_until_the_stop():
    schedule = OfferSchedule(start=10.0, stop=11.0, per_s=100)
    assert [schedule.take(40) for _ in range(3)] == pytest.approx([10.0, 10.4, 10.8])
    assert schedule.take(40) is None
    assert schedule.offered == 120  # what was refused was not counted
    assert schedule.take(1) is None


def test_the_offer_schedule_hands_out_each_slot_once_across_threads():
    schedule = OfferSchedule(start=0.0, stop=1e9, per_s=1_000)
    slots: list[float] = []

    def taker() -> None:
        for _ in range(500):
            slots.append(schedule.take(10))

    threads = [threading.Thread(target=taker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(slots) == [10 * k / 1_000 for k in range(2_000)]


def test_the_batch_load_is_refused_before_it_runs_when_its_server_would_not_fit_in_memory():
    gib = 2**30
    bench_run.check_batch_load_fits(900_000, 60, available_bytes=22 * gib)  # the default, on 24 GB
    bench_run.check_batch_load_fits(900_000, 60, available_bytes=None)  # the OS does not say: not checked
    with pytest.raises(ValueError, match=r"91,000,000 checkouts: about 28\.5 GiB.*lower --batch-orders-per-s"):
        bench_run.check_batch_load_fits(1_500_000, 60, available_bytes=22 * gib)
    with pytest.raises(ValueError, match="must be positive"):
        bench_run.check_batch_load_fits(0, 60, available_bytes=22 * gib)


def test_the_bench_says_why_it_will_not_run_and_exits_2(monkeypatch, capsys):
    monkeypatch.setattr(bench_run, "memory_available_bytes", lambda: 2**30)
    args = argparse.Namespace(seconds=60.0, single_connections=None, batch_orders_per_s=None)
    assert bench_run.bench_main(args) == 2
    assert "lower --batch-orders-per-s or --seconds" in capsys.readouterr().err
