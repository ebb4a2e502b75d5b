"""SIGKILL of the NATS node leading a unit's stream while the unit executes batches."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from model import T0, co, small_catalog

from double11 import limits
from double11.cluster.nats_local import LocalNats
from double11.cluster.standby import Standby, state_hash
from double11.cluster.stream_log import stream_info, stream_replay
from double11.cluster.unit import UnitFestival, open_unit

pytestmark = pytest.mark.slow  # starts NATS servers and kills one

_COMMANDS_PER_BATCH = 200
_BATCHES_BEFORE_AND_AFTER = 15


class Load:
    """Executes checkout batches in a loop on a thread of its own, keeping what was acknowledged."""

    def __init__(self, festival: UnitFestival) -> None:
        self.festival = festival
        self.acknowledged: dict[str, int] = {}  # idempotency key -> checkout id
        self.batches = 0
        self.errors: list[BaseException] = []
        self.stop = threading.Event()
        self.progress = threading.Condition()
        self.thread = threading.Thread(target=self.run, name="load")
        self.thread.start()

    def run(self) -> None:
        batch = 0
        while not self.stop.is_set():
            keys = [f"b{batch}-{k}" for k in range(_COMMANDS_PER_BATCH)]
            try:
                answers = self.festival.execute([co(key, [(102, 1)], buyer=1 + k) for k, key in enumerate(keys)],
                                                now_ms=T0 + batch)
            except BaseException as exc:  # noqa: BLE001 (the test says it)
                with self.progress:
                    self.errors.append(exc)
                    self.progress.notify_all()
                return
            with self.progress:
                for key, answer in zip(keys, answers, strict=True):
                    assert answer["status"] == 201, answer
                    self.acknowledged[key] = answer["body"]["checkout"]
                self.batches += 1
                self.progress.notify_all()
            batch += 1

    def wait_batches(self, count: int, timeout_s: float) -> None:
        with self.progress:
            assert self.progress.wait_for(lambda: self.batches >= count or bool(self.errors), timeout_s), \
                f"{self.batches} batches of {count} within {timeout_s} s"
        assert not self.errors, self.errors

    def end(self) -> None:
        self.stop.set()
        self.thread.join()


def test_the_stream_leaders_node_killed_under_load_loses_nothing_acknowledged(nats_cluster: LocalNats,
                                                                             tmp_path: Path):
    unit = open_unit(nats_cluster.urls, "north", tmp_path / "north", catalog=small_catalog(stock={102: 10**7}),
                     clock_start_ms=T0)
    standby = Standby.from_snapshot(nats_cluster.urls, "north", tmp_path / "north")
    load = Load(unit)
    try:
        load.wait_batches(_BATCHES_BEFORE_AND_AFTER, timeout_s=limits.stream_retry_s_max)
        cluster = stream_info(nats_cluster.urls, "north").cluster
        assert cluster is not None and cluster.leader is not None
        leader = cluster.leader
        killed = nats_cluster.node_named(leader)
        nats_cluster.kill(killed)
        at_kill = load.batches
        # the unit serves again: batches go on being acknowledged after the kill (each execute waits at most
        # limits.stream_retry_s_max for the stream, so a unit that did not come back fails here with its error)
        load.wait_batches(at_kill + _BATCHES_BEFORE_AND_AFTER, timeout_s=3 * limits.stream_retry_s_max)
        cluster = stream_info(nats_cluster.urls, "north").cluster
        assert cluster is not None and cluster.leader != leader
    finally:
        load.end()
        log = unit.stream_log
        try:
            # the standby read on through the kill (its reader on another node if its own went)
            assert standby.wait_for(log.next_seq - 1, timeout_s=3 * limits.stream_retry_s_max), standby.error
            assert standby.state_hash() == state_hash(unit.engine)
        finally:
            standby.close()
            unit.close()
    assert not load.errors, load.errors
    nats_cluster.restart(killed)  # back in the cluster: the stream has its three replicas again

    records = log.next_seq - 1
    assert records == load.batches  # every batch executed was acknowledged (none failed: load.errors)
    print(f"records {records}, sent again {log.retries}")
    info = stream_info(nats_cluster.urls, "north")
    assert info.state.last_seq == records and info.state.messages == records  # no record stored twice

    again = open_unit(nats_cluster.urls, "north", tmp_path / "after", catalog=small_catalog(stock={102: 10**7}),
                      clock_start_ms=T0)
    try:
        assert again.engine.stats.checkouts == len(load.acknowledged)
        for key, checkout in list(load.acknowledged.items())[:: max(1, len(load.acknowledged) // 500)]:
            batch, k = (int(x) for x in key[1:].split("-"))
            view = again.checkout(checkout)
            assert view is not None and view["buyer"] == 1 + k and view["created_at"] == T0 + batch
        assert again.sku(102)["reserved"] == len(load.acknowledged)  # type: ignore[index]
        assert again.ledger()["sum"] == 0
        assert again.execute([co("after", [(102, 1)])], now_ms=T0 + 10**6)[0]["status"] == 201
    finally:
        again.close()
    assert [seq for seq, _, _ in stream_replay(nats_cluster.urls, "north", records - 1)] == [records, records + 1]
