"""A festival's data folder: the command log and the snapshots.

Opening a folder finds its latest snapshot and replays the log records after
it.  Each applied batch's record (the batch and its time, not its results:
replay applies it again, deterministically) is appended and fsynced, either
beside the apply on the log thread or right after it; nobody is answered
before it is on disk.  A snapshot writes the whole state and starts a new
log segment; older segments go.

A storage fault (a record that could not be written or synced: a full disk,
a failing one) is said at once, and from then on the state holds a batch the
log does not: every command and every read is refused with 503
storage_unavailable (`refuse_after_failure`), no record is ever written after
the lost one, and the segment is cut back to its last synced record.  Only
opening the folder again (`Festival.reopen`; `double11 serve` does it by
itself, link/local.py) brings the festival back, as the log holds it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from double11 import limits
from double11.engine.batch import CommandBatch
from double11.engine.machine import Engine
from double11.errors import Double11Error, Result
from double11.storage import engine_state
from double11.storage import log as command_log
from double11.storage import snapshot as snapshots

logger = logging.getLogger("double11.service")


def latest_snapshot(directory: Path) -> tuple[int, Engine] | None:
    """The state of the folder's latest snapshot and its log sequence number
    (None: the folder holds none yet)."""
    found = snapshots.latest(directory)
    if not found:
        return None
    seq, path = found
    return seq, engine_state.read(path)  # a snapshot of any format this code reads


def replay(engine: Engine, directory: Path, seq: int) -> int:
    """Applies every log record after seq; the last record's sequence number."""
    def records() -> Iterator[tuple[CommandBatch, int]]:
        nonlocal seq  # ends as the last record's
        for record_seq, now_ms, payload in command_log.replay(directory, seq):
            seq = record_seq
            yield CommandBatch.from_bytes(payload, trusted=True), now_ms

    for _ in engine.apply_all(records()):  # each record's lookups beside the main loop of the one before
        pass
    return seq


class Log(Protocol):
    """What the durability writes records to: a folder's command log
    (storage.log.CommandLog), or a unit's stream on a cluster
    (cluster.stream_log.StreamLog)."""

    next_seq: int
    bytes_written: int
    syncs: int

    def append(self, now_ms: int, payload: bytes) -> int: ...
    def sync(self) -> None: ...
    def start_segment(self, first_seq: int) -> None: ...
    def drop_segments_before(self, first_seq: int) -> None: ...
    def cut_back(self) -> str: ...
    def close(self) -> None: ...
    def unwritable(self) -> str | None: ...  # why no record may be written now (None: it may)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"


def storage_unavailable(exc: BaseException) -> Double11Error:
    """The refusal of every command and read after a storage fault (503, Retry-After)."""
    return Double11Error(Result.storage_unavailable, detail=f"the log's last write failed: {_reason(exc)}")


class Durability:
    """The log and snapshots of one festival (data_dir and log None: a
    festival in memory only).  `lock` is the state's: one writer or reader at
    a time."""

    def __init__(self, data_dir: Path | None, log: Log | None, lock: threading.RLock) -> None:
        self.data_dir = data_dir
        self.log = log
        self._lock = lock
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="double11-log")
        self._last_write: Future | None = None  # the last record handed to the log thread
        self.snapshot_seq = 0
        # set when a log record could not be written: the state then holds a
        # batch the log does not, so no more commands or reads until reopened
        self.log_failure: BaseException | None = None
        self.on_fault: list[Callable[[], None]] = []  # called once, on the thread that met the fault

    # ----------------------------------------------------------------- records
    def writes_after(self, commands: int) -> bool:
        """Whether the record of a batch of so many commands is written right
        after it is applied (`write`), rather than beside the apply on the log
        thread (`write_beside`).  Asked under the lock, before the apply.

        The log holds the batch and its time, not its results (replay applies
        it again, deterministically), so a big batch's record is written
        (serialized, checksummed, fsynced) on the log thread while the engine
        applies it: the batch is answered when both are done, instead of after
        the one and then the other.  Records go in the order batches are
        applied (one thread, first in first out, under the lock).  A small
        batch's record is written after it is applied, when no record is on
        its way: handing it to a thread and back cost more time than the
        fsync itself when the CPUs are busy (measured: about 2 ms against
        0.4 ms per batch of single requests)."""
        return self.log is not None and commands < limits.log_inline_commands_max and (
            self._last_write is None or self._last_write.done())

    def write_beside(self, now_ms: int, batch: CommandBatch) -> Future | None:
        """Hands the batch's record to the log thread (under the lock, before
        the apply); the future says when it is on disk (None: no log)."""
        if self.log is None:
            return None
        written = self._last_write = self._io.submit(self.write, now_ms, batch)
        return written

    def refuse_after_failure(self) -> None:
        if self.log_failure is not None:
            raise storage_unavailable(self.log_failure)

    def refuse_unwritable(self) -> None:
        """Refuses a batch before it is applied when the log says it would
        take no record now (a unit's primary lease not held this moment):
        nothing changes, and the festival goes on once it may write again;
        found only at the write, the batch would be in the state and not in
        the log, a storage fault."""
        why = self.log.unwritable() if self.log is not None else None
        if why is not None:
            raise Double11Error(Result.storage_unavailable, detail=why)

    def unsynced(self) -> Future | None:
        """The last record still on its way to disk (asked under the lock):
        a read of the state as it is now may be answered once it is there
        (records are written in order, so the ones before it are too)."""
        last = self._last_write
        return last if last is not None and not last.done() else None

    def write(self, now_ms: int, batch: CommandBatch) -> None:
        if self.log_failure is not None:  # never a record after a lost one: replay would skip a batch
            raise storage_unavailable(self.log_failure)
        log = self.log
        assert log is not None, "written only by a festival with a log (apply)"
        try:
            log.append(now_ms, batch.to_bytes())
            log.sync()
        except BaseException as exc:
            self._fault(exc)
            raise storage_unavailable(exc) from exc

    def _fault(self, exc: BaseException) -> None:
        """Says a storage fault at once and loudly, and keeps the lost record off the disk."""
        self.log_failure = exc
        assert self.log is not None
        where = self.log.cut_back()
        logger.error("STORAGE FAULT: the command log could not be written (%s): %s. Commands and reads are "
                     "refused with 503 storage_unavailable; nobody was told the lost batch was done. The "
                     "festival comes back from its log once the data folder can be written again.",
                     _reason(exc), where)
        for call in self.on_fault:
            call()

    def written(self) -> None:
        """Waits until every applied batch's record is on disk (after a failed
        write nothing more goes there)."""
        if self.log is None or self.log_failure is not None:
            return
        try:
            self._io.submit(self.log.sync).result()
        except Exception as exc:  # every record was synced already, but the disk is failing: say it
            self._fault(exc)
            raise storage_unavailable(exc) from exc

    def written_through(self) -> int | None:
        """The log's last record, once every batch applied so far is in the
        log (the state is then exactly what the log replays to); None after
        a storage fault (the state may hold a batch the log does not) or
        without a log.  Under the state's lock: nothing is applied meanwhile."""
        if self.log is None:
            return None
        with self._lock:
            try:
                self.written()
            except Double11Error:
                return None
            return None if self.log_failure is not None else self.log.next_seq - 1

    # --------------------------------------------------------------- snapshots
    def snapshot(self, engine: Engine) -> None:
        """Writes the whole state and starts a new log segment; older segments go.

        A snapshot is an optimisation, not a storage fault: one that cannot be
        written (a full disk) leaves the previous snapshot and every segment
        as they were, is said in one line and raised (SnapshotNotWritten), and
        the festival goes on; its log keeps everything."""
        if self.data_dir is None or self.log is None:
            return
        if self.log_failure is not None:  # the state holds batches the log lost: keep them out
            logger.error("no snapshot: the command log could not be written; a restart recovers from it")
            return
        with self._lock:
            self.written()  # the state holds every batch applied; so must the log
            seq = self.log.next_seq - 1
            try:
                engine_state.write(self.data_dir, seq, engine)
            except OSError as exc:
                raise self._snapshot_not_written(exc) from exc
            self.snapshot_seq = seq
            try:
                self.log.start_segment(seq + 1)
            except OSError as exc:  # the snapshot is durable, the old segments are kept: the log cannot go on
                self.log_failure = exc
                logger.error("STORAGE FAULT: the snapshot at record %d was written but no new log segment could "
                             "be started after it (%s); commands are refused until the festival reopens from "
                             "the snapshot", seq, exc.strerror or exc)
                for call in self.on_fault:
                    call()
                return
            self.log.drop_segments_before(seq + 1)

    def _snapshot_not_written(self, exc: OSError) -> snapshots.SnapshotNotWritten:
        assert self.data_dir is not None
        reason = exc.strerror or str(exc)
        previous = snapshots.latest(self.data_dir)
        if previous is None:  # the festival being opened: its opener says it (a second line would repeat it)
            return snapshots.SnapshotNotWritten(
                f"the first snapshot could not be written ({reason}): the festival's catalog and config "
                f"live there; free space in {self.data_dir} and start it again", exc)
        error = snapshots.SnapshotNotWritten(
            f"the snapshot could not be written ({reason}): the previous snapshot at record {previous[0]} and the "
            f"log keep everything (a start replays the log after record {previous[0]}); free space in "
            f"{self.data_dir} for the next snapshot", exc)
        logger.error("%s", error)
        return error

    def behind_snapshot(self) -> bool:
        """Whether commands came in since the last snapshot."""
        return self.log is not None and self.log.next_seq - 1 > self.snapshot_seq

    def abandon(self) -> None:
        """After a storage fault: the log thread stops (the log was cut back and closed)."""
        self._io.shutdown(wait=True)

    def close(self) -> None:
        """Closes the log (its records already on disk: `written`) and the log thread.
        After a storage fault the log is not touched again (nothing more goes there)."""
        try:
            if self.log is not None and self.log_failure is None:
                with self._lock:
                    try:
                        self.log.close()
                    except OSError as exc:  # its records were synced one by one; the disk is failing: say it
                        self._fault(exc)
        finally:
            self._io.shutdown(wait=True)
