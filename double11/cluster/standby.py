"""A hot standby: an engine that follows a unit's stream and applies each
record as it arrives.

The engine is a deterministic function of its stream (each record carries its
batch's time), so a standby that has applied the records up to seq holds the
state the primary held at seq: `state_hash` says so in one digest, over what a
snapshot holds (storage/engine_state.py) less the tables' spare room, which
depends on how batches were applied (one by one or two side by side), not on
what they did.

`promote` makes the standby the unit's primary, with the engine it already
holds (no replay, one engine in memory): it takes the unit's lease (lease.py),
reads the stream to its end, and writes a fence record (an empty batch) right
after the last record it applied.  Once the stream holds the fence, a former
primary that still believes it leads (paused, not dead) cannot append: each
of its records names the sequence it expects the stream to end at, and the
stream ends at the fence.  If a late record of the former primary lands
before the fence, the fence is refused instead: the standby applies that
record too (the stream holds it, so it may have been acknowledged) and writes
the fence after it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import threading
import time
from pathlib import Path

from double11 import limits
from double11.cluster.lease import LeasedStreamLog, LeaseHeld, UnitLease
from double11.cluster.snapshots import fetch_latest
from double11.cluster.stream_log import StreamLogError, StreamReader, StreamTrimmed
from double11.cluster.unit import UnitFestival, trimmed_beyond
from double11.engine.batch import CommandBatch
from double11.engine.encode import encode_commands
from double11.engine.machine import Engine
from double11.service.clock import kept_clock
from double11.service.durability import latest_snapshot
from double11.storage.engine_state import engine_state

logger = logging.getLogger("double11.cluster")
_REOPEN_WAIT_S = 0.5  # between tries to read the stream again after a node went away
_FENCE_TRIES = 5  # a fence refused this often (records of a former primary still landing) fails the promotion


def state_hash(engine: Engine) -> str:
    """A digest of the engine's state (read it while the engine stands still)."""
    state = engine_state(engine)
    digest = hashlib.blake2b(digest_size=32)
    scalars = {name: value for name, value in state.scalars.items() if name != "capacity"}
    digest.update(json.dumps(scalars, sort_keys=True).encode())
    for name in sorted(state.arrays):
        array = state.arrays[name]
        digest.update(f"\n{name} {array.dtype.str} {array.shape}\n".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


class Standby:
    """Follows unit `unit`'s stream from `engine` at record `seq` (a snapshot's,
    or a stepped-down primary's own position: its engine goes on)."""

    def __init__(self, urls: list[str], unit: str, engine: Engine, seq: int, snapshot_seq: int | None = None) -> None:
        self.urls, self.unit = list(urls), unit
        self.engine = engine
        self.seq = seq
        self.snapshot_seq = seq if snapshot_seq is None else snapshot_seq  # the folder's latest snapshot
        self.error: BaseException | None = None  # what stopped it, if anything did
        self.lease_taken_at = self.fenced_at = 0.0  # a promotion's moments (time.time()), for its event
        self._applied = threading.Condition()
        self._stop = threading.Event()
        self._reader = StreamReader(self.urls, unit, seq)
        self._thread = threading.Thread(target=self._follow, name=f"double11-standby-{unit}", daemon=True)
        self._thread.start()

    @classmethod
    def from_snapshot(cls, urls: list[str], unit: str, data_dir: Path) -> Standby:
        """A standby starting from the latest snapshot of the unit, data_dir's
        (a copy of the primary's folder) or the object store's when that one
        is newer (fetched into data_dir: a new machine gives an empty one)."""
        fetch_latest(urls, unit, Path(data_dir))
        found = latest_snapshot(Path(data_dir))
        if found is None:
            raise ValueError(f"neither {data_dir} nor the cluster's object store holds a snapshot of unit {unit}")
        seq, engine = found
        try:
            return cls(urls, unit, engine, seq)
        except StreamTrimmed as exc:
            raise trimmed_beyond(exc, unit, data_dir) from exc

    def _follow(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    records = self._reader.fetch(wait_s=limits.standby_fetch_wait_s)
                except Exception as exc:  # noqa: BLE001 (a node went away: read on from where it stopped)
                    logger.warning("standby of unit %s: reading the stream again after record %d (%s)",
                                   self.unit, self.seq, exc)
                    self._reopen()
                    continue
                for seq, now_ms, payload in records:
                    batch = CommandBatch.from_bytes(payload, trusted=True)
                    with self._applied:
                        self.engine.apply(batch, now_ms)
                        self.seq = seq
                        self._applied.notify_all()
        except BaseException as exc:  # a record that does not apply: the standby stops, and says why
            logger.error("standby of unit %s stopped at record %d: %s", self.unit, self.seq, exc)
            with self._applied:
                self.error = exc
                self._applied.notify_all()

    def _reopen(self) -> None:
        self._reader.close()
        while not self._stop.is_set():
            try:
                self._reader = StreamReader(self.urls, self.unit, self.seq)
                return
            except StreamTrimmed:  # the records it needs next are gone: it stops, and says so
                raise
            except Exception:  # noqa: BLE001 (no quorum yet: try again)
                time.sleep(_REOPEN_WAIT_S)

    def wait_for(self, seq: int, timeout_s: float) -> bool:
        """Whether the standby applied record seq within timeout_s (False also when it stopped)."""
        with self._applied:
            return self._applied.wait_for(lambda: self.seq >= seq or self.error is not None, timeout_s) and \
                self.seq >= seq

    def state_hash(self) -> str:
        with self._applied:
            return state_hash(self.engine)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._reader.close()

    # ------------------------------------------------------------ promotion
    def promote(self, lease: UnitLease, data_dir: Path, speedup: float = 1.0,
                wait_s: float | None = None) -> UnitFestival:
        """Waits until the unit's lease is free (at most wait_s; None: as long
        as it takes), takes it, and returns the unit's festival on this
        standby's engine, its log going on from the fence record.  The
        standby stops following; its engine is the festival's from now on."""
        deadline = None if wait_s is None else time.monotonic() + wait_s
        while True:
            left = limits.unit_failover_s_max if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                lease.acquire(wait_s=left)
                break
            except LeaseHeld:
                if deadline is not None:
                    raise
            if self.error is not None:
                raise self.error
        self.lease_taken_at = time.time()
        self._stop.set()
        self._thread.join()
        if self.error is not None:
            raise self.error
        clock = kept_clock(Path(data_dir), speedup, None)  # the primary's clock, copied with its folder
        try:
            log = self._fence(lease, clock.now_ms())
        finally:
            self._reader.close()
        self.fenced_at = time.time()
        festival = UnitFestival(self.engine, Path(data_dir), log, clock)
        festival.durability.snapshot_seq = self.snapshot_seq
        festival.urls, festival.unit, festival.stream_log = list(self.urls), self.unit, log
        return festival

    def _fence(self, lease: UnitLease, clock_ms: int) -> LeasedStreamLog:
        """Reads the stream to its end and appends the fence record after it."""
        fence = encode_commands([])
        for _ in range(_FENCE_TRIES):
            self._catch_up()
            try:
                log = LeasedStreamLog(self.urls, self.unit, self.seq + 1, lease)
            except StreamLogError:  # the stream moved on since it was read: a former primary's late record
                continue
            now_ms = max(clock_ms, self.engine.now_ms)
            try:
                log.append(now_ms, fence.to_bytes())
                log.sync()
            except StreamLogError as exc:
                log.cut_back()
                if not lease.held():
                    raise
                logger.warning("unit %s: the fence after record %d was refused (%s); reading on", self.unit,
                               self.seq, exc)
                continue
            with self._applied:
                self.engine.apply(fence, now_ms)
                self.seq = log.next_seq - 1
            return log
        raise StreamLogError(errno.EIO, f"unit {self.unit}: the stream kept growing behind the fence "
                             f"({_FENCE_TRIES} tries): another engine still writes to it")

    def _catch_up(self) -> None:
        """Applies every record up to the stream's end (as the stream says it is now)."""
        last = self._reader.last_seq()
        while self.seq < last:
            records = self._reader.fetch()
            if not records:
                raise StreamLogError(errno.ETIMEDOUT, f"the stream of unit {self.unit} gave no record "
                                     f"{self.seq + 1} of {last} within {limits.stream_replay_wait_s:g} s")
            with self._applied:
                for seq, now_ms, payload in records:
                    self.engine.apply(CommandBatch.from_bytes(payload, trusted=True), now_ms)
                    self.seq = seq
