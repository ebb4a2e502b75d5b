"""The engine's state as a snapshot's named arrays and scalars, and back.

What a snapshot holds (its schema, written in every file's header):
- the catalog's columns (`catalog.*`), its names as UTF-8 JSON arrays of bytes,
  and the festival's config (scalars): the engine was built from them, and a
  data folder has no other copy (a festival opened on it is given neither);
- every table of rows (Engine.tables(): checkouts, lines, orders, buyers,
  keys, skus, buyer_balances, journal), its rows only, and its capacity, so
  that a restart keeps the room it had;
- the hash indexes' entries (buyers, idempotency keys), placed again on
  reading, and their sizes;
- the scarce counters, stocked units, balances and live figures.
What the engine derives from the catalog (the SKU index, returning buyers,
the SKUs' merchant and brand rows) is built again, not stored.

A table whose record layout changed since the snapshot was written is read
field by field by name (a new field starts at zero); a stored field the code
no longer has is refused rather than dropped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from double11.catalog.model import Catalog
from double11.config import FestivalConfig
from double11.engine.columns import Column, Table
from double11.engine.hashindex import HashIndex
from double11.engine.machine import Engine
from double11.engine.stats import PerSecond
from double11.storage import UnreadableData
from double11.storage import snapshot as snapshots
from double11.storage.snapshot import Snapshot, State

_CATALOG_ARRAYS = ("merchant_id", "merchant_marketplace", "merchant_country", "brand_id", "brand_international",
                   "brand_origin", "sku_id", "sku_merchant", "sku_brand", "sku_price_fen", "sku_stock",
                   "returning_buyers")
_CATALOG_NAMES = ("merchant_name", "brand_name", "sku_name")
_STATS_SCALARS = ("gmv_fen", "mobile_gmv_fen", "refunded_fen", "settled_fen", "checkouts", "orders", "payments",
                  "buyers", "new_buyers")
_STATS_ARRAYS = ("merchant_gmv", "brand_gmv", "country_gmv", "gmv_by_hour")
_PER_SECOND = ("checkouts_per_s", "payments_per_s")


def _indexes(engine: Engine) -> dict[str, HashIndex]:
    return {"buyer_index": engine.buyer_index, "idem_index": engine.idem_index}


def _text(strings: list[str]) -> np.ndarray:
    return np.frombuffer(msgspec.json.encode(strings), dtype=np.uint8)


# ------------------------------------------------------------------ engine -> state
def engine_state(engine: Engine) -> State:
    """The engine's state; its arrays are views of the live buffers where they
    can be (read while the engine stands still)."""
    cat, ledger, stats = engine.catalog, engine.ledger, engine.stats
    arrays: dict[str, np.ndarray] = {f"catalog.{name}": getattr(cat, name) for name in _CATALOG_ARRAYS}
    names = {name: getattr(cat, name, None) for name in _CATALOG_NAMES}  # a format 1 catalog may lack sku_name
    arrays |= {f"catalog.{name}": _text([str(x) for x in value]) for name, value in names.items() if value is not None}
    tables = engine.tables()
    arrays |= {name: _rows(table) for name, table in tables.items()}
    indexes = {}
    for name, index in _indexes(engine).items():
        saved = index.__getstate__()  # its live entries and table size
        arrays[name] = saved["entries"]
        indexes[name] = {"bits": int(saved["bits"]), "size": int(saved["size"])}
    arrays |= {"available": engine.counters.available, "sku_stocked": engine.sku_stocked,
               "ledger.merchant_balance": ledger.merchant_balance}
    arrays |= {f"stats.{name}": getattr(stats, name) for name in _STATS_ARRAYS}
    per_second = {}
    for name in _PER_SECOND:
        counter: PerSecond = getattr(stats, name)
        arrays[f"stats.{name}"] = np.array(sorted(counter.counts.items()), dtype=np.int64).reshape(-1, 2)
        per_second[name] = {"peak": counter.peak, "peak_second": counter.peak_second}
    scalars = {
        "config": msgspec.to_builtins(engine.config),
        "now_ms": int(engine.now_ms),
        "expire_cursor": int(engine.expire_cursor),
        "capacity": {name: table.capacity for name, table in tables.items()},
        "indexes": indexes,
        "counters": {name: [int(o), int(n)] for name, (o, n) in engine.counters.kinds.items()},
        "stock_offset": int(engine.stock_offset),
        "ledger": {"escrow": int(ledger.escrow), "platform": int(ledger.platform),
                   "marketing": int(ledger.marketing)},
        "stats": {name: int(getattr(stats, name)) for name in _STATS_SCALARS} | {"per_second": per_second},
    }
    return State(scalars, arrays)


def _rows(table: Table | Column) -> np.ndarray:
    return table.rows if isinstance(table, Table) else table.data


# ------------------------------------------------------------------ state -> engine
def read_engine(snap: Snapshot) -> Engine:
    """The engine a format 2 snapshot holds."""
    s = snap.scalars
    try:
        config = msgspec.convert(s["config"], FestivalConfig)
    except msgspec.ValidationError as exc:
        raise UnreadableData(f"{snap.path}: its festival config does not read: {exc}") from None
    # the tables are built empty (not prefaulted) and refilled from the file below
    engine = Engine(_catalog(snap), config, prefault=False)
    for name, table in engine.tables().items():
        if name in snap.schema:  # a table added since the snapshot was written starts empty
            _read_rows(snap, name, table, s["capacity"][name])
    for name, index in _indexes(engine).items():
        index.__setstate__({"entries": snap.array(name), **s["indexes"][name]})
    if config.prefault_memory:  # the free room written now, as a new engine's, not on the first batches
        engine.prefault()
    kinds = {name: (offset, count) for name, (offset, count) in s["counters"].items()}
    if kinds != engine.counters.kinds or s["stock_offset"] != engine.stock_offset:
        raise UnreadableData(f"{snap.path}: its scarce counters {kinds} do not match the catalog's "
                             f"{engine.counters.kinds}")
    snap.read_into("available", engine.counters.available)
    snap.read_into("sku_stocked", engine.sku_stocked)
    ledger, stats = engine.ledger, engine.stats
    snap.read_into("ledger.merchant_balance", ledger.merchant_balance)
    ledger.escrow, ledger.platform = s["ledger"]["escrow"], s["ledger"]["platform"]
    ledger.marketing = s["ledger"].get("marketing", 0)
    for name in _STATS_ARRAYS:
        snap.read_into(f"stats.{name}", getattr(stats, name))
    for name in _STATS_SCALARS:
        setattr(stats, name, s["stats"][name])
    for name in _PER_SECOND:
        counter: PerSecond = getattr(stats, name)
        counter.counts = {int(second): int(count) for second, count in snap.array(f"stats.{name}").tolist()}
        peak = s["stats"]["per_second"][name]
        counter.peak, counter.peak_second = peak["peak"], peak["peak_second"]
    engine.now_ms, engine.expire_cursor = s["now_ms"], s["expire_cursor"]
    return engine


def _catalog(snap: Snapshot) -> Catalog:
    columns: dict[str, Any] = {name: snap.array(f"catalog.{name}") for name in _CATALOG_ARRAYS}
    for name in _CATALOG_NAMES:
        if f"catalog.{name}" in snap.schema:
            columns[name] = msgspec.json.decode(snap.array(f"catalog.{name}").tobytes(), type=list[str])
    return Catalog(**columns)


def _read_rows(snap: Snapshot, name: str, table: Table | Column, capacity: int) -> None:
    size = snap.shape(name)[0]
    rows = table.refill(size, capacity)
    stored = snap.dtype(name)
    if stored == rows.dtype:
        snap.read_into(name, rows)
        return
    # the record layout changed since: field by field, by name
    dropped = sorted(set(stored.names or ()) - set(rows.dtype.names or ()))
    if stored.names is None or rows.dtype.names is None or dropped:
        raise UnreadableData(f"{snap.path}: table {name} is stored as {stored}, which this code cannot read "
                             f"into {rows.dtype} (fields it no longer has: {dropped})")
    old = snap.array(name)
    for field in stored.names:
        rows[field] = old[field]


def _from_pickled(old: Engine) -> Engine:
    """The engine a format 1 snapshot pickled, in this code's layout: a
    fresh engine holding its rows (field by field where a record gained
    fields since; a table it did not have starts empty) and the rest of its
    state as it was."""
    engine = Engine(old.catalog, old.config, prefault=False)
    kept = vars(old)
    old_tables = {"skus": kept["skus"], "checkouts": kept["checkouts"], "lines": kept["lines"],
                  "orders": kept["orders"], "buyers": kept["buyers"], "keys": kept["keys"],
                  "buyer_balances": kept["ledger"].buyer_balance, "journal": kept["ledger"].journal}
    for name, table in engine.tables().items():
        if name not in old_tables:
            continue
        was = old_tables[name]
        stored = _rows(was)
        rows = table.refill(len(stored), was.capacity)
        if stored.dtype.names is None:
            rows[:] = stored
            continue
        for field in stored.dtype.names:
            rows[field] = stored[field]
    for name in ("now_ms", "expire_cursor", "counters", "stock_offset", "sku_stocked", "buyer_index", "idem_index",
                 "stats"):
        setattr(engine, name, kept[name])
    ledger = kept["ledger"]
    engine.ledger.merchant_balance = ledger.merchant_balance
    engine.ledger.escrow, engine.ledger.platform = ledger.escrow, ledger.platform
    return engine


# ------------------------------------------------------------------ files
def write(directory: Path, seq: int, engine: Engine) -> Path:
    """The engine's state as the snapshot at `seq` (format 2)."""
    return snapshots.write(directory, seq, engine_state(engine))


def read(path: Path) -> Engine:
    """The engine of a snapshot of any format this code reads."""
    if snapshots.snapshot_format(path) == 1:
        return _from_pickled(snapshots.read_pickled(path))
    with snapshots.open_snapshot(path) as snap:
        return read_engine(snap)
