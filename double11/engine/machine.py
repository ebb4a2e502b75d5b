"""The state machine: applies a CommandBatch at a given time, deterministically.

Pure domain: NumPy, Numba and the standard library, no clock, no files, no
HTTP.  The same batches at the same times give the same state, byte for byte,
which is what makes recovery (snapshot + log replay) exact.

A batch is applied as if its commands ran one by one, in order, because they
do: checkouts whose payment window has closed expire first (time is the
batch's), then the compiled loop of `transitions.py` takes each command in
turn: idempotency (a key seen before answers its first result), then the
command itself.  This module owns the state's layout (columns per entity) and
hands the loop the buffers it needs.
"""

from __future__ import annotations

import numpy as np

from double11 import limits
from double11.catalog.model import Catalog
from double11.config import FestivalConfig
from double11.engine import lookups
from double11.engine import transitions as tx
from double11.engine.batch import CommandBatch
from double11.engine.columns import Column
from double11.engine.counters import ScarceCounters
from double11.engine.hashindex import HashIndex, StaticIndex
from double11.engine.ledger import Ledger
from double11.engine.stats import FestivalStats
from double11.engine.status import Status

__all__ = ["Engine", "Status", "ranges"]

_NO_ROWS = np.zeros(0, dtype=np.int64)


def ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of arange(start, start + count) for each pair."""
    counts = counts.astype(np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    first = starts.astype(np.int64) - (np.cumsum(counts) - counts)
    return np.repeat(first, counts) + np.arange(total, dtype=np.int64)


class Engine:
    def __init__(self, catalog: Catalog, config: FestivalConfig):
        self.catalog = catalog
        self.config = config
        self.now_ms = 0
        # catalog, as rows
        self.sku_index = StaticIndex(catalog.sku_id)
        merchant_index = HashIndex(catalog.merchants)
        merchant_index.insert(catalog.merchant_id.astype(np.uint64))
        brand_index = HashIndex(catalog.brands)
        brand_index.insert(catalog.brand_id.astype(np.uint64))
        self.sku_merchant = merchant_index.lookup(catalog.sku_merchant.astype(np.uint64))
        self.sku_brand = brand_index.lookup(catalog.sku_brand.astype(np.uint64))
        # orders of a checkout go in ascending merchant id: sort by the id's rank
        merchant_rank = np.empty(catalog.merchants, dtype=np.int64)
        merchant_rank[np.argsort(catalog.merchant_id, kind="stable")] = np.arange(catalog.merchants)
        self.sku_merchant_rank = merchant_rank[self.sku_merchant]
        self.sku_price = catalog.sku_price_fen.astype(np.int64)
        # stock: available units live in the scarce counters
        self.counters = ScarceCounters()
        self.stock_offset = self.counters.add_kind("sku_stock", catalog.sku_stock)
        self.sku_sold = np.zeros(catalog.skus, dtype=np.int64)
        self.sku_stocked = catalog.sku_stock.astype(np.int64).copy()
        cap, pf = config.expected_checkouts, config.prefault_memory
        # checkouts (row = id - 1)
        self.c_buyer = Column(np.int64, cap, pf)  # buyer row
        self.c_country = Column(np.uint16, cap, pf)
        self.c_channel = Column(np.uint8, cap, pf)
        self.c_status = Column(np.uint8, cap, pf)
        self.c_amount = Column(np.int64, cap, pf)
        self.c_created = Column(np.int64, cap, pf)
        self.c_line_start = Column(np.int64, cap, pf)
        self.c_lines = Column(np.uint8, cap, pf)
        self.c_order_start = Column(np.int64, cap, pf)
        self.c_orders = Column(np.uint8, cap, pf)
        # lines, grouped by checkout, then by order (merchant ascending)
        self.l_sku = Column(np.int32, cap * 8 // 5, pf)  # sku row
        self.l_qty = Column(np.int16, cap * 8 // 5, pf)
        self.l_amount = Column(np.int64, cap * 8 // 5, pf)
        self.l_order = Column(np.int64, cap * 8 // 5, pf)  # order row
        self.l_position = Column(np.uint8, cap * 8 // 5, pf)  # where the line stood in its checkout
        # orders (row = id - 1): one per merchant of a checkout
        self.o_checkout = Column(np.int64, cap * 3 // 2, pf)  # checkout row
        self.o_merchant = Column(np.int32, cap * 3 // 2, pf)  # merchant row
        self.o_amount = Column(np.int64, cap * 3 // 2, pf)
        self.o_status = Column(np.uint8, cap * 3 // 2, pf)
        self.o_line_start = Column(np.int64, cap * 3 // 2, pf)
        self.o_lines = Column(np.uint8, cap * 3 // 2, pf)
        # buyers
        self.buyer_index = HashIndex(cap, pf)
        self.b_id = Column(np.int64, cap, pf)
        self.b_has_paid = Column(np.bool_, cap, pf)
        self.b_returning = Column(np.bool_, cap, pf)
        self.returning_sorted = np.unique(catalog.returning_buyers.astype(np.int64))
        # idempotency: what each remembered command answered
        self.idem_index = HashIndex(cap * 11 // 5, pf)
        self.i_fingerprint = Column(np.uint64, cap * 11 // 5, pf)
        self.i_code = Column(np.uint8, cap * 11 // 5, pf)
        self.i_ref = Column(np.int64, cap * 11 // 5, pf)
        self.expire_cursor = 0
        self.ledger = Ledger(catalog.merchants, cap, pf)
        self.stats = FestivalStats(catalog, config)

    def commission(self, amounts):
        """The platform's cut of a settlement: floor(amount * bps / 10,000) fen."""
        return amounts * self.config.commission_bps // 10_000

    @property
    def sku_reserved(self) -> np.ndarray:
        """Units held by unpaid checkouts.  Derived, not kept: every unit is for
        sale, reserved or sold, so keeping it would be a third write per line
        (`reserved_by_checkouts` recounts it from the checkouts, for audits)."""
        return self.sku_stocked - self.available - self.sku_sold

    def reserved_by_checkouts(self) -> np.ndarray:
        """Units per SKU on the lines of checkouts still reserved, counted afresh."""
        rows = np.flatnonzero(self.c_status.data == Status.reserved)
        lines = ranges(self.c_line_start.data[rows], self.c_lines.data[rows])
        return np.bincount(self.l_sku.data[lines], weights=self.l_qty.data[lines],
                           minlength=self.catalog.skus).astype(np.int64)

    @property
    def available(self) -> np.ndarray:
        return self.counters.available[self.stock_offset: self.stock_offset + self.catalog.skus]

    # ------------------------------------------------------------------ apply
    def apply(self, batch: CommandBatch, now_ms: int) -> tuple[np.ndarray, np.ndarray]:
        """Applies the batch; returns (result code, reference id) per command."""
        now = max(int(now_ms), self.now_ms)
        self.now_ms = now
        self._expire(now)
        n = len(batch)
        code = batch.invalid.astype(np.uint8)
        ref = np.zeros(n, dtype=np.int64)
        if n == 0 or code.all():
            return code, ref
        sku_row = self.sku_index.lookup(batch.sku) if len(batch.sku) else _NO_ROWS
        restocks = batch.op == tx.RESTOCK
        target_row = self.sku_index.lookup(np.where(restocks, batch.target, 0)) if restocks.any() else _NO_ROWS
        sizes = np.array([columns[0].size for columns in self._entity_columns()], dtype=np.int64)
        totals = np.zeros(tx.TOTALS, dtype=np.int64)
        checkouts, lines, orders, (b_id, b_has_paid, b_returning, buyer_balance), keys, transfers = (
            self._with_room(n, len(batch.sku)))
        idem, buyers = self.idem_index, self.buyer_index
        k_fingerprint, k_code, k_ref = keys
        # the hash-table probes first, each in a tight pass (see lookups.py)
        claimed = np.empty(n, dtype=np.int64)
        sizes[tx.S_KEYS] = lookups.claim_keys(batch.key, batch.fingerprints(), code, ref, idem.table, idem.shift,
                                              idem.mask, k_fingerprint, sizes[tx.S_KEYS], claimed)
        buyer_row = np.empty(n, dtype=np.int64)
        sizes[tx.S_BUYERS] = lookups.claim_buyers(batch.op, batch.target, claimed, buyers.table, buyers.shift,
                                                  buyers.mask, b_id, b_has_paid, b_returning, self.returning_sorted,
                                                  buyer_balance, sizes[tx.S_BUYERS], buyer_row)
        tx.apply_batch(
            (batch.op, batch.channel, batch.lines, batch.country, batch.key, batch.target, batch.amount, target_row),
            (batch.sku, sku_row, batch.qty),
            now, self.config.commission_bps, sizes, totals, code, ref,
            (k_code, k_ref),
            (self.sku_merchant, self.sku_merchant_rank, self.sku_brand, self.sku_price),
            (self.available, self.sku_sold, self.sku_stocked),
            checkouts, lines, orders,
            (b_has_paid, b_returning),
            (buyer_balance, self.ledger.merchant_balance) + transfers,
            (self.stats.merchant_gmv, self.stats.brand_gmv, self.stats.country_gmv),
            (np.empty(limits.checkout_lines_max, dtype=np.int64), claimed, buyer_row),
        )
        self._set_sizes(sizes)
        self.ledger.escrow += int(totals[tx.T_ESCROW])
        self.ledger.platform += int(totals[tx.T_PLATFORM])
        self.stats.on_batch(now, totals)
        return code, ref

    # The buffers the compiled loop works on, each with room for the batch.
    # Columns of one entity go together, in the order the loop unpacks them;
    # the loop appends to them in place and reports the new counts in `sizes`.
    def _entity_columns(self) -> tuple[tuple[Column, ...], ...]:
        """Columns by entity, in the order of the rows of `sizes` (tx.S_*)."""
        ledger = self.ledger
        return (
            (self.c_buyer, self.c_country, self.c_channel, self.c_status, self.c_amount, self.c_created,
             self.c_line_start, self.c_lines, self.c_order_start, self.c_orders),
            (self.l_sku, self.l_qty, self.l_amount, self.l_order, self.l_position),
            (self.o_checkout, self.o_merchant, self.o_amount, self.o_status, self.o_line_start, self.o_lines),
            (self.b_id, self.b_has_paid, self.b_returning, ledger.buyer_balance),
            (self.i_fingerprint, self.i_code, self.i_ref),
            (ledger.journal_kind, ledger.journal_ref, ledger.journal_amount),
        )

    def _with_room(self, n: int, n_lines: int) -> tuple[tuple[np.ndarray, ...], ...]:
        """Each entity's column buffers with room for a batch of n commands and
        n_lines lines (at most one order per line, two transfers per command)."""
        self.idem_index.reserve(n)
        self.buyer_index.reserve(n)
        room = (n, n_lines, n_lines, n, n, 2 * n)
        return tuple(tuple(column.reserve(extra) for column in columns)
                     for columns, extra in zip(self._entity_columns(), room))

    def _set_sizes(self, sizes: np.ndarray) -> None:
        for columns, size in zip(self._entity_columns(), sizes.tolist()):
            for column in columns:
                column.size = size
        self.buyer_index.size = int(sizes[tx.S_BUYERS])
        self.idem_index.size = int(sizes[tx.S_KEYS])

    def _expire(self, now: int) -> None:
        due = now - self.config.payment_timeout_ms
        if self.expire_cursor >= self.c_created.size or self.c_created.data[self.expire_cursor] > due:
            return
        self.expire_cursor = int(tx.expire_due(
            self.expire_cursor, due, self.available, self.c_status.data, self.c_created.data,
            self.c_line_start.data, self.c_lines.data, self.c_order_start.data, self.c_orders.data,
            self.l_sku.data, self.l_qty.data, self.o_status.data))
