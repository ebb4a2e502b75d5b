"""Applying a batch to the state: its time, the lock, its log record.

Every write goes through `Writes.apply`, from the group commit or from a
direct `execute`: the batch gets the festival clock's time (never earlier than
the engine's: its clock never goes back), the state's lock (one writer or
reader at a time), and its log record, written beside the apply or right
after it (durability.Durability.writes_after).  A batch that had to wait for
tables to grow is said loudly.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future

import numpy as np

from double11.access import commands as access_commands
from double11.engine.batch import CommandBatch
from double11.engine.machine import Engine
from double11.service.clock import FestivalClock
from double11.service.durability import Durability

logger = logging.getLogger("double11.service")


class Writes:
    def __init__(self, engine: Engine, clock: FestivalClock, durability: Durability, lock: threading.RLock) -> None:
        self.engine = engine
        self.clock = clock
        self.durability = durability
        self._lock = lock
        self.batches = 0
        self.commands = 0
        self.table_grows = 0  # tables grown to take a batch (each a pause)

    def apply(self, batch: CommandBatch, now_ms: int | None) -> tuple[np.ndarray, np.ndarray, Future | None]:
        """Applies a batch; the future says when its log record is on disk
        (None: it already is, or there is no log)."""
        now = self.clock.now_ms() if now_ms is None else now_ms
        durability = self.durability
        durability.refuse_after_failure()
        with self._lock:
            if len(batch.role):  # sent by tokens: each command checked against its sender, as the state is now
                access_commands.refuse(batch, self.engine)
            now = max(int(now), self.engine.now_ms)  # the engine's clock never goes back
            durability.refuse_unwritable()
            inline = durability.writes_after(len(batch))
            written = None if inline else durability.write_beside(now, batch)
            growing = self.engine.must_grow(len(batch), len(batch.sku), batch)
            started = time.perf_counter()
            code, ref = self.engine.apply(batch, now)
            if growing:
                self._grown(growing, time.perf_counter() - started)
            if inline:
                durability.write(now, batch)
        self.batches += 1
        self.commands += len(batch)
        return code, ref, written

    def _grown(self, tables: list[str], seconds: float) -> None:
        """A batch had to wait for tables to grow: said loudly, because the
        pause grows with the festival (seconds at tens of millions of
        checkouts, and it comes at the peak)."""
        self.table_grows += len(tables)
        logger.warning("the engine's %s table%s grew to take a batch, which waited %.2f s: size the festival "
                       "for its peak (serve --expected-checkouts; now %s checkouts)", ", ".join(tables),
                       "s" if len(tables) > 1 else "", seconds, f"{self.engine.stats.checkouts:,}")
