"""A unit's snapshots in the cluster's object store, and its stream trimmed
below the oldest kept (double11/cluster/snapshots.py), over real NATS."""

from __future__ import annotations

import hashlib
import shutil
import threading
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from model import T0
from nats.aio.client import Client
from unit_trades import SKUS, UnitTrades, festival_view, roomy_catalog

from double11 import limits
from double11.cluster import unit as unit_module
from double11.cluster.lease import UnitLease
from double11.cluster.nats_local import LocalNats
from double11.cluster.snapshots import (
    BUCKET,
    PublishedSnapshot,
    fetch_latest,
    publish_snapshot,
    put_snapshot,
    unit_snapshots,
)
from double11.cluster.standby import Standby, state_hash
from double11.cluster.stream_log import StreamLog, StreamTrimmed, ask_cluster, stream_info
from double11.cluster.unit import UnitFestival, open_unit
from double11.service.festival import Festival
from double11.storage import snapshot as snapshot_files

pytestmark = pytest.mark.slow  # starts NATS servers

_WAIT_S = 60  # a bound on a standby catching up, not a speed
_AHEAD_OF_THE_CLOCK_MS = 6 * 3_600_000


def _trading(urls: list[str], unit: str, folder: Path,
             lease: UnitLease | None = None) -> tuple[UnitTrades, UnitFestival]:
    """A new unit, trading beside a festival in memory taking the same commands (the answers must agree)."""
    festival = open_unit(urls, unit, folder, catalog=roomy_catalog(), clock_start_ms=T0, lease=lease)
    trades = UnitTrades({unit: festival}, Festival.open(roomy_catalog(), clock_start_ms=T0), seed=31)
    # the batches' times run well ahead of the festival's clock (T0 + the test's real time), so
    # a promotion's fence record, stamped max(clock, last batch's time), expires no checkout
    trades.advance(_AHEAD_OF_THE_CLOCK_MS)
    return trades, festival


def _last(festival: UnitFestival) -> int:
    return festival.stream_log.next_seq - 1


def _seen(festival: Festival, now_ms: int) -> tuple[Any, ...]:
    """The state's digest and what readers see of it."""
    engine = festival.engine
    checkouts = [festival.checkout(c) for c in range(1, engine.stats.checkouts + 1)]
    orders = [festival.order(o) for o in range(1, engine.stats.orders + 1)]
    return (state_hash(engine), festival_view(festival, now_ms), festival.ledger(), checkouts, orders,
            [festival.sku(s) for s in SKUS])


def _opens_elsewhere(urls: list[str], unit: str, folder: Path, snapshot_seq: int, seen: tuple[Any, ...],
                     last: int, now_ms: int) -> None:
    """A new machine (an empty folder, no catalog) opens the unit from the object
    store's snapshot at snapshot_seq and the stream after it, as it was."""
    elsewhere = open_unit(urls, unit, folder)
    try:
        assert elsewhere.snapshot_seq == snapshot_seq and _last(elsewhere) == last
        assert _seen(elsewhere, now_ms) == seen
    finally:
        elsewhere.close()


def _first_seq(urls: list[str], unit: str) -> int:
    return int(stream_info(urls, unit).state.first_seq)


def test_a_new_machine_opens_from_the_object_store_and_the_trimmed_stream(nats_cluster: LocalNats, tmp_path: Path):
    urls = nats_cluster.urls
    trades, unit = _trading(urls, "east", tmp_path / "east")
    try:
        trades.coupons()
        trades.round()
        published = publish_snapshot(unit)
        assert published.seq == _last(unit) > 2 and published.kept == [published.seq]
        assert published.stream_first_seq == _first_seq(urls, "east") == published.seq + 1  # trimmed below it
        trades.round()
        trades.round()
        end = trades.advance(1000)
        before, last = _seen(unit, end), _last(unit)
    finally:
        unit.close()
    assert last > published.seq + 1

    # a new machine: an empty folder, no catalog; the object store's snapshot, then the stream after it
    elsewhere = open_unit(urls, "east", tmp_path / "elsewhere")
    try:
        assert elsewhere.snapshot_seq == published.seq and _last(elsewhere) == last
        assert _seen(elsewhere, end) == before and elsewhere.ledger()["sum"] == 0
        assert (tmp_path / "elsewhere" / "clock.json").read_text() == (tmp_path / "east" / "clock.json").read_text()
        trades.units["east"] = elsewhere
        trades.round()  # it goes on where the stream ends, answering as the reference does
        assert _last(elsewhere) > last
    finally:
        elsewhere.close()


def test_the_latest_snapshots_are_kept_and_the_stream_trimmed_below_the_oldest(nats_cluster: LocalNats,
                                                                               tmp_path: Path):
    urls = nats_cluster.urls
    trades, unit = _trading(urls, "west", tmp_path / "west")
    try:
        published = []
        for _ in range(3):
            trades.round()
            published.append(publish_snapshot(unit, kept=2))
        first, second, third = (p.seq for p in published)
        assert first < second < third == _last(unit)
        assert published[1].kept == [first, second] and published[1].stream_first_seq == first + 1
        assert unit_snapshots(urls, "west") == published[2].kept == [second, third]
        assert _first_seq(urls, "west") == second + 1

        again = publish_snapshot(unit, kept=2)  # nothing new since: the same snapshot, nothing moves
        assert (again.seq, again.kept, again.stream_first_seq) == (third, [second, third], second + 1)

        only = publish_snapshot(unit, kept=1)  # the stream trimmed to its end: no record left in it
        assert only.kept == [third] and unit_snapshots(urls, "west") == [third]
        info = stream_info(urls, "west").state
        assert (info.first_seq, info.last_seq, info.messages) == (third + 1, third, 0)
        trades.round()  # the next record lands after the trimmed ones
        assert _last(unit) > third and _first_seq(urls, "west") == third + 1
        end = trades.advance(1000)
        before, last = _seen(unit, end), _last(unit)
        with pytest.raises(ValueError, match="kept must be at least 1"):
            publish_snapshot(unit, kept=0)
    finally:
        unit.close()
    _opens_elsewhere(urls, "west", tmp_path / "elsewhere", third, before, last, end)


def test_snapshots_published_while_the_unit_trades(nats_cluster: LocalNats, tmp_path: Path):
    """As the node publishes: from a thread of its own, the unit taking commands meanwhile."""
    urls = nats_cluster.urls
    trades, unit = _trading(urls, "busy", tmp_path / "busy")
    published: list[PublishedSnapshot] = []
    failed: list[BaseException] = []

    def publish() -> None:
        try:
            for _ in range(3):
                published.append(publish_snapshot(unit))
        except BaseException as exc:  # said by the test below
            failed.append(exc)

    publisher = threading.Thread(target=publish)
    try:
        trades.round()
        publisher.start()
        while publisher.is_alive():
            trades.round()
        publisher.join()
        assert not failed, failed
        positions = [p.seq for p in published]
        assert positions == sorted(positions) and positions[0] > 0
        kept = sorted(set(positions))[-limits.unit_snapshots_kept:]
        assert unit_snapshots(urls, "busy") == kept and _first_seq(urls, "busy") == kept[0] + 1
        trades.round()
        end = trades.advance(1000)
        before, last = _seen(unit, end), _last(unit)
    finally:
        unit.close()
    _opens_elsewhere(urls, "busy", tmp_path / "elsewhere", positions[-1], before, last, end)


def _drop_bucket(urls: list[str]) -> None:
    """The object store lost (an operator's mistake): only the trimmed stream is left."""
    async def drop(nc: Client) -> None:
        await nc.jetstream().delete_object_store(BUCKET)

    ask_cluster(urls, "double11-test-drop", drop)


def _looked_for_again_briefly(monkeypatch: pytest.MonkeyPatch) -> None:
    """open_unit looks for the object store's snapshot again for stream_connect_s_max
    before it refuses a trimmed stream: a cluster started again may not show its
    bucket yet.  The bucket dropped here never comes back, so unit.py alone (the
    connections, made elsewhere, keep the real limit) looks again for 2 s: the same
    loop, tried again and then refused, without the whole wait for each refusal."""
    monkeypatch.setattr(unit_module, "limits", types.SimpleNamespace(**{**vars(limits), "stream_connect_s_max": 2}))


def test_a_stream_trimmed_beyond_the_snapshot_held_is_refused(nats_cluster: LocalNats, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch):
    urls = nats_cluster.urls
    trades, unit = _trading(urls, "north", tmp_path / "north")
    shutil.copytree(tmp_path / "north", tmp_path / "old")  # the first snapshot, at record 0
    try:
        trades.round()
        trades.round()
        published = publish_snapshot(unit, kept=1)
    finally:
        unit.close()
    first = published.seq + 1
    assert _first_seq(urls, "north") == first

    # while the object store has the newer snapshot, an old folder catches up from it
    caught_up = tmp_path / "caught-up"
    shutil.copytree(tmp_path / "old", caught_up)
    assert fetch_latest(urls, "north", caught_up) == published.seq
    assert [seq for seq, _ in snapshot_files.numbered(caught_up, "snapshot", ".d11snap")] == [0, published.seq]

    _drop_bucket(urls)
    _looked_for_again_briefly(monkeypatch)
    gap = f"starts at record {first}: records 1 to {first - 1}, which follow the snapshot at record 0 "
    with pytest.raises(StreamTrimmed, match=gap + r"\(unit north's latest, in .*old or in the object store") as refused:
        open_unit(urls, "north", tmp_path / "old")
    assert (refused.value.snapshot_seq, refused.value.first_seq) == (0, first)
    assert f"replay needs a snapshot at record {first - 1} or later" in str(refused.value)
    with pytest.raises(StreamTrimmed, match=gap):
        Standby.from_snapshot(urls, "north", tmp_path / "old")
    with pytest.raises(StreamTrimmed, match=gap):  # a new machine with a catalog: a new festival at record 0
        open_unit(urls, "north", tmp_path / "new", catalog=roomy_catalog(), clock_start_ms=T0)
    assert fetch_latest(urls, "north", tmp_path / "old") == 0  # nothing in the folder was touched
    assert unit_snapshots(urls, "north") == []


def test_a_standby_from_the_object_store_follows_and_promotes(nats_cluster: LocalNats, tmp_path: Path):
    urls = nats_cluster.urls
    lease = UnitLease(urls, "south")
    lease.acquire()
    trades, primary = _trading(urls, "south", tmp_path / "primary", lease=lease)
    standby: Standby | None = None
    try:
        trades.coupons()
        trades.round()
        published = publish_snapshot(primary)
        trades.round()
        standby = Standby.from_snapshot(urls, "south", tmp_path / "standby")  # an empty folder: a new machine
        assert standby.snapshot_seq == published.seq
        for _ in range(3):
            assert standby.wait_for(_last(primary), _WAIT_S), standby.error
            assert standby.state_hash() == state_hash(primary.engine)
            trades.round()
        assert standby.wait_for(_last(primary), _WAIT_S), standby.error
        end = trades.advance(1000)
        before, last = _seen(primary, end), _last(primary)
        assert standby.state_hash() == before[0]
    finally:
        primary.close()
        lease.release()
        lease.close()
    taking = UnitLease(urls, "south")
    try:
        assert standby is not None
        promoted = standby.promote(taking, tmp_path / "standby", wait_s=_WAIT_S)
        try:
            assert _last(promoted) == last + 1  # its fence record
            assert _seen(promoted, end) == before
            assert promoted.clock.to_dict() == primary.clock.to_dict()  # the unit's clock came with the snapshot
            trades.units["south"] = promoted
            trades.round()
            assert _last(promoted) > last + 1
        finally:
            promoted.close()
    finally:
        taking.release()
        taking.close()


def test_the_object_store_serves_a_snapshot_with_a_node_gone(nats_cluster: LocalNats, tmp_path: Path):
    urls = nats_cluster.urls
    trades, unit = _trading(urls, "up", tmp_path / "up")
    try:
        trades.round()
        published = publish_snapshot(unit)
        trades.round()
        end = trades.advance(1000)
        before, last = _seen(unit, end), _last(unit)
    finally:
        unit.close()

    async def bucket_leader(nc: Client) -> str:
        return str((await nc.jetstream().stream_info(f"OBJ_{BUCKET}")).cluster.leader)  # type: ignore[union-attr]

    nats_cluster.kill(nats_cluster.node_named(ask_cluster(urls, "double11-test-leader", bucket_leader)))
    _opens_elsewhere(urls, "up", tmp_path / "elsewhere", published.seq, before, last, end)


def _digest(path: Path) -> str:
    digest = hashlib.blake2b()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def test_a_snapshot_of_hundreds_of_megabytes_goes_through_the_object_store(nats_cluster: LocalNats, tmp_path: Path):
    urls, size = nats_cluster.urls, 300 * 1024 * 1024
    StreamLog(urls, "big", 1).close()  # the unit's stream (empty: nothing to trim)
    filler = np.random.default_rng(7).integers(0, 256, size=size, dtype=np.uint8)  # no run the transfer could shrink
    (tmp_path / "primary").mkdir()
    written = snapshot_files.write(tmp_path / "primary", 9, snapshot_files.State({"note": "filler"}, {"x": filler}))
    del filler
    clock = '{"start_ms": 1, "speedup": 1.0, "real_start_ms": 2}'
    published = put_snapshot(urls, "big", tmp_path / "primary", clock)
    assert published.seq == 9 and published.size_bytes > size
    assert published.size_bytes > 30 * limits.unit_snapshot_chunk_bytes  # it went in many chunks
    assert fetch_latest(urls, "big", tmp_path / "elsewhere") == 9
    fetched = tmp_path / "elsewhere" / written.name
    assert _digest(fetched) == _digest(written)
    assert (tmp_path / "elsewhere" / "clock.json").read_text() == clock
    assert fetch_latest(urls, "big", tmp_path / "elsewhere") == 9  # held already: not fetched again
