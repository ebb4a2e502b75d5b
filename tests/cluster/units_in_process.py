"""Units of a cluster in one process, for tests: the router and the
rebalancer over in-memory festivals, no NATS (the code the cluster runs
between them is the same: router.route/merge, rebalancer.Rebalancer)."""

from __future__ import annotations

import numpy as np

from double11 import Festival
from double11.catalog.model import Catalog
from double11.cluster.quotas import StockReport, unit_catalogs
from double11.cluster.rebalancer import MemoryJournal, Rebalancer
from double11.cluster.router import merge, route
from double11.cluster.slots import SlotMap
from double11.config import FestivalConfig
from double11.engine.batch import CommandBatch
from double11.engine.encode import encode_commands
from double11.engine.wire import decode_results


class UnitsInProcess:
    def __init__(self, catalog: Catalog, units: int, config: FestivalConfig, start_ms: int) -> None:
        self.slot_map = SlotMap.even([f"u{k}" for k in range(units)])
        self.festivals = [Festival.open(c, config=config, clock_start_ms=start_ms)
                          for c in unit_catalogs(catalog, units)]
        self.now_ms = start_ms
        self.journal = MemoryJournal()
        self.rebalancer = Rebalancer(self, self.journal, catalog.sku_id, epoch="test")

    # rebalancer.Units
    def count(self) -> int:
        return len(self.festivals)

    def stock(self, unit: int) -> StockReport:
        return StockReport.of(self.festivals[unit].engine, 0)

    def send(self, unit: int, batch: bytes) -> bytes:
        return self.festivals[unit].execute_binary(batch, self.now_ms)

    def execute(self, commands: list[dict]) -> dict[str, np.ndarray]:
        """The commands as one batch through the router; the merged results, decoded."""
        routed = route(CommandBatch.from_bytes(encode_commands(commands).to_bytes()), self.slot_map)
        answers = [self.send(part.unit, part.batch.to_bytes()) for part in routed.parts]
        return decode_results(merge(routed, answers))

    def close(self) -> None:
        for festival in self.festivals:
            festival.close()

    def execute_on(self, unit: int, command: dict) -> int:
        """One command sent to one unit by name (as the rebalancer sends), its result code."""
        return int(decode_results(self.send(unit, encode_commands([command]).to_bytes()))["code"][0])
