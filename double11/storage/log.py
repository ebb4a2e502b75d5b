"""The command log: every batch, as applied, on disk before anyone hears of it.

A record is [u32 payload bytes][u32 crc32][u64 sequence][i64 time ms][payload],
the payload being the batch's wire bytes.  Time is in the record because the
state machine never reads a clock: replaying the log reproduces the state.
A crash can leave a torn last record; it was never fsynced, so never
acknowledged, and recovery cuts it off.  The log is split into segments, one
per snapshot, so that old segments can be dropped once a snapshot covers them.

Format versions.  A segment starts with a header, [8 bytes magic][u32 format
version][u32 zero], so that a later release can change the record layout and
still read the segments written before it; a segment without one is format 1
(the releases before headers, whose records are the same).  A version above
LOG_FORMAT is refused, naming the file.  The payload carries its own version
(the batch wire format's header), checked when the batch is decoded.
"""

from __future__ import annotations

import mmap
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

from double11.storage import UnreadableData, newer_format, numbered

_RECORD = struct.Struct("<IIQq")
LOG_FORMAT = 2  # 1: no segment header; 2: the header below, records unchanged
_SEGMENT_HEADER = struct.Struct("<8sII")
# as a format 1 record's length this would be 1.7 GB, far past any batch: the two never mix up
_SEGMENT_MAGIC = b"d11-log\n"
_PAGE_BYTES = mmap.PAGESIZE


def _segment_name(first_seq: int) -> str:
    return f"log-{first_seq:016d}.d11"


def segments(directory: Path) -> list[tuple[int, Path]]:
    return numbered(directory, "log", ".d11")


class CommandLog:
    def __init__(self, directory: Path, next_seq: int):
        self.directory = directory
        self.next_seq = next_seq
        self._fd = -1
        self._segment_bytes = 0  # written to the current segment
        self._uncached_bytes = 0  # of those, synced and dropped from the page cache
        self.bytes_written = 0
        self.syncs = 0
        self.start_segment(next_seq)

    def start_segment(self, first_seq: int) -> None:
        if self._fd >= 0:
            os.fdatasync(self._fd)
            os.close(self._fd)
        path = self.directory / _segment_name(first_seq)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        size = os.fstat(self._fd).st_size
        if size == 0:  # a new segment (or one a crash left empty): it says its format first
            size = os.write(self._fd, _SEGMENT_HEADER.pack(_SEGMENT_MAGIC, LOG_FORMAT, 0))
            self.bytes_written += size
        self._segment_bytes = size
        self._uncached_bytes = size - size % _PAGE_BYTES  # dropped a whole page at a time
        _fsync_dir(self.directory)

    def append(self, now_ms: int, payload: bytes) -> int:
        """Writes one record (not yet durable); returns its sequence number."""
        seq = self.next_seq
        head = struct.pack("<Qq", seq, now_ms)
        crc = zlib.crc32(payload, zlib.crc32(head))
        record = _RECORD.pack(len(payload), crc, seq, now_ms) + payload
        view = memoryview(record)
        while view:
            view = view[os.write(self._fd, view):]
        self.next_seq = seq + 1
        self.bytes_written += len(record)
        self._segment_bytes += len(record)
        return seq

    def sync(self) -> None:
        """Makes every record appended so far durable (group commit: one call covers many)."""
        end = self._segment_bytes
        os.fdatasync(self._fd)
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

    def close(self) -> None:
        if self._fd >= 0:
            os.fdatasync(self._fd)
            os.close(self._fd)
            self._fd = -1

    def drop_segments_before(self, first_seq: int) -> None:
        for start, path in segments(self.directory):
            if start < first_seq:
                path.unlink()


def replay(directory: Path, after_seq: int) -> Iterator[tuple[int, int, memoryview]]:
    """Yields (seq, now_ms, payload) of every intact record with seq > after_seq,
    cutting off a torn or corrupt tail of the last segment."""
    all_segments = segments(directory)
    expected = None
    for k, (_, path) in enumerate(all_segments):
        data = path.read_bytes()
        offset = _records_start(path, data, last=k == len(all_segments) - 1)
        while offset < len(data):
            if len(data) - offset < _RECORD.size:
                break
            length, crc, seq, now_ms = _RECORD.unpack_from(data, offset)
            end = offset + _RECORD.size + length
            payload = memoryview(data)[offset + _RECORD.size: end]
            if end > len(data) or zlib.crc32(payload, zlib.crc32(struct.pack("<Qq", seq, now_ms))) != crc:
                break
            if expected is not None and seq != expected:
                raise RuntimeError(f"command log gap: expected record {expected}, found {seq} in {path}")
            expected = seq + 1
            if seq > after_seq:
                yield seq, now_ms, payload
            offset = end
        if offset < len(data):
            if k != len(all_segments) - 1:
                raise RuntimeError(f"command log segment {path} is corrupt before its end")
            with open(path, "r+b") as f:  # the torn tail was never acknowledged
                f.truncate(offset)
                os.fsync(f.fileno())


def segment_format(data: bytes) -> int:
    """The format version a segment's bytes are written in (1: no header)."""
    if data[: len(_SEGMENT_MAGIC)] != _SEGMENT_MAGIC or len(data) < _SEGMENT_HEADER.size:
        return 1
    return _SEGMENT_HEADER.unpack_from(data)[1]


def _records_start(path: Path, data: bytes, last: bool) -> int:
    """Where a segment's records begin; refuses a format this code does not know."""
    if len(data) < _SEGMENT_HEADER.size and data == _SEGMENT_MAGIC[: len(data)] and data:
        if not last:
            raise UnreadableData(f"command log segment {path} ends inside its header")
        return 0  # a crash while a new segment wrote its header: no record; cut off below, rewritten on open
    version = segment_format(data)
    if version > LOG_FORMAT:
        raise newer_format(path, "command log", version, LOG_FORMAT)
    return 0 if version == 1 else _SEGMENT_HEADER.size


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
