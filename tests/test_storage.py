"""The command log and snapshots: what a crash can leave on disk, and recovery from it."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from model import SMALL_SKUS, small_catalog
from model.state import engine_state as engine_state_of

from double11 import Festival
from double11.config import FestivalConfig
from double11.engine import machine
from double11.storage import UnreadableData, engine_state
from double11.storage import log as command_log
from double11.storage import snapshot as snapshots

T0 = 1_510_329_600_000


def _checkout(key: str, sku: int = 101) -> dict:
    return {"op": "checkout", "buyer": 7, "country": "CN", "channel": "mobile",
            "lines": [{"sku": sku, "qty": 1}], "idempotency_key": key}


def _latest(data: Path) -> tuple[int, Path]:
    found = snapshots.latest(data)
    assert found is not None
    return found


def _segments(data: Path) -> list[Path]:
    return [p for _, p in command_log.segments(data)]


def test_a_torn_last_record_is_cut_off_and_the_rest_recovered(tmp_path):
    f = Festival.open(small_catalog(), data_dir=tmp_path)
    first = f.execute([_checkout("a")], T0)
    f.execute([_checkout("b")], T0 + 1)
    f.close()
    last = _segments(tmp_path)[-1]
    size = last.stat().st_size
    with open(last, "r+b") as fh:  # a crash in the middle of writing the second record
        fh.truncate(size - 5)
    g = Festival.open(data_dir=tmp_path)
    assert g.checkout(1) is not None and g.checkout(2) is None
    assert last.stat().st_size < size - 5  # the torn record is gone from disk too
    assert g.execute([_checkout("a")], T0 + 2)[0] == first[0]  # the acknowledged one answers as before
    g.close()


def test_close_with_snapshot_lets_a_restart_skip_the_log(tmp_path):
    f = Festival.open(small_catalog(), data_dir=tmp_path)
    for i in range(5):
        f.execute([_checkout(f"k{i}", sku=101 + i % 3)], T0 + i)
    views = [f.checkout(i) for i in range(1, 7)], f.ledger(), f.stats()["gmv_fen"]
    f.close(snapshot=True)
    seq, _ = _latest(tmp_path)
    assert seq >= 5  # the snapshot covers every batch ...
    assert list(command_log.replay(tmp_path, 0)) == []  # ... so no record is left to replay
    assert [command_log.segment_format(p.read_bytes()) for p in _segments(tmp_path)] == [command_log.LOG_FORMAT]
    g = Festival.open(data_dir=tmp_path)
    assert ([g.checkout(i) for i in range(1, 7)], g.ledger(), g.stats()["gmv_fen"]) == views
    g.execute([_checkout("after")], T0 + 10)
    g.close()
    h = Festival.open(data_dir=tmp_path)  # snapshot + the one record written after it
    assert h.checkout(6)["status"] == "reserved"
    h.close()


def test_the_log_drops_only_whole_pages_it_will_not_append_into_again(tmp_path, monkeypatch):
    """Synced log pages leave the page cache, but never the last, partial one:
    Linux drops a range's partial last page when the range ends at the end of
    the file, and the next append would read it back from disk first."""
    dropped: list[tuple[int, int]] = []
    real_fadvise = command_log.os.posix_fadvise

    def fadvise(fd, offset, length, advice):
        dropped.append((offset, length))
        real_fadvise(fd, offset, length, advice)

    monkeypatch.setattr(command_log.os, "posix_fadvise", fadvise)
    log = command_log.CommandLog(tmp_path, next_seq=1)
    page = command_log._PAGE_BYTES
    for i in range(200):  # records of 1,000 bytes and more: some syncs end mid-page, some past a page
        log.append(T0 + i, bytes(1000 + i))
        log.sync()
        size = log._segment_bytes
        if dropped:
            offset, length = dropped[-1]
            assert offset % page == 0 and (offset + length) % page == 0
            assert offset + length <= size - size % page
    log.close()
    assert dropped and sum(length for _, length in dropped) == (size - size % page)  # all whole pages, once
    assert [seq for seq, _, _ in command_log.replay(tmp_path, 0)] == list(range(1, 201))


# --- format versions ----------------------------------------------------------------


def _festival_with_a_snapshot_and_records(data: Path) -> dict:
    """A festival with a snapshot midway and log records after it; returns its views."""
    f = Festival.open(small_catalog(), data_dir=data)
    for i in range(6):
        f.execute([_checkout(f"k{i}", sku=101 + i % 4)], T0 + i)
        if i == 2:
            f.snapshot()
    f.execute([{"op": "pay", "idempotency_key": "p1", "checkout": 1, "amount_fen": _amount(f, 1)}],
              T0 + 10)
    views = _views(f)
    f.close()
    return views


def _amount(f: Festival, checkout: int) -> int:
    view = f.checkout(checkout)
    assert view is not None
    return view["amount_fen"]


def _views(f: Festival) -> dict:
    return {"checkouts": [f.checkout(i) for i in range(1, 9)], "skus": [f.sku(s) for s in range(101, 107)],
            "ledger": f.ledger(), "gmv": f.stats()["gmv_fen"], "orders": [f.order(i) for i in range(1, 9)]}


def test_a_new_segment_says_its_format_and_one_without_a_header_reads_as_format_1(tmp_path):
    log = command_log.CommandLog(tmp_path, next_seq=1)
    for i in range(3):
        log.append(T0 + i, bytes([i]) * (10 + i))
    log.close()
    (path,) = _segments(tmp_path)
    data = path.read_bytes()
    assert command_log.segment_format(data) == command_log.LOG_FORMAT == 2
    written = [(seq, now, bytes(p)) for seq, now, p in command_log.replay(tmp_path, 0)]
    assert written == [(1 + i, T0 + i, bytes([i]) * (10 + i)) for i in range(3)]
    path.write_bytes(data[command_log._SEGMENT_HEADER.size:])  # as the releases before headers wrote it
    assert command_log.segment_format(path.read_bytes()) == 1
    assert [(seq, now, bytes(p)) for seq, now, p in command_log.replay(tmp_path, 0)] == written


def test_a_segment_of_a_newer_format_is_refused_naming_the_file_and_version(tmp_path):
    _festival_with_a_snapshot_and_records(tmp_path)
    last = _segments(tmp_path)[-1]
    data = bytearray(last.read_bytes())
    data[8:12] = (command_log.LOG_FORMAT + 1).to_bytes(4, "little")
    last.write_bytes(bytes(data))
    with pytest.raises(UnreadableData) as refused:
        Festival.open(data_dir=tmp_path)
    message = str(refused.value)
    assert str(last) in message and f"version {command_log.LOG_FORMAT + 1}" in message
    assert "written by a newer double11" in message
    assert last.read_bytes() == bytes(data)  # refused, not cut off as a torn tail


def test_a_crash_inside_a_new_segments_header_leaves_no_record_and_a_restart_rewrites_it(tmp_path):
    views = _festival_with_a_snapshot_and_records(tmp_path)
    f = Festival.open(data_dir=tmp_path)
    f.snapshot()  # a new, empty segment
    f.close()
    last = _segments(tmp_path)[-1]
    last.write_bytes(last.read_bytes()[:5])  # the crash came while it wrote its header
    g = Festival.open(data_dir=tmp_path)
    assert _views(g) == views
    g.execute([_checkout("after")], T0 + 20)
    g.close()
    assert command_log.segment_format(last.read_bytes()) == command_log.LOG_FORMAT
    h = Festival.open(data_dir=tmp_path)
    assert _views(h)["checkouts"][6]["buyer"] == 7 and _views(h)["checkouts"][:6] == views["checkouts"][:6]
    h.close()


def test_a_snapshot_is_arrays_with_a_schema_read_without_pickle(tmp_path, monkeypatch):
    views = _festival_with_a_snapshot_and_records(tmp_path)
    seq, path = _latest(tmp_path)
    assert path.name.endswith(".d11snap") and snapshots.snapshot_format(path) == snapshots.SNAPSHOT_FORMAT
    with snapshots.open_snapshot(path) as snap:
        assert snap.seq == seq
        tables = {"skus", "checkouts", "lines", "orders", "buyers", "keys", "buyer_balances", "journal"}
        assert tables <= set(snap.schema) and "catalog.sku_id" in snap.schema
        assert snap.dtype("checkouts") == np.dtype(machine.CHECKOUT_FIELDS, align=True)
        assert snap.shape("checkouts") == (3,)  # the three checkouts before it
        assert snap.array("catalog.sku_id").tolist() == sorted(SMALL_SKUS)
        assert snap.scalars["config"]["payment_timeout_ms"] > 0
    monkeypatch.setattr(pickle, "load", _no_pickle)
    monkeypatch.setattr(pickle, "loads", _no_pickle)
    f = Festival.open(data_dir=tmp_path)
    assert _views(f) == views
    f.close()


def _no_pickle(*args, **kwargs):
    raise AssertionError("a format 2 snapshot was read with pickle")


def test_a_snapshot_reads_back_the_engine_it_was_written_from(tmp_path):
    f = Festival.open(small_catalog(), config=FestivalConfig(expected_checkouts=16))
    for i in range(40):  # past the tables' first capacity: they grew
        f.execute([_checkout(f"k{i}", sku=101 + i % 5), {"op": "restock", "idempotency_key": f"r{i}",
                                                          "sku": 101 + i % 6, "qty": 1}], T0 + 700 * i)
    f.execute([{"op": "pay", "idempotency_key": f"p{c}", "checkout": c,
                "amount_fen": _amount(f, c)} for c in range(1, 12)], T0 + 30_000)
    engine = f.engine
    path = engine_state.write(tmp_path, 9, engine)
    back = engine_state.read(path)
    assert engine_state_of(back) == engine_state_of(engine)
    assert {name: t.capacity for name, t in back.tables().items()} == {
        name: t.capacity for name, t in engine.tables().items()}
    assert back.stats.checkouts_per_s.counts == engine.stats.checkouts_per_s.counts
    assert back.config == engine.config and back.catalog.sku_name_at(0) == engine.catalog.sku_name_at(0)
    f.close()


def test_a_snapshot_of_a_newer_format_is_refused_naming_the_file_and_version(tmp_path):
    _festival_with_a_snapshot_and_records(tmp_path)
    _, path = _latest(tmp_path)
    data = bytearray(path.read_bytes())
    data[8:12] = (snapshots.SNAPSHOT_FORMAT + 5).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(UnreadableData, match="written by a newer double11") as refused:
        Festival.open(data_dir=tmp_path)
    assert str(path) in str(refused.value) and f"version {snapshots.SNAPSHOT_FORMAT + 5}" in str(refused.value)


def test_recovery_takes_the_latest_snapshot_of_either_format(tmp_path):
    old = tmp_path / "snapshot-0000000000000007.pickle"
    new = tmp_path / "snapshot-0000000000000005.d11snap"
    old.write_bytes(b"")
    new.write_bytes(b"")
    assert snapshots.latest(tmp_path) == (7, old)
    same = tmp_path / "snapshot-0000000000000007.d11snap"
    same.write_bytes(b"")
    assert snapshots.latest(tmp_path) == (7, same)  # a crash before the old one was removed


def test_a_table_whose_record_gained_a_field_reads_by_name(tmp_path, monkeypatch):
    views = _festival_with_a_snapshot_and_records(tmp_path)
    f = Festival.open(data_dir=tmp_path)
    f.close(snapshot=True)
    monkeypatch.setattr(machine, "CHECKOUT_FIELDS", [("coupon", "i8"), *machine.CHECKOUT_FIELDS])
    _, path = _latest(tmp_path)
    back = engine_state.read(path)
    rows = back.checkouts.rows
    assert (rows.dtype.names or ())[0] == "coupon" and (rows["coupon"] == 0).all()
    assert rows["amount"].tolist() == [c["amount_fen"] for c in views["checkouts"] if c is not None]
    monkeypatch.setattr(machine, "CHECKOUT_FIELDS", machine.CHECKOUT_FIELDS[2:])  # and one that lost a field
    with pytest.raises(UnreadableData, match="table checkouts"):
        engine_state.read(path)
