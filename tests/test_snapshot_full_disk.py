"""A full disk during a snapshot (the shutdown one too) loses nothing: the
failed snapshot leaves no file behind, the previous snapshot and every log
segment stay as they were, the festival goes on, and the next start
recovers every acknowledged command.  Faults injected at each step of a
snapshot's write, and real ones on a small tmpfs (`small_tmpfs`, conftest)."""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from model import T0, co, pay, small_catalog

from double11 import Festival
from double11.catalog.generate import generate_catalog
from double11.storage import log as command_log
from double11.storage import snapshot as snapshots
from double11.storage.snapshot import SnapshotNotWritten

SNAPSHOT_FAILED = "the snapshot could not be written (No space left on device): the previous snapshot at record"
# a catalog whose snapshot is megabytes while a few hundred commands' log is kilobytes
BIG_CATALOG = {"merchants": 2000, "skus": 20000, "seed": 11}
LOG_ROOM_BYTES = 512 * 1024  # what a full disk still leaves: the log's records fit, a snapshot does not


# ------------------------------------------------------------------ helpers
def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def _state(scale: int) -> snapshots.State:
    return snapshots.State(scalars={"scale": scale}, arrays={
        "a": np.arange(1000 * scale, dtype=np.int64),
        "b": np.full((30, 7), scale, dtype=np.int32),
        "empty": np.zeros(0, dtype=np.float64),
        "records": np.zeros(50, dtype=[("x", "<i8"), ("y", "<u2")]),
    })


class DiskFull:
    """Makes the n-th call of one os function (from the moment it is armed)
    fail with ENOSPC, as a disk that fills up there would; a write may first
    be short, as one that fills up in the middle of it is."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str, nth: int, short_first: bool = False) -> None:
        self.monkeypatch, self.name, self.nth, self.short_first = monkeypatch, name, nth, short_first
        self.real = getattr(os, name)
        self.calls = 0
        self.failed = False

    def _call(self, *args):
        self.calls += 1
        if self.calls == self.nth - 1 and self.short_first and self.name == "write":
            fd, data = args
            return self.real(fd, memoryview(data)[: max(1, len(data) // 2)])
        if self.calls == self.nth:
            self.failed = True
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.real(*args)

    @contextmanager
    def armed(self) -> Iterator[DiskFull]:
        with self.monkeypatch.context() as m:
            m.setattr(os, self.name, self._call)
            yield self


def _checkouts(f: Festival, skus: list[int], first: int, count: int) -> list[dict]:
    """`count` checkouts of one line each, then a payment for every other one
    that was reserved; the answers, as acknowledged."""
    answers = []
    for i in range(first, first + count):
        answers += f.execute([co(f"c{i}", [(skus[i % len(skus)], 1)], buyer=1 + i % 50)], T0 + i)
    for i, answer in enumerate(answers[::2]):
        body = answer["body"]
        if answer["status"] == 201 and body.get("status") == "reserved":
            answers += f.execute([pay(f"p{first}-{i}", body["checkout"], body["amount_fen"])], T0 + first + count + i)
    return answers


def _views(f: Festival, skus: list[int]) -> dict:
    stats = f.stats()
    checkouts = stats["checkouts"]
    return {"stats": {k: stats[k] for k in ("checkouts", "orders", "payments", "gmv_fen")},
            "checkouts": [f.checkout(i) for i in range(1, checkouts + 2)],
            "orders": [f.order(i) for i in range(1, stats["orders"] + 2)],
            "skus": [f.sku(s) for s in skus], "ledger": f.ledger()}


def _fill(directory: Path, leave_bytes: int, name: str = "ballast") -> Path:
    """Another program's file that fills the disk, but for `leave_bytes`."""
    fs = os.statvfs(directory)
    size = fs.f_bavail * fs.f_frsize - leave_bytes
    path = directory / name
    with open(path, "wb") as f:
        chunk = bytes(1 << 20)
        while size > 0:
            size -= f.write(chunk[: min(size, len(chunk))])
    return path


def _fill_to_the_last_byte(directory: Path, name: str) -> Path:
    path = directory / name
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(bytes(4096))
        except OSError as e:
            assert e.errno == errno.ENOSPC
    return path


def _free_bytes(directory: Path) -> int:
    fs = os.statvfs(directory)
    return fs.f_bavail * fs.f_frsize


def _failed_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "double11.service" and r.levelno == logging.ERROR and SNAPSHOT_FAILED in r.getMessage()]


# ------------------------------------------------------------------ snapshot.write, step by step
STEPS = [("open", 1, False), ("write", 1, False), ("write", 3, False), ("write", 4, True), ("ftruncate", 1, False),
         ("fsync", 1, False), ("replace", 1, False), ("fsync", 2, False)]


@pytest.mark.parametrize(("step", "nth", "short_first"), STEPS,
                         ids=[f"{s}{n}{'-short' if short else ''}" for s, n, short in STEPS])
def test_a_snapshot_write_that_meets_a_full_disk_leaves_the_folder_as_it_was(tmp_path, monkeypatch, step, nth,
                                                                              short_first):
    previous = snapshots.write(tmp_path, 3, _state(1))
    (tmp_path / "log-0000000000000001.d11").write_bytes(b"the log, untouched")
    before = _files(tmp_path)
    with DiskFull(monkeypatch, step, nth, short_first).armed() as fault, pytest.raises(OSError) as raised:
        snapshots.write(tmp_path, 9, _state(2))
    assert fault.failed and raised.value.errno == errno.ENOSPC
    assert _files(tmp_path) == before  # no temporary file, no new snapshot; the previous one as it was
    assert snapshots.latest(tmp_path) == (3, previous)
    with snapshots.open_snapshot(previous) as snap:
        assert snap.scalars == {"scale": 1} and snap.array("a").tolist() == list(range(1000))
    written = snapshots.write(tmp_path, 9, _state(2))  # with room again: written, and the old one goes
    assert snapshots.latest(tmp_path) == (9, written) and not previous.exists()


def test_the_same_snapshot_written_again_stays_when_the_rewrite_fails_after_its_rename(tmp_path, monkeypatch):
    """No command since the last snapshot: the same sequence number's file is
    replaced; if the folder's sync then fails, that file is still the one
    snapshot there is (its bytes are on disk), so it is not removed."""
    path = snapshots.write(tmp_path, 5, _state(1))
    with DiskFull(monkeypatch, "fsync", 2).armed(), pytest.raises(OSError):
        snapshots.write(tmp_path, 5, _state(1))
    assert snapshots.latest(tmp_path) == (5, path)
    with snapshots.open_snapshot(path) as snap:
        assert snap.array("b").tolist() == _state(1).arrays["b"].tolist()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_a_temporary_file_a_crash_left_goes_with_the_next_snapshot(tmp_path):
    snapshots.write(tmp_path, 3, _state(1))
    left = tmp_path / "snapshot-0000000000000004.tmp"  # a crash in the middle of a snapshot
    left.write_bytes(bytes(10_000))
    assert snapshots.latest(tmp_path)[0] == 3  # never read as a snapshot
    path = snapshots.write(tmp_path, 6, _state(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


# ------------------------------------------------------------------ a festival's snapshot, faults injected
def test_a_festival_whose_snapshot_fails_keeps_its_log_and_serves_on(tmp_path, monkeypatch, caplog):
    skus = [101, 102, 103, 104, 105]
    f = Festival.open(small_catalog({s: 1000 for s in skus}), data_dir=tmp_path, clock_start_ms=T0)
    _checkouts(f, skus, 0, 6)
    f.snapshot()
    _checkouts(f, skus, 6, 6)
    last_snapshot = f.snapshot_seq
    before = _files(tmp_path)
    for step, nth in (("write", 2), ("fsync", 1), ("replace", 1)):
        with DiskFull(monkeypatch, step, nth).armed(), pytest.raises(SnapshotNotWritten) as raised:
            f.snapshot()
        assert raised.value.errno == errno.ENOSPC and str(raised.value).startswith(SNAPSHOT_FAILED)
        assert _files(tmp_path) == before  # no segment started, none dropped, the previous snapshot kept
        assert f.snapshot_seq == last_snapshot
    lines = _failed_lines(caplog)
    assert len(lines) == 3 and lines[0] == f"{SNAPSHOT_FAILED} {last_snapshot} and the log keep everything (a " \
        f"start replays the log after record {last_snapshot}); free space in {tmp_path} for the next snapshot"
    _checkouts(f, skus, 12, 6)  # it goes on serving; its records go to the same segment
    acknowledged = _views(f, skus)
    with DiskFull(monkeypatch, "fsync", 1).armed() as fault:
        f.close(snapshot=True)  # said, not raised
    assert fault.failed and len(_failed_lines(caplog)) == 4
    assert f.durability.behind_snapshot()  # what `double11 serve`'s engine exits 1 for
    assert [p for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []
    assert snapshots.latest(tmp_path)[0] == last_snapshot
    g = Festival.open(data_dir=tmp_path)
    assert _views(g, skus) == acknowledged and acknowledged["ledger"]["sum"] == 0
    assert acknowledged["stats"]["payments"] > 0
    g.close(snapshot=True)  # with room: the snapshot now covers everything
    assert snapshots.latest(tmp_path)[0] > last_snapshot and list(command_log.replay(tmp_path, 0)) == []
    h = Festival.open(data_dir=tmp_path)
    assert _views(h, skus) == acknowledged
    h.close()


def test_a_segment_that_cannot_start_after_a_written_snapshot_stops_commands_until_reopened(tmp_path,
                                                                                          monkeypatch):
    """The snapshot is durable but the log's next segment cannot be created:
    no record can go anywhere, so commands are refused; the old segments are
    kept, and the folder opened again has everything."""
    from double11.errors import Double11Error

    skus = [101, 102, 103]
    f = Festival.open(small_catalog({s: 100 for s in skus}), data_dir=tmp_path, clock_start_ms=T0)
    _checkouts(f, skus, 0, 6)
    acknowledged = _views(f, skus)
    segments_before = [p.name for _, p in command_log.segments(tmp_path)]
    seq = f.log.next_seq - 1
    # opens: the snapshot's temporary file, the folder (its sync), then the new segment
    with DiskFull(monkeypatch, "open", 3).armed() as fault:
        f.snapshot()
    assert fault.failed and f.log_failure is not None and snapshots.latest(tmp_path)[0] == seq
    assert [p.name for _, p in command_log.segments(tmp_path)] == segments_before  # none dropped, none started
    with pytest.raises(Double11Error):
        f.execute([co("refused", [(101, 1)])], T0 + 100)
    f.close(snapshot=True)
    g = Festival.open(data_dir=tmp_path)
    assert _views(g, skus) == acknowledged
    assert g.execute([co("after", [(101, 1)])], T0 + 200)[0]["status"] == 201
    g.close()


def test_a_first_snapshot_that_cannot_be_written_stops_the_opening(tmp_path, monkeypatch, caplog):
    """A new folder's first snapshot holds its catalog and config: without it
    there is no festival to go on with, and the opener says so (one line)."""
    with DiskFull(monkeypatch, "replace", 1).armed(), pytest.raises(SnapshotNotWritten) as raised:
        Festival.open(small_catalog(), data_dir=tmp_path, clock_start_ms=T0)
    assert raised.value.errno == errno.ENOSPC
    assert str(raised.value).startswith("the first snapshot could not be written (No space left on device)")
    assert snapshots.latest(tmp_path) is None and [p for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []
    assert _failed_lines(caplog) == []  # the opener's line is the one


# ------------------------------------------------------------------ a real full disk
def test_a_full_disk_during_snapshots_loses_nothing(small_tmpfs, caplog):
    data = small_tmpfs(16)
    catalog = generate_catalog(**BIG_CATALOG)
    skus = catalog.sku_id[:40].tolist()
    f = Festival.open(catalog, data_dir=data, clock_start_ms=T0)
    first = snapshots.latest(data)
    assert first is not None
    first_snapshot_seq, first_snapshot = first
    assert first_snapshot.stat().st_size > 4 * LOG_ROOM_BYTES  # so that it cannot fit what the log leaves
    _checkouts(f, skus, 0, 40)
    ballast = _fill(data, LOG_ROOM_BYTES)
    _checkouts(f, skus, 40, 40)  # the log still has room
    before, free = _files(data), _free_bytes(data)
    with pytest.raises(SnapshotNotWritten) as raised:
        f.snapshot()
    assert raised.value.errno == errno.ENOSPC
    assert _files(data) == before and _free_bytes(data) == free  # its space given back, nothing else changed
    _checkouts(f, skus, 80, 20)  # and the festival goes on
    acknowledged = _views(f, skus)
    f.close(snapshot=True)
    assert len(_failed_lines(caplog)) == 2 and f.durability.behind_snapshot()
    assert snapshots.latest(data) == (first_snapshot_seq, first_snapshot)
    assert acknowledged["ledger"]["sum"] == 0 and acknowledged["stats"]["payments"] > 0

    # the next start, space still short: recovery writes nothing but a new segment's header
    g = Festival.open(data_dir=data)
    assert _views(g, skus) == acknowledged
    _checkouts(g, skus, 100, 10)  # records in that segment: the start after this one needs a new one
    acknowledged = _views(g, skus)
    g.close(snapshot=True)
    assert len(_failed_lines(caplog)) == 3

    # a disk full to the last byte: that header cannot be written; the start says so and changes nothing
    segments = {p.name: p.read_bytes() for _, p in command_log.segments(data)}
    last_ballast = _fill_to_the_last_byte(data, "ballast-2")
    with pytest.raises(OSError) as refused:
        Festival.open(data_dir=data)
    assert refused.value.errno == errno.ENOSPC
    for name, content in segments.items():
        assert (data / name).read_bytes() == content
    assert snapshots.latest(data) == (first_snapshot_seq, first_snapshot)

    # room again: everything is there, and the closing snapshot is written this time
    ballast.unlink()
    last_ballast.unlink()
    h = Festival.open(data_dir=data)
    assert _views(h, skus) == acknowledged
    h.close(snapshot=True)
    assert snapshots.latest(data)[0] > first_snapshot_seq and not first_snapshot.exists()
    k = Festival.open(data_dir=data)
    assert _views(k, skus) == acknowledged
    k.close()
