"""The composition root of the transaction core: engine + command log + clock.

`Festival` is the in-process Python API; the HTTP adapter is a thin layer on
top of `submit` / `submit_binary` and the read methods.
(Interface fixed first so the adapters can be built beside it.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from double11.catalog import Catalog
from double11.config import FestivalConfig


class Festival:
    @classmethod
    def open(
        cls,
        catalog: Catalog | None = None,
        data_dir: str | Path | None = None,
        config: FestivalConfig | None = None,
        speedup: float = 1.0,
        clock_start_ms: int | None = None,
    ) -> "Festival":
        """Open (or recover) a festival.  With data_dir, every command is logged
        and fsynced before it is answered; without, state is in memory only."""
        raise NotImplementedError

    # writes ---------------------------------------------------------------
    def execute(self, commands: list[dict[str, Any]], now_ms: int | None = None) -> list[dict[str, Any]]:
        """Apply commands in order as one batch, durable on return.
        Each result is {"status": int, "body": dict}."""
        raise NotImplementedError

    async def submit(self, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Same as execute, but gathered with other callers' commands into one
        group-committed batch; resolves once the batch is on disk."""
        raise NotImplementedError

    async def submit_binary(self, body: bytes) -> bytes:
        """The compact columnar batch format (double11.engine.wire)."""
        raise NotImplementedError

    # reads ----------------------------------------------------------------
    def sku(self, sku: int) -> dict[str, Any] | None: ...
    def checkout(self, checkout: int) -> dict[str, Any] | None: ...
    def order(self, order: int) -> dict[str, Any] | None: ...
    def ledger(self) -> dict[str, Any]: ...
    def stats(self) -> dict[str, Any]: ...
    def metrics(self) -> dict[str, int | float]: ...

    def snapshot(self) -> None: ...
    def close(self) -> None: ...
