"""The command log: every batch, as applied, on disk before anyone hears of it.

A record is [u32 payload bytes][u32 crc32][u64 sequence][i64 time ms][payload],
the payload being the batch's wire bytes.  Time is in the record because the
state machine never reads a clock: replaying the log reproduces the state.
A crash can leave a torn last record; it was never fsynced, so never
acknowledged, and recovery cuts it off; an unreadable record with intact
records after it is damage, which recovery refuses (storage/damage.py).
The log is split into segments, one per snapshot, so that old segments can
be dropped once a snapshot covers them.

Format versions.  A segment starts with a header, [8 bytes magic][u32 format
version][u32 zero], so that a later release can change the record layout and
still read the segments written before it; a segment without one is format 1
(the releases before headers, whose records are the same).  A version above
LOG_FORMAT is refused, naming the file.  The payload carries its own version
(the batch wire format's header), checked when the batch is decoded.
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from double11.storage import fsync_dir, newer_format, numbered
from double11.storage.damage import Damage, LogDamaged, TornTail

_RECORD = struct.Struct("<IIQq")
LOG_FORMAT = 2  # 1: no segment header; 2: the header below, records unchanged
_SEGMENT_HEADER = struct.Struct("<8sII")
# as a format 1 record's length this would be 1.7 GB, far past any batch: the two never mix up
_SEGMENT_MAGIC = b"d11-log\n"
_PAGE_BYTES = mmap.PAGESIZE
_SEQ_AT = 8  # a record's sequence number field: after its length and checksum
_SCAN_CHUNK_BYTES = 1 << 24  # searched for intact records at a time, past damage (damage is rare, the next one near)
_logger = logging.getLogger("double11.storage")


def _segment_name(first_seq: int) -> str:
    return f"log-{first_seq:016d}.d11"


def segments(directory: Path) -> list[tuple[int, Path]]:
    return numbered(directory, "log", ".d11")


class LogFiles:
    """The calls the log writes its records with.  Tests put one that fails
    at a chosen moment in a log's `files` (a failing write or sync, as a full
    or broken disk gives), instead of preloading a library into the process."""

    write = staticmethod(os.write)
    fdatasync = staticmethod(os.fdatasync)


class CommandLog:
    def __init__(self, directory: Path, next_seq: int, files: LogFiles | None = None):
        self.directory = directory
        self.next_seq = next_seq
        self.files = files or LogFiles()
        self._fd = -1
        self._segment_bytes = 0  # written to the current segment
        self._synced_bytes = 0  # of those, on disk (a failed write or sync is cut back to here)
        self._uncached_bytes = 0  # of those, synced and dropped from the page cache
        self.bytes_written = 0
        self.syncs = 0
        self.start_segment(next_seq)

    def start_segment(self, first_seq: int) -> None:
        if self._fd >= 0:
            self.files.fdatasync(self._fd)
            os.close(self._fd)
            self._fd = -1
        path = self.directory / _segment_name(first_seq)
        self.first_seq = first_seq
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        size = os.fstat(self._fd).st_size
        if size == 0:  # a new segment (or one a crash left empty): it says its format first
            size = self._write_all(_SEGMENT_HEADER.pack(_SEGMENT_MAGIC, LOG_FORMAT, 0))
            self.files.fdatasync(self._fd)
        self._segment_bytes = self._synced_bytes = size
        self._uncached_bytes = size - size % _PAGE_BYTES  # dropped a whole page at a time
        fsync_dir(self.directory)

    def append(self, now_ms: int, payload: bytes) -> int:
        """Writes one record (not yet durable); returns its sequence number."""
        seq = self.next_seq
        head = struct.pack("<Qq", seq, now_ms)
        crc = zlib.crc32(payload, zlib.crc32(head))
        self._segment_bytes += self._write_all(_RECORD.pack(len(payload), crc, seq, now_ms) + payload)
        self.next_seq = seq + 1
        return seq

    def _write_all(self, data: bytes) -> int:
        view = memoryview(data)
        while view:  # a write can be short (a disk filling up): the rest, or its error, comes next
            view = view[self.files.write(self._fd, view):]
        self.bytes_written += len(data)
        return len(data)

    def sync(self) -> None:
        """Makes every record appended so far durable (group commit: one call covers many)."""
        end = self._segment_bytes
        self.files.fdatasync(self._fd)
        self._synced_bytes = end
        self.syncs += 1
        # The log is read back only at recovery, so its pages leave the page
        # cache once on disk: a festival writes gigabytes of it, which would
        # otherwise push the machine into reclaiming memory, and a write that
        # has to reclaim stalls every batch waiting on it.  Whole pages only:
        # Linux drops a range's last partial page when it ends at the end of
        # the file, and the next append into that page would read it back
        # from disk first, stalling the engine on every group commit (both
        # measured: docs/performance.md, "Measurements behind the constants").
        whole_pages_end = end - end % _PAGE_BYTES
        if whole_pages_end > self._uncached_bytes:
            os.posix_fadvise(self._fd, self._uncached_bytes, whole_pages_end - self._uncached_bytes,
                             os.POSIX_FADV_DONTNEED)
            self._uncached_bytes = whole_pages_end

    def unwritable(self) -> str | None:
        return None  # a folder's log: a failing disk is found by writing

    def cut_back(self) -> str:
        """After a failed write or sync: the segment cut back to its last
        synced record, so that neither a torn record nor one whose sync
        failed (its bytes may or may not have reached the disk) can come
        back at a restart; the next record will go to a fresh segment (the
        festival reopens).  Says what it did."""
        path = self.directory / _segment_name(self.first_seq)
        try:
            os.ftruncate(self._fd, self._synced_bytes)
            os.fsync(self._fd)
        except OSError as exc:
            return f"{path} could not be cut back to its last synced record at byte {self._synced_bytes} ({exc})"
        finally:
            os.close(self._fd)
            self._fd = -1
        return f"{path} cut back to its last synced record, at byte {self._synced_bytes}"

    def close(self) -> None:
        if self._fd >= 0:
            self.files.fdatasync(self._fd)
            os.close(self._fd)
            self._fd = -1

    def drop_segments_before(self, first_seq: int) -> None:
        for start, path in segments(self.directory):
            if start < first_seq:
                path.unlink()


def replay(directory: Path, after_seq: int) -> Iterator[tuple[int, int, memoryview]]:
    """Yields (seq, now_ms, payload) of every intact record with seq > after_seq.

    A torn tail of the last segment (a crash while it was written) is cut
    off, said in one warning.  Damage (storage/damage.py: an unreadable
    record with intact ones after it, or in a segment that is not the last)
    raises LogDamaged once the records before it are read, and changes
    nothing on disk."""
    for _, _, seq, now_ms, payload in records(directory, after_seq, _cut_off):
        if seq > after_seq:
            yield seq, now_ms, payload


def records(directory: Path, after_seq: int,
            on_torn_tail: Callable[[TornTail], None]) -> Iterator[tuple[Path, int, int, int, memoryview]]:
    """(segment, offset, seq, now_ms, payload) of every record that recovery
    from a snapshot at `after_seq` reads, in order, changing nothing: a
    segment whose records the snapshot covers entirely is skipped, a torn
    tail is handed to `on_torn_tail` after the records before it, damage
    raises LogDamaged."""
    all_segments = segments(directory)
    expected = None
    for k, (first_seq, path) in enumerate(all_segments):
        if k + 1 < len(all_segments) and all_segments[k + 1][0] <= after_seq + 1:
            expected = None  # left by a crash before the snapshot dropped it: nothing in it is needed
            continue
        data = path.read_bytes()
        offset = records_start(path, data)
        if expected is None:  # a segment's first record is the one it is named after
            expected = min(first_seq, after_seq + 1)
        view, size = memoryview(data), len(data)
        while size - offset >= _RECORD.size:  # record_at's reading, inline: every record of a recovery passes here
            length, crc, seq, now_ms = _RECORD.unpack_from(data, offset)
            start = offset + _RECORD.size
            end = start + length
            if end > size or zlib.crc32(view[start:end], zlib.crc32(view[offset + _SEQ_AT: start])) != crc:
                break
            if seq != expected:  # intact, but not the next one: records are missing
                raise LogDamaged(_damage(all_segments, k, data, offset, expected,
                                         f"record {seq:,} where record {expected:,} belongs"))
            yield path, offset, seq, now_ms, view[start:end]
            expected = seq + 1
            offset = end
        if offset < len(data):
            damage = _damage(all_segments, k, data, offset, expected, _problem_at(data, offset, expected))
            if damage.records_after or damage.later_segments:
                raise LogDamaged(damage)
            on_torn_tail(TornTail(path, offset, len(data) - offset))


def record_at(data: bytes, offset: int) -> tuple[int, int, int] | None:
    """(seq, now_ms, end) of the record at `offset` if it reads back whole
    (its length within the data, its checksum right), else None."""
    if len(data) - offset < _RECORD.size:
        return None
    length, crc, seq, now_ms = _RECORD.unpack_from(data, offset)
    start = offset + _RECORD.size
    end = start + length
    view = memoryview(data)
    # the checksum covers the sequence number and time as they lie in the record, then the payload
    if end > len(data) or zlib.crc32(view[start:end], zlib.crc32(view[offset + _SEQ_AT: start])) != crc:
        return None
    return seq, now_ms, end


def intact_records(data: bytes, start: int, min_seq: int) -> Iterator[tuple[int, int, int, memoryview]]:
    """(offset, seq, now_ms, payload) of the intact records from `start` on, each
    after the last, the first with seq >= min_seq: past an unreadable stretch,
    reading resumes where a record reads back again."""
    at: int | None = start
    while at is not None and at < len(data):
        found = record_at(data, at)
        if found is None or found[0] < min_seq:
            at = next_record_at(data, at + 1, min_seq)
            continue
        seq, now_ms, end = found
        yield at, seq, now_ms, memoryview(data)[at + _RECORD.size: end]
        min_seq, at = seq + 1, end


def next_record_at(data: bytes, start: int, min_seq: int) -> int | None:
    """The first offset from `start` on where a record with seq >= min_seq
    reads back whole, or None.  Found by its sequence number field, a chunk
    at a time and all eight byte alignments at once (a record's payload has
    any length): every position whose eight bytes there could be a sequence
    number is checked, first to last."""
    last_start = len(data) - _RECORD.size
    max_seq = min_seq + (len(data) - start) // _RECORD.size  # no more records than their headers fit
    lo = start
    while lo <= last_start:
        hi = min(lo + _SCAN_CHUNK_BYTES, last_start + 1)  # record starts lo .. hi - 1
        candidates: list[int] = []
        for first in range(lo, min(lo + 8, hi)):
            count = (hi - first + 7) // 8
            seqs = np.frombuffer(data, dtype="<u8", count=count, offset=first + _SEQ_AT)
            hits = np.flatnonzero((seqs >= min_seq) & (seqs <= max_seq))
            candidates.extend((first + 8 * hits).tolist())
        for at in sorted(candidates):
            if record_at(data, at) is not None:
                return at
        lo = hi
    return None


def _damage(all_segments: list[tuple[int, Path]], k: int, data: bytes, offset: int, expected: int,
            problem: str) -> Damage:
    """What lies after the record at `offset` of segment k that does not read
    back (or is not the one expected there): a Damage whose counts are zero
    when it is a torn tail."""
    records_after = sum(1 for _ in intact_records(data, offset, expected))
    bytes_after = len(data) - offset
    for first_seq, path in all_segments[k + 1:]:
        later = path.read_bytes()
        records_after += sum(1 for _ in intact_records(later, records_start(path, later), first_seq))
        bytes_after += len(later)
    return Damage(all_segments[k][1], offset, expected, problem, records_after, bytes_after,
                  len(all_segments) - k - 1)


def _problem_at(data: bytes, offset: int, expected: int) -> str:
    if offset == 0 and len(data) < _SEGMENT_HEADER.size and data == _SEGMENT_MAGIC[: len(data)]:
        return "the segment ends inside its header"
    if len(data) - offset < _RECORD.size or offset + _RECORD.size + _RECORD.unpack_from(data, offset)[0] > len(data):
        return f"record {expected:,} is cut short (its length runs past the end of the segment)"
    return f"record {expected:,} does not match its checksum"


def _cut_off(tail: TornTail) -> None:
    with open(tail.segment, "r+b") as f:  # the torn tail was never acknowledged
        f.truncate(tail.offset)
        os.fsync(f.fileno())
    _logger.warning("%s", tail)


def segment_format(data: bytes) -> int:
    """The format version a segment's bytes are written in (1: no header)."""
    if data[: len(_SEGMENT_MAGIC)] != _SEGMENT_MAGIC or len(data) < _SEGMENT_HEADER.size:
        return 1
    return _SEGMENT_HEADER.unpack_from(data)[1]


def records_start(path: Path, data: bytes) -> int:
    """Where a segment's records begin; refuses a format this code does not know."""
    if len(data) < _SEGMENT_HEADER.size and data == _SEGMENT_MAGIC[: len(data)] and data:
        return 0  # a crash while a new segment wrote its header: a torn tail (or, in a segment before the last, damage)
    version = segment_format(data)
    if version > LOG_FORMAT:
        raise newer_format(path, "command log", version, LOG_FORMAT)
    return 0 if version == 1 else _SEGMENT_HEADER.size


def records_start_of(path: Path) -> int:
    """records_start of a segment file, reading its header only."""
    with open(path, "rb") as f:
        return records_start(path, f.read(_SEGMENT_HEADER.size))
