"""The command log and snapshots: what a crash can leave on disk, and recovery from it."""

from __future__ import annotations

from pathlib import Path

from model import small_catalog

from double11 import Festival
from double11.storage import log as command_log
from double11.storage import snapshot as snapshots

T0 = 1_510_329_600_000


def _checkout(key: str, sku: int = 101) -> dict:
    return {"op": "checkout", "buyer": 7, "country": "CN", "channel": "mobile",
            "lines": [{"sku": sku, "qty": 1}], "idempotency_key": key}


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


def test_a_corrupt_record_ends_replay_there(tmp_path):
    f = Festival.open(small_catalog(), data_dir=tmp_path)
    f.execute([_checkout("a")], T0)
    f.execute([_checkout("b")], T0 + 1)
    f.close()
    last = _segments(tmp_path)[-1]
    data = bytearray(last.read_bytes())
    data[-3] ^= 0xFF  # a flipped bit in the last record's payload: its CRC no longer matches
    last.write_bytes(bytes(data))
    g = Festival.open(data_dir=tmp_path)
    assert g.checkout(1) is not None and g.checkout(2) is None
    g.close()


def test_close_with_snapshot_lets_a_restart_skip_the_log(tmp_path):
    f = Festival.open(small_catalog(), data_dir=tmp_path)
    for i in range(5):
        f.execute([_checkout(f"k{i}", sku=101 + i % 3)], T0 + i)
    views = [f.checkout(i) for i in range(1, 7)], f.ledger(), f.stats()["gmv_fen"]
    f.close(snapshot=True)
    seq, _ = snapshots.latest(tmp_path)
    assert seq >= 5  # the snapshot covers every batch ...
    assert all(p.stat().st_size == 0 for p in _segments(tmp_path))  # ... so no record is left to replay
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
