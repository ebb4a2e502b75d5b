"""Reads of the state, served between two batches, and only once durable.

Each read takes the state's lock, so it sees the state between two batches,
never half of one.  The state may hold a batch whose log record is still on
its way to disk (the group commit applies batch n + 1 while batch n syncs);
a read is answered only once the last record it saw is on disk, and after a
storage fault not at all: nobody reads what a crash could undo.  From the
event loop, use `read`: it waits for its turn on the engine thread, then for
the disk, without blocking the loop.  The `*_view` functions are the reads
themselves, to be called through `read` or `at_rest` (they take no lock).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from double11 import areas
from double11.engine import stock_probe, views
from double11.engine.machine import Engine
from double11.promotions import views as promotion_views
from double11.service.clock import FestivalClock
from double11.service.durability import Durability

T = TypeVar("T")


class Reads:
    def __init__(self, engine: Engine, clock: FestivalClock, lock: threading.RLock,
                 engine_thread: ThreadPoolExecutor, durability: Durability) -> None:
        self.engine = engine
        self.clock = clock
        self._lock = lock
        self._engine = engine_thread  # HTTP reads run here, in turn with the big batches
        self._durability = durability

    # ------------------------------------------------------------ the barrier
    def _now(self, view: Callable[..., T], *args: Any) -> tuple[T, Future | None]:
        """view(*args) under the lock, and the record it waits for."""
        with self._lock:
            self._durability.refuse_after_failure()
            return view(*args), self._durability.unsynced()

    async def read(self, view: Callable[..., T], *args: Any) -> T:
        """view(*args) on the engine thread, in its turn, answered once what it saw is durable."""
        value, unsynced = await asyncio.get_running_loop().run_in_executor(self._engine, self._now, view, *args)
        if unsynced is not None:
            await asyncio.wrap_future(unsynced)  # a failed write raises storage_unavailable
        return value

    def at_rest(self, view: Callable[..., T], *args: Any) -> T:
        """The same from a thread that may block (the Python API)."""
        value, unsynced = self._now(view, *args)
        if unsynced is not None:
            unsynced.result()
        return value

    # ----------------------------------------------------------------- views
    def sku_view(self, sku: int) -> dict[str, Any] | None:
        return views.sku(self.engine, sku)

    def checkout_view(self, checkout: int) -> dict[str, Any] | None:
        return views.checkout(self.engine, checkout)

    def order_view(self, order: int) -> dict[str, Any] | None:
        return views.order(self.engine, order)

    def ledger_view(self) -> dict[str, Any]:
        return self.engine.ledger.view()

    def area_view(self, name: str, id_: int) -> dict[str, Any] | None:
        """An area's view `name` (areas.READS) of the thing `id_`; None when there is none."""
        return areas.READ_BY_NAME[name].read(self.engine, id_)

    def stock_probe_view(self, keys: np.ndarray, skus: np.ndarray) -> np.ndarray:
        """engine.stock_probe.verdicts of checkouts the HTTP front would refuse as sold out."""
        return stock_probe.verdicts(self.engine, self.clock.now_ms(), keys, skus)

    def stats_view(self) -> dict[str, Any]:
        now = max(self.clock.now_ms(), self.engine.now_ms)
        view = self.engine.stats.view(self.engine.catalog, now)
        view["promotions"] = promotion_views.figures(self.engine)
        # the clock's pace, for a client that replays a day against it (double11 simulate)
        view["speedup"] = self.clock.speedup
        return view

    # ---------------------------------------------- the same, for the Python API
    def sku(self, sku: int) -> dict[str, Any] | None:
        return self.at_rest(self.sku_view, sku)

    def checkout(self, checkout: int) -> dict[str, Any] | None:
        return self.at_rest(self.checkout_view, checkout)

    def order(self, order: int) -> dict[str, Any] | None:
        return self.at_rest(self.order_view, order)

    def ledger(self) -> dict[str, Any]:
        return self.at_rest(self.ledger_view)

    def view(self, name: str, id_: int) -> dict[str, Any] | None:
        return self.at_rest(self.area_view, name, id_)

    def stats(self) -> dict[str, Any]:
        return self.at_rest(self.stats_view)

    def state_bytes(self) -> int:
        """Memory held by the engine's growing tables (for bytes per order)."""
        engine = self.engine
        return (sum(table.nbytes for table in engine.growing_tables())
                + engine.idem_index.nbytes + engine.buyer_index.nbytes)
