"""The state machine: applies a CommandBatch at a given time, deterministically.

Pure domain: NumPy, Numba and the standard library, no clock, no files, no
HTTP.  The same batches at the same times give the same state, byte for byte,
which is what makes recovery (snapshot + log replay) exact.

A batch is applied as if its commands ran one by one, in order, because they
do: checkouts whose payment window has closed expire first (time is the
batch's), then the compiled loop of `transitions.py` takes each command in
turn: idempotency (a key seen before answers its first result), then the
command itself.  This module owns the state's layout (an array of records per
entity) and hands the loop the buffers it needs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np

from double11 import areas, limits
from double11.catalog.model import Catalog
from double11.config import FestivalConfig
from double11.engine import lookups
from double11.engine import transitions as tx
from double11.engine.batch import CommandBatch
from double11.engine.columns import Column, FieldOf, Table
from double11.engine.counters import ScarceCounters
from double11.engine.hashindex import HashIndex, StaticIndex
from double11.engine.ledger import Ledger
from double11.engine.stats import FestivalStats
from double11.engine.status import Status
from double11.promotions import pricing
from double11.promotions.spec import GRANT
from double11.promotions.tables import PromotionTables

__all__ = ["Engine", "Status", "ranges"]

_NO_ROWS = np.zeros(0, dtype=np.int64)


class _LookedUp(NamedTuple):
    """A batch between its lookups and its main loop (claimed is None: nothing to run)."""

    batch: CommandBatch
    now: int
    code: np.ndarray
    ref: np.ndarray
    sku_row: np.ndarray
    target_row: np.ndarray
    claimed: np.ndarray | None
    buyer_row: np.ndarray | None
    arg_rows: np.ndarray  # the batch's args, ids the engine looks up as rows


# rows of the main loop's `sizes` that it appends to; the lookups own the key
# and buyer tables' sizes (transitions.S_*)
_APPENDED_ROWS = [tx.S_CHECKOUTS, tx.S_LINES, tx.S_ORDERS, tx.S_TRANSFERS]

# Each entity's record (see columns.Table).  Rows of other entities are held
# as row numbers (buyer, order, sku: rows, not external ids).
# `amount` is a list amount.  `promo` links a checkout with discounts or
# coupons to its promotions record (row + 1; 0: none) and a buyer with coupons
# or deal units to theirs (promotions/tables.py); `deal_head` is a SKU's
# deals (row + 1 of the newest)
SKU_FIELDS = [("price", "i8"), ("sold", "i8"), ("deal_head", "i8"), ("merchant", "i4"), ("merchant_rank", "i4"),
              ("brand", "i4")]
CHECKOUT_FIELDS = [("buyer", "i8"), ("amount", "i8"), ("created", "i8"), ("line_start", "i8"), ("order_start", "i8"),
                   ("promo", "i8"), ("country", "u2"), ("channel", "u1"), ("status", "u1"), ("lines", "u1"),
                   ("orders", "u1")]
LINE_FIELDS = [("amount", "i8"), ("order", "i8"), ("sku", "i4"), ("qty", "i2"),
               ("position", "u1")]  # position: where the line stood in its checkout
ORDER_FIELDS = [("checkout", "i8"), ("amount", "i8"), ("line_start", "i8"), ("merchant", "i4"), ("status", "u1"),
                ("lines", "u1")]
BUYER_FIELDS = [("id", "i8"), ("promo", "i4"), ("has_paid", "?"), ("returning", "?")]
KEY_FIELDS = [("fingerprint", "u8"), ("ref", "i8"), ("code", "u1")]  # what the key's first command answered
# growing_tables(), in order: names for operators (a table that grows pauses the engine)
GROWING_TABLE_NAMES = ("checkouts", "lines", "orders", "buyers", "buyer balances", "idempotency keys", "journal")


# where the ids the engine looks up sit in an operator command's args
_GRANT, _GRANT_BUYER = GRANT.number, GRANT.arg_at("buyer")
_PSIZES = 8  # where the promotions' sizes are in the loop's `promos`
# by op: (where in its args, whether a list, which index) of each id it names that the engine looks up
_LOOKUPS: dict[int, list[tuple[int, bool, str]]] = {
    command.number: [(command.arg_at(f.name), f.kind == "list", str(f.lookup or f.items[0].lookup))
                     for f in command.arg_fields if f.lookup or (f.items and f.items[0].lookup)]
    for command in areas.COMMANDS if command.in_args}
_LOOKED_UP = np.array([op for op, found in _LOOKUPS.items() if found], dtype=np.uint8)


def ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of arange(start, start + count) for each pair."""
    counts = counts.astype(np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    first = starts.astype(np.int64) - (np.cumsum(counts) - counts)
    return np.repeat(first, counts) + np.arange(total, dtype=np.int64)


class Engine:
    # Each field of the growing tables, read like a column by views, audits and
    # answers: c_ of checkouts, l_ of lines, o_ of orders, b_ of buyers, i_ of
    # idempotency keys (engine.c_amount.data is the checkouts' amounts).
    c_buyer = FieldOf("checkouts", "buyer")
    c_amount = FieldOf("checkouts", "amount")
    c_created = FieldOf("checkouts", "created")
    c_line_start = FieldOf("checkouts", "line_start")
    c_order_start = FieldOf("checkouts", "order_start")
    c_country = FieldOf("checkouts", "country")
    c_channel = FieldOf("checkouts", "channel")
    c_status = FieldOf("checkouts", "status")
    c_lines = FieldOf("checkouts", "lines")
    c_orders = FieldOf("checkouts", "orders")
    c_promo = FieldOf("checkouts", "promo")
    l_amount = FieldOf("lines", "amount")
    l_order = FieldOf("lines", "order")
    l_sku = FieldOf("lines", "sku")
    l_qty = FieldOf("lines", "qty")
    l_position = FieldOf("lines", "position")
    o_checkout = FieldOf("orders", "checkout")
    o_amount = FieldOf("orders", "amount")
    o_line_start = FieldOf("orders", "line_start")
    o_merchant = FieldOf("orders", "merchant")
    o_status = FieldOf("orders", "status")
    o_lines = FieldOf("orders", "lines")
    b_id = FieldOf("buyers", "id")
    b_has_paid = FieldOf("buyers", "has_paid")
    b_returning = FieldOf("buyers", "returning")
    b_promo = FieldOf("buyers", "promo")
    i_fingerprint = FieldOf("keys", "fingerprint")
    i_ref = FieldOf("keys", "ref")
    i_code = FieldOf("keys", "code")

    def __init__(self, catalog: Catalog, config: FestivalConfig, prefault: bool | None = None):
        """prefault: write every page of the tables now (None: as the config says;
        a snapshot being read says no, its rows replace these tables)."""
        self.catalog = catalog
        self.config = config
        self.now_ms = 0
        # catalog, as rows
        self.sku_index = StaticIndex(catalog.sku_id)
        self.merchant_index = merchant_index = HashIndex(catalog.merchants)
        merchant_index.insert(catalog.merchant_id.astype(np.uint64))
        brand_index = HashIndex(catalog.brands)
        brand_index.insert(catalog.brand_id.astype(np.uint64))
        # orders of a checkout go in ascending merchant id: sort by the id's rank
        merchant_rank = np.empty(catalog.merchants, dtype=np.int64)
        merchant_rank[np.argsort(catalog.merchant_id, kind="stable")] = np.arange(catalog.merchants)
        # one record per SKU: what a checkout line reads and a payment adds to
        self.skus = Table(SKU_FIELDS, catalog.skus)
        self.skus.size = catalog.skus
        rows = self.skus.rows
        rows["merchant"] = merchant_index.lookup(catalog.sku_merchant.astype(np.uint64))
        rows["merchant_rank"] = merchant_rank[rows["merchant"]]
        rows["brand"] = brand_index.lookup(catalog.sku_brand.astype(np.uint64))
        rows["price"] = catalog.sku_price_fen
        # stock: available units live in the scarce counters
        self.counters = ScarceCounters()
        self.stock_offset = self.counters.add_kind("sku_stock", catalog.sku_stock)
        self.sku_stocked = catalog.sku_stock.astype(np.int64).copy()
        cap = config.expected_checkouts
        pf = config.prefault_memory if prefault is None else prefault
        self.checkouts = Table(CHECKOUT_FIELDS, cap, pf)  # row = id - 1
        self.lines = Table(LINE_FIELDS, cap * 8 // 5, pf)  # grouped by checkout, then by order
        self.orders = Table(ORDER_FIELDS, cap * 3 // 2, pf)  # row = id - 1; one per merchant of a checkout
        self.buyer_index = HashIndex(cap, pf)
        self.buyers = Table(BUYER_FIELDS, cap, pf, align=False)
        self.returning_sorted = np.unique(catalog.returning_buyers.astype(np.int64))
        # idempotency: what each remembered command answered
        self.idem_index = HashIndex(cap * 11 // 5, pf)
        self.keys = Table(KEY_FIELDS, cap * 11 // 5, pf, align=False)
        self.expire_cursor = 0
        self.ledger = Ledger(catalog.merchants, cap, pf)
        self.stats = FestivalStats(catalog, config)
        self.promos = PromotionTables(config.expected_discounted_checkouts, pf)

    def commission(self, amounts):
        """The platform's cut of a settlement: floor(amount * bps / 10,000) fen."""
        return amounts * self.config.commission_bps // 10_000

    # the SKU record's fields, as arrays (views into `skus`)
    @property
    def sku_price(self) -> np.ndarray:
        return self.skus.rows["price"]

    @property
    def sku_sold(self) -> np.ndarray:
        return self.skus.rows["sold"]

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
        self._with_room(len(batch), len(batch.sku), batch)
        return self._run(self._look_up(batch, now_ms))

    def apply_all(self, batches: Iterable[tuple[CommandBatch, int]]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """apply() of each (batch, now_ms) in turn: the same results and the
        same state, with each batch's lookups (its SKUs found, its keys and
        buyers claimed) on a second thread beside the main loop of the batch
        before.  The lookups are page walks and the main loop mostly work, so
        on two cores they overlap (checkout batches of 20,480: 4.4M-5.7M a
        second against 2.8M-4.0M one after the other).

        Safe side by side because the lookups write only the key and buyer
        tables' new rows and sizes, which the main loop does not touch, and
        every table is given room for both batches before they start (growing
        moves a table).  `batches` is read one batch ahead of the results
        yielded: a batch may be built from the results of the one two before
        it.  Every batch read is applied, so stop by ending `batches`."""
        pending = iter(batches)
        item = next(pending, None)
        if item is None:
            return
        self._with_room(len(item[0]), len(item[0].sku), item[0])
        looked: _LookedUp | None = self._look_up(*item)
        with ThreadPoolExecutor(1, thread_name_prefix="double11-lookups") as lookups_thread:
            while looked is not None:
                item = next(pending, None)
                ahead = None
                if item is not None:
                    batch = item[0]
                    self._with_room(len(looked.batch) + len(batch), len(looked.batch.sku) + len(batch.sku),
                                    looked.batch, batch)
                    ahead = lookups_thread.submit(self._look_up, *item)
                try:
                    result = self._run(looked)
                finally:
                    looked = ahead.result() if ahead is not None else None
                try:
                    yield result
                except GeneratorExit:
                    if looked is not None:  # closed early: the batch already looked up is applied too
                        self._run(looked)
                    raise

    def _look_up(self, batch: CommandBatch, now_ms: int) -> _LookedUp:
        """A batch's first half: its SKUs' rows, and each command's key and
        each checkout's buyer claimed (see lookups.py); the tables have room."""
        now = max(int(now_ms), self.now_ms)
        self.now_ms = now
        n = len(batch)
        code = batch.invalid.astype(np.uint8)
        ref = np.zeros(n, dtype=np.int64)
        if n == 0 or code.all():
            return _LookedUp(batch, now, code, ref, _NO_ROWS, _NO_ROWS, None, None, batch.arg)
        sku_row = self.sku_index.lookup(batch.sku) if len(batch.sku) else _NO_ROWS
        # the SKU that a restock or a release names in its path, as a row
        on_sku = (batch.op == tx.RESTOCK) | (batch.op == tx.RELEASE_)
        target_row = self.sku_index.lookup(np.where(on_sku, batch.target, 0)) if on_sku.any() else _NO_ROWS
        idem, buyer_index = self.idem_index, self.buyer_index
        claimed = np.empty(n, dtype=np.int64)
        keys = lookups.claim_keys(batch.key, batch.fingerprints(), code, ref, idem.table, idem.shift, idem.mask,
                                  self.keys.reserve(0), self.keys.size, claimed)
        self.keys.size = idem.size = int(keys)
        buyer_row = np.empty(n, dtype=np.int64)
        buyers = lookups.claim_buyers(self._buyer_ids(batch, code), claimed, buyer_index.table, buyer_index.shift,
                                      buyer_index.mask, self.buyers.reserve(0), self.returning_sorted,
                                      self.ledger.buyer_balance.reserve(0), self.buyers.size, buyer_row)
        # one funding account per buyer
        self.buyers.size = buyer_index.size = self.ledger.buyer_balance.size = int(buyers)
        return _LookedUp(batch, now, code, ref, sku_row, target_row, claimed, buyer_row, self._arg_rows(batch, code))

    @staticmethod
    def _buyer_ids(batch: CommandBatch, code: np.ndarray) -> np.ndarray:
        """The buyer each command names (0: none): a checkout's, a grant's."""
        buyer_id = np.where(batch.op == tx.CHECKOUT, batch.target, 0)
        grants = np.flatnonzero((batch.op == _GRANT) & (code == 0))
        if len(grants):
            buyer_id[grants] = batch.arg[batch.arg_starts()[grants] + _GRANT_BUYER]
        return buyer_id

    def _arg_rows(self, batch: CommandBatch, code: np.ndarray) -> np.ndarray:
        """The batch's args with the ids that area commands' declarations say
        the engine looks up (`spec.Field.lookup`) made rows (-1: unknown, and
        a left-out optional id stays 0); the same array when none does."""
        ops = np.flatnonzero(np.isin(batch.op, _LOOKED_UP) & (code == 0))
        if not len(ops):
            return batch.arg
        rows = batch.arg.copy()
        starts = batch.arg_starts()
        at: dict[str, list[int]] = {"merchant": [], "sku": []}
        for i in ops.tolist():
            a = int(starts[i])
            for offset, is_list, kind in _LOOKUPS[int(batch.op[i])]:
                if is_list:
                    at[kind].extend(range(a + offset + 1, a + offset + 1 + int(rows[a + offset])))
                elif rows[a + offset]:
                    at[kind].append(a + offset)
        if at["merchant"]:
            rows[at["merchant"]] = self.merchant_index.lookup(rows[at["merchant"]].astype(np.uint64))
        if at["sku"]:
            rows[at["sku"]] = self.sku_index.lookup(rows[at["sku"]])
        # read-only as the batch's args when they are (a log record or a stream's replayed):
        # the compiled loop is compiled once for each mix of read-only arrays it meets
        rows.flags.writeable = batch.arg.flags.writeable
        return rows

    def _run(self, looked: _LookedUp) -> tuple[np.ndarray, np.ndarray]:
        """A batch's second half: what is due expires, then the main loop."""
        batch, now, code, ref, sku_row, target_row, claimed, buyer_row, arg_rows = looked
        self._expire(now)
        if claimed is None:
            return code, ref
        appended = (self.checkouts, self.lines, self.orders, self.ledger.journal)
        sizes = np.zeros(len(GROWING_TABLE_NAMES), dtype=np.int64)
        sizes[_APPENDED_ROWS] = [table.size for table in appended]
        totals = np.zeros(tx.TOTALS, dtype=np.int64)
        promos = self._promos_for_loop(now)
        tx.apply_batch(
            (batch.op, batch.channel, batch.lines, batch.country, batch.target, batch.amount, target_row, batch.args),
            (batch.sku, sku_row, batch.qty), arg_rows,
            now, self.config.commission_bps, sizes, totals, code, ref, self.keys.reserve(0),
            self.skus.rows, (self.available, self.sku_stocked),
            self.checkouts.reserve(0), self.lines.reserve(0), self.orders.reserve(0), self.buyers.reserve(0),
            (self.ledger.buyer_balance.reserve(0), self.ledger.merchant_balance, self.ledger.journal.reserve(0)),
            (self.stats.merchant_gmv, self.stats.brand_gmv, self.stats.country_gmv),
            (np.empty(limits.checkout_lines_max, dtype=np.int64), claimed, buyer_row),
            promos,
        )
        for table, size in zip(appended, sizes[_APPENDED_ROWS].tolist()):
            table.size = size
        for grown, size in zip(self.promos.growing(), promos[_PSIZES].tolist()):
            grown.size = size
        self.ledger.escrow += int(totals[tx.T_ESCROW])
        self.ledger.platform += int(totals[tx.T_PLATFORM])
        self.ledger.marketing += int(totals[tx.T_MARKETING])
        self.stats.on_batch(now, totals)
        return code, ref

    def _promos_for_loop(self, now: int) -> tuple:
        """The promotions' buffers as the compiled loop takes them (`promos`
        of transitions.apply_batch); their sizes go in and come out at _PSIZES."""
        p = self.promos
        psizes = np.array([table.size for table in p.growing()], dtype=np.int64)
        return (p.coupon_templates.reserve(0), p.coupons.reserve(0), p.thresholds.reserve(0),
                p.threshold_merchants.reserve(0), p.deals.reserve(0), p.deal_takers.reserve(0),
                p.checkout_coupons.reserve(0), p.figures.data, psizes,
                np.array([p.open_threshold(now)], dtype=np.int64),
                np.zeros((pricing.SCRATCH_ROWS, max(limits.checkout_lines_max, limits.checkout_coupons_max)),
                         dtype=np.int64),
                self.buyers.reserve(0), p.checkout_promos.reserve(0), p.line_promos.reserve(0),
                p.order_promos.reserve(0), p.buyer_promos.reserve(0))

    def tables(self) -> dict[str, Table | Column]:
        """Every table of rows the engine keeps, by the name a snapshot gives it
        (the record layouts are the *_FIELDS above)."""
        ledger = self.ledger
        core: dict[str, Table | Column] = {
            "skus": self.skus, "checkouts": self.checkouts, "lines": self.lines, "orders": self.orders,
            "buyers": self.buyers, "keys": self.keys, "buyer_balances": ledger.buyer_balance,
            "journal": ledger.journal}
        return core | self.promos.tables()

    # The buffers the compiled loop works on, each with room for the batch:
    # the loop appends in place and reports the new counts in `sizes`.
    def prefault(self) -> None:
        """Every page of the tables and indexes written (a restored engine:
        FestivalConfig.prefault_memory says why)."""
        for table in self.tables().values():
            table.prefault()
        self.buyer_index.prefault()
        self.idem_index.prefault()

    def growing_tables(self) -> tuple:
        """What grows, in the order of the rows of `sizes` (tx.S_*)."""
        ledger = self.ledger
        return (self.checkouts, self.lines, self.orders, self.buyers, ledger.buyer_balance, self.keys,
                ledger.journal)

    def _room(self, n: int, n_lines: int) -> tuple[int, ...]:
        """Rows a batch of n commands and n_lines lines may add to each growing
        table (at most one order per line, two transfers per command)."""
        return (n, n_lines, n_lines, n, n, n, 2 * n)

    def _with_room(self, n: int, n_lines: int, *batches: CommandBatch) -> tuple[np.ndarray, ...]:
        """Each buffer with room for n commands and n_lines lines, the
        promotions' for what `batches` hold."""
        self.idem_index.reserve(n)
        self.buyer_index.reserve(n)
        promos = np.sum([self.promos.room(batch) for batch in batches], axis=0)
        for table, extra in zip(self.promos.growing(), promos.tolist()):
            table.reserve(extra)
        return tuple(table.reserve(extra) for table, extra in zip(self.growing_tables(), self._room(n, n_lines)))

    def must_grow(self, n: int, n_lines: int, batch: CommandBatch | None = None) -> list[str]:
        """The tables a batch of n commands and n_lines lines (`batch`, for
        the promotions' tables) would make grow (each doubles and is copied,
        or rehashed: a pause of seconds when it holds tens of millions of
        rows); empty when they have room."""
        names = [name for name, table, extra in zip(GROWING_TABLE_NAMES, self.growing_tables(), self._room(n, n_lines))
                 if table.must_grow(extra)]
        promos = self.promos
        if batch is not None:
            names += [name for name, table, extra in zip(promos.GROWING_NAMES, promos.growing(), promos.room(batch))
                      if table.must_grow(extra)]
        names += [name for name, index in (("idempotency key index", self.idem_index),
                                           ("buyer index", self.buyer_index)) if index.must_grow(n)]
        return names

    def _expire(self, now: int) -> None:
        due = now - self.config.payment_timeout_ms
        checkouts = self.checkouts.rows
        if self.expire_cursor >= len(checkouts) or checkouts[self.expire_cursor]["created"] > due:
            return
        self.expire_cursor = int(tx.expire_due(self.expire_cursor, due, self.available, checkouts,
                                               self.lines.rows, self.orders.rows, self._promos_for_loop(now)))
