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
  binary form on `d11.unit.<unit>.stock`: whole, or as the SKU rows that
  changed since a report the asker holds (`ReportsSent` keeps the unit's
  last few).  A catalog's SKUs are read every limits.rebalance_period_s, and
  most of them do not change between two reads: a whole report of 100,000
  SKUs is 2.4 MB, and reading it whole ten times a second cost more than a core.
"""

from __future__ import annotations

import collections
import dataclasses
import secrets
import struct
from dataclasses import dataclass

import numpy as np

from double11 import limits
from double11.catalog.model import Catalog
from double11.engine.machine import Engine

# magic, seq, the report's id, the id of the report it is the changes since (0: whole), SKUs,
# SKU rows in it (all of them, whole), templates, deals
_HEADER = struct.Struct("<4sQQQIIII")
_MAGIC = b"D11R"  # (b"D11S": whole only and no ids; b"D11Q": before the promotions' shares)


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
    (definitions.py), each what is left and what was used.  `report_id`: the
    unit's name for it (ReportsSent), which an asker sends back to be told
    what changed since; 0 for a report no unit keeps."""

    seq: int
    available: np.ndarray  # int64: for sale now (not reserved, not sold)
    stocked: np.ndarray  # int64: the unit's quota (restocked, less released)
    sold: np.ndarray  # int64
    coupons_left: np.ndarray = dataclasses.field(default_factory=lambda: _NONE)  # by template: budget - granted
    granted: np.ndarray = dataclasses.field(default_factory=lambda: _NONE)
    deal_left: np.ndarray = dataclasses.field(default_factory=lambda: _NONE)  # by deal: qty - taken
    deal_taken: np.ndarray = dataclasses.field(default_factory=lambda: _NONE)  # reserved and sold
    report_id: int = 0

    @classmethod
    def of(cls, engine: Engine, seq: int, report_id: int = 0) -> StockReport:
        """Read under the festival's read barrier (a copy)."""
        templates = engine.promos.coupon_templates
        t = templates.rows[:templates.size]
        deals = engine.promos.deals
        d = deals.rows[:deals.size]
        return cls(seq, engine.available.astype(np.int64), engine.sku_stocked.astype(np.int64),
                   engine.sku_sold.astype(np.int64), (t["budget_count"] - t["granted"]).astype(np.int64),
                   t["granted"].astype(np.int64), (d["qty"] - d["taken"]).astype(np.int64),
                   d["taken"].astype(np.int64), report_id)

    def to_bytes(self, since: StockReport | None = None) -> bytes:
        """Whole, or (since: a report of the same unit and catalog) only the
        SKU rows that changed since it; the templates and deals, few, whole."""
        skus = len(self.available)
        sku_columns: tuple[np.ndarray, ...] = (self.available, self.stocked, self.sold)
        base_id, rows = 0, b""
        if since is not None and since.report_id and len(since.available) == skus:
            changed = np.flatnonzero((self.available != since.available) | (self.stocked != since.stocked)
                                     | (self.sold != since.sold))
            sku_columns = tuple(column[changed] for column in sku_columns)
            base_id, rows = since.report_id, changed.astype("<u4").tobytes()
        columns = (*sku_columns, self.coupons_left, self.granted, self.deal_left, self.deal_taken)
        return b"".join((_HEADER.pack(_MAGIC, self.seq, self.report_id, base_id, skus, len(sku_columns[0]),
                                      len(self.granted), len(self.deal_taken)),
                         rows, *(column.astype("<i8").tobytes() for column in columns)))

    @classmethod
    def from_bytes(cls, data: bytes, since: StockReport | None = None) -> StockReport:
        """A report from its bytes; changes since a report need that report (`since`)."""
        if len(data) < _HEADER.size:
            raise ValueError("a stock report shorter than its header")
        magic, seq, report_id, base_id, skus, changed, templates, deals = _HEADER.unpack_from(data)
        rows_bytes = 4 * changed if base_id else 0
        if magic != _MAGIC or len(data) != _HEADER.size + rows_bytes + 8 * (3 * changed + 2 * templates + 2 * deals):
            raise ValueError("not a stock report (magic or length)")
        if base_id and (since is None or since.report_id != base_id or len(since.available) != skus):
            held = "none" if since is None else f"report {since.report_id} of {len(since.available)} SKUs"
            raise ValueError(f"a stock report of the changes since report {base_id} of {skus} SKUs, "
                             f"but the report held is {held}")
        rows = np.frombuffer(data, dtype="<u4", count=changed, offset=_HEADER.size) if base_id else None
        if rows is not None and len(rows) and int(rows.max()) >= skus:
            raise ValueError(f"a stock report names SKU row {int(rows.max())} of {skus}")
        values = np.frombuffer(data, dtype="<i8", offset=_HEADER.size + rows_bytes).astype(np.int64)
        columns = np.split(values, np.cumsum([changed, changed, changed, templates, templates, deals]))
        if since is not None and rows is not None:
            for k, held_column in enumerate((since.available, since.stocked, since.sold)):
                whole = held_column.copy()
                whole[rows] = columns[k]
                columns[k] = whole
        available, stocked, sold, coupons_left, granted, deal_left, deal_taken = columns
        return cls(int(seq), available, stocked, sold, coupons_left, granted, deal_left, deal_taken, int(report_id))


class ReportsSent:
    """A unit's last few reports (limits.stock_reports_kept), each under an id
    of its own (this process's random prefix: a new primary's ids never name
    another's reports), so an asker that holds one is sent what changed."""

    def __init__(self, kept: int = limits.stock_reports_kept) -> None:
        self._kept: collections.OrderedDict[int, StockReport] = collections.OrderedDict()
        self._size = kept
        self._prefix = (secrets.randbits(31) + 1) << 32
        self._count = 0

    def new_id(self) -> int:
        self._count += 1
        return self._prefix + self._count

    def answer(self, report: StockReport, since_id: int = 0) -> bytes:
        """The report's bytes (the changes since report since_id if still
        kept, else whole); the report is kept for the next asker."""
        base = self._kept.get(since_id) if since_id else None
        self._kept[report.report_id] = report
        while len(self._kept) > self._size:
            self._kept.popitem(last=False)
        return report.to_bytes(base)
