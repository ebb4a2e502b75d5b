"""Reads of the state, served between two batches.

Each read takes the state's lock, so it sees the state between two batches,
never half of one (a read may see a batch applied but still syncing).  From
the event loop, use `read`: it waits for its turn on the engine thread instead
of blocking the loop while a batch applies.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from double11 import areas
from double11.engine import stock_probe, views
from double11.engine.machine import Engine
from double11.promotions import views as promotion_views
from double11.service.clock import FestivalClock


class Reads:
    def __init__(self, engine: Engine, clock: FestivalClock, lock: threading.Lock,
                 engine_thread: ThreadPoolExecutor) -> None:
        self.engine = engine
        self.clock = clock
        self._lock = lock
        self._engine = engine_thread  # HTTP reads run here, in turn with the big batches

    def read(self, view: Callable[..., Any], *args: Any) -> asyncio.Future:
        """view(*args) on the engine thread, in its turn."""
        return asyncio.get_running_loop().run_in_executor(self._engine, view, *args)

    def sku(self, sku: int) -> dict[str, Any] | None:
        with self._lock:
            return views.sku(self.engine, sku)

    def checkout(self, checkout: int) -> dict[str, Any] | None:
        with self._lock:
            return views.checkout(self.engine, checkout)

    def order(self, order: int) -> dict[str, Any] | None:
        with self._lock:
            return views.order(self.engine, order)

    def ledger(self) -> dict[str, Any]:
        with self._lock:
            return self.engine.ledger.view()

    def view(self, name: str, id_: int) -> dict[str, Any] | None:
        """An area's view `name` (areas.READS) of the thing `id_`; None when there is none."""
        read = areas.READ_BY_NAME[name].read
        with self._lock:
            return read(self.engine, id_)

    def stock_probe(self, keys: np.ndarray, skus: np.ndarray) -> np.ndarray:
        """engine.stock_probe.verdicts of checkouts the HTTP front would refuse as sold out."""
        with self._lock:
            return stock_probe.verdicts(self.engine, self.clock.now_ms(), keys, skus)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            now = max(self.clock.now_ms(), self.engine.now_ms)
            view = self.engine.stats.view(self.engine.catalog, now)
            view["promotions"] = promotion_views.figures(self.engine)
        # the clock's pace, for a client that replays a day against it (double11 simulate)
        view["speedup"] = self.clock.speedup
        return view

    def state_bytes(self) -> int:
        """Memory held by the engine's growing tables (for bytes per order)."""
        engine = self.engine
        return (sum(table.nbytes for table in engine.growing_tables())
                + engine.idem_index.nbytes + engine.buyer_index.nbytes)
