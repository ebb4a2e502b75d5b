"""Units of a cluster in one process, for tests: the cluster's client (the
router, the definitions' journal) and the rebalancer over in-memory
festivals, no NATS (the code the cluster runs between them is the same:
client.ClusterClient, rebalancer.Rebalancer)."""

from __future__ import annotations

import asyncio

import numpy as np

from double11 import Festival
from double11.catalog.model import Catalog
from double11.cluster.client import ClusterClient
from double11.cluster.definitions import Journal, MemoryJournal
from double11.cluster.quotas import StockReport, unit_catalogs
from double11.cluster.rebalancer import MemoryJournal as TransferJournal
from double11.cluster.rebalancer import Rebalancer
from double11.cluster.slots import SlotMap
from double11.config import FestivalConfig
from double11.engine.encode import encode_commands
from double11.engine.wire import decode_results


class InProcessClient(ClusterClient):
    """The cluster's client, its requests answered by festivals in this process."""

    def __init__(self, units: UnitsInProcess) -> None:
        super().__init__(None, units.slot_map)  # type: ignore[arg-type]  # no NATS
        self.units = units
        self.definitions = MemoryJournal()

    async def send(self, unit: int, request: str, data: bytes, headers: dict[str, str] | None = None,
                   retry_s_max: float = 0.0) -> bytes:
        assert request == "batch", request
        return self.units.send(unit, data)

    async def journal(self) -> Journal:
        return self.definitions


class UnitsInProcess:
    def __init__(self, catalog: Catalog, units: int, config: FestivalConfig, start_ms: int) -> None:
        self.slot_map = SlotMap.even([f"u{k}" for k in range(units)])
        self.festivals = [Festival.open(c, config=config, clock_start_ms=start_ms)
                          for c in unit_catalogs(catalog, units)]
        self.now_ms = start_ms
        self.journal = TransferJournal()
        self.rebalancer = Rebalancer(self, self.journal, catalog.sku_id, epoch="test")
        self.client = InProcessClient(self)

    # rebalancer.Units
    def count(self) -> int:
        return len(self.festivals)

    def stock(self, unit: int) -> StockReport:
        return StockReport.of(self.festivals[unit].engine, 0)

    def send(self, unit: int, batch: bytes) -> bytes:
        return self.festivals[unit].execute_binary(batch, self.now_ms)

    def execute(self, commands: list[dict]) -> dict[str, np.ndarray]:
        """The commands as one batch through the cluster's client; the merged results, decoded."""
        return decode_results(asyncio.run(self.client.submit(encode_commands(commands).to_bytes())))

    def tick(self) -> None:
        """An empty batch to every unit at the clock's time: what is due expires (a live unit's clock does so)."""
        for unit in range(self.count()):
            self.send(unit, encode_commands([]).to_bytes())

    def close(self) -> None:
        for festival in self.festivals:
            festival.close()

    def execute_on(self, unit: int, command: dict) -> int:
        """One command sent to one unit by name (as the rebalancer sends), its result code."""
        return int(decode_results(self.send(unit, encode_commands([command]).to_bytes()))["code"][0])
