"""Stock as quotas: each unit holds a share of every SKU's stock.

A buyer's checkout runs in the buyer's unit alone, against that unit's share,
so no unit can sell what another holds and the shares sum to the whole: the
cluster never oversells.  The rebalancer (rebalancer.py) moves shares between
units off the hot path: `release` on the giving unit (double11/quotas), then
`restock` on the receiving one, each logged with the transfer's idempotency key.

- `split_stock`: the first split, made with the cluster;
- `unit_catalogs`: one catalog per unit, the whole catalog with its share of stock;
- `StockReport`: what the rebalancer reads of a unit (available, stocked and
  sold by SKU row; each template's coupons left and granted, each deal's
  units left and taken; the unit's stream position it was read at), and its
  binary form on `d11.unit.<unit>.stock`.
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass

import numpy as np

from double11.catalog.model import Catalog
from double11.engine.machine import Engine

_HEADER = struct.Struct("<4sQIII")  # magic, seq, SKUs, templates, deals
_MAGIC = b"D11S"  # (b"D11Q" was the layout before the promotions' shares)


def split_stock(stock: np.ndarray, units: int) -> np.ndarray:
    """(units, skus): each SKU's stock in near-equal shares, the remainder's
    units one each to the first units; every column sums to the SKU's stock."""
    if units < 1:
        raise ValueError(f"stock is split among at least one unit, got {units}")
    base, rest = np.divmod(stock.astype(np.int64), units)
    shares = np.repeat(base[None, :], units, axis=0)
    shares += np.arange(units, dtype=np.int64)[:, None] < rest[None, :]
    return shares


def unit_catalogs(catalog: Catalog, units: int) -> list[Catalog]:
    """The catalog for each unit: the same merchants, brands and SKUs (ids,
    prices), each with its share of the stock."""
    return [dataclasses.replace(catalog, sku_stock=share) for share in split_stock(catalog.sku_stock, units)]


_NONE = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True, eq=False)
class StockReport:
    """A unit's quotas as of stream record `seq`: its stock by SKU row, and
    its shares of the templates' budgets and the deals' units by row
    (definitions.py), each what is left and what was used."""

    seq: int
    available: np.ndarray  # int64: for sale now (not reserved, not sold)
    stocked: np.ndarray  # int64: the unit's quota (restocked, less released)
    sold: np.ndarray  # int64
    coupons_left: np.ndarray = dataclasses.field(default_factory=lambda: _NONE)  # by template: budget - granted
    granted: np.ndarray = dataclasses.field(default_factory=lambda: _NONE)
    deal_left: np.ndarray = dataclasses.field(default_factory=lambda: _NONE)  # by deal: qty - taken
    deal_taken: np.ndarray = dataclasses.field(default_factory=lambda: _NONE)  # reserved and sold

    @classmethod
    def of(cls, engine: Engine, seq: int) -> StockReport:
        """Read under the festival's read barrier (a copy)."""
        templates = engine.promos.coupon_templates
        t = templates.rows[:templates.size]
        deals = engine.promos.deals
        d = deals.rows[:deals.size]
        return cls(seq, engine.available.astype(np.int64), engine.sku_stocked.astype(np.int64),
                   engine.sku_sold.astype(np.int64), (t["budget_count"] - t["granted"]).astype(np.int64),
                   t["granted"].astype(np.int64), (d["qty"] - d["taken"]).astype(np.int64),
                   d["taken"].astype(np.int64))

    def to_bytes(self) -> bytes:
        columns = (self.available, self.stocked, self.sold, self.coupons_left, self.granted, self.deal_left,
                   self.deal_taken)
        return b"".join((_HEADER.pack(_MAGIC, self.seq, len(self.available), len(self.granted),
                                      len(self.deal_taken)),
                         *(column.astype("<i8").tobytes() for column in columns)))

    @classmethod
    def from_bytes(cls, data: bytes) -> StockReport:
        if len(data) < _HEADER.size:
            raise ValueError("a stock report shorter than its header")
        magic, seq, skus, templates, deals = _HEADER.unpack_from(data)
        if magic != _MAGIC or len(data) != _HEADER.size + 8 * (3 * skus + 2 * templates + 2 * deals):
            raise ValueError("not a stock report (magic or length)")
        values = np.frombuffer(data, dtype="<i8", offset=_HEADER.size).astype(np.int64)
        cuts = np.cumsum([skus, skus, skus, templates, templates, deals])
        columns = np.split(values, cuts)
        return cls(int(seq), *columns)

