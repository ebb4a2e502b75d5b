"""A hot standby: an engine that follows a unit's stream and applies each
record as it arrives.

The engine is a deterministic function of its stream (each record carries its
batch's time), so a standby that has applied the records up to seq holds the
state the primary held at seq: `state_hash` says so in one digest, over what a
snapshot holds (storage/engine_state.py) less the tables' spare room, which
depends on how batches were applied (one by one or two side by side), not on
what they did.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from pathlib import Path

from double11 import limits
from double11.cluster.stream_log import StreamReader
from double11.engine.batch import CommandBatch
from double11.engine.machine import Engine
from double11.service.durability import latest_snapshot
from double11.storage.engine_state import engine_state

logger = logging.getLogger("double11.cluster")
_REOPEN_WAIT_S = 0.5  # between tries to read the stream again after a node went away


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
    """Follows unit `unit`'s stream from `engine` at record `seq` (a snapshot's)."""

    def __init__(self, urls: list[str], unit: str, engine: Engine, seq: int) -> None:
        self.urls, self.unit = list(urls), unit
        self.engine = engine
        self.seq = seq
        self.error: BaseException | None = None  # what stopped it, if anything did
        self._applied = threading.Condition()
        self._stop = threading.Event()
        self._reader = StreamReader(self.urls, unit, seq)
        self._thread = threading.Thread(target=self._follow, name=f"double11-standby-{unit}", daemon=True)
        self._thread.start()

    @classmethod
    def from_snapshot(cls, urls: list[str], unit: str, data_dir: Path) -> Standby:
        """A standby starting from the latest snapshot in data_dir (a copy of the primary's)."""
        found = latest_snapshot(Path(data_dir))
        if found is None:
            raise ValueError(f"{data_dir} holds no snapshot of unit {unit}")
        seq, engine = found
        return cls(urls, unit, engine, seq)

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
