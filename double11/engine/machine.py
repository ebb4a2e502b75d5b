"""The state machine: applies a CommandBatch at a given time, deterministically.

Pure domain: NumPy and the standard library, no clock, no files, no HTTP.
The same batches at the same times give the same state, byte for byte, which
is what makes recovery (snapshot + log replay) exact.

A batch is applied as if its commands ran one by one, in order:
1. checkouts whose payment window has closed expire (time is the batch's);
2. idempotency: a key seen before answers its first result; a key repeated
   inside the batch follows its first occurrence;
3. the rest is cut into segments in which reordering cannot change any
   result (no command touches a checkout twice, nothing returns stock after
   a checkout was taken), and each segment runs one vectorized pass per op:
   pays, confirms, refunds, cancels, restocks, then checkouts.
"""

from __future__ import annotations

import enum
from types import SimpleNamespace

import numpy as np

from double11.catalog.model import Catalog
from double11.config import FestivalConfig
from double11.engine.batch import Channel, CommandBatch, Op
from double11.engine.columns import Column, add_at, subtract_at
from double11.engine.counters import ScarceCounters
from double11.engine.hashindex import HashIndex, StaticIndex
from double11.engine.ledger import Ledger
from double11.engine.sorting import distinct, group_first, has_duplicates, run_lengths, starts_of_runs
from double11.engine.stats import FestivalStats
from double11.errors import Result


class Status(enum.IntEnum):
    reserved = 1
    paid = 2
    cancelled = 3
    expired = 4
    settled = 5
    refunded = 6


def _plain_ints(enum_type) -> SimpleNamespace:
    # NumPy compares an array with an IntEnum member ~10x slower than with an
    # int (it converts the member every time): the hot path uses plain ints
    return SimpleNamespace(**{member.name: int(member) for member in enum_type})


OP, ST, R = _plain_ints(Op), _plain_ints(Status), _plain_ints(Result)


def ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of arange(start, start + count) for each pair."""
    counts = counts.astype(np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    first = starts.astype(np.int64) - (np.cumsum(counts) - counts)
    return np.repeat(first, counts) + np.arange(total, dtype=np.int64)


def _order_lines(claim: np.ndarray, merchant_rank: np.ndarray, merchants: int) -> np.ndarray:
    """Line order by (claim, merchant rank, position): packed into one int64 and
    value-sorted when it fits (several times faster than a stable argsort)."""
    line_bits = max(1, int(len(claim) - 1).bit_length())
    merchant_bits = max(1, int(merchants - 1).bit_length())
    if int(claim[-1]).bit_length() + merchant_bits + line_bits > 62:
        return np.lexsort((np.arange(len(claim)), merchant_rank, claim))
    packed = np.sort((((claim << merchant_bits) | merchant_rank) << line_bits) | np.arange(len(claim)))
    return packed & ((1 << line_bits) - 1)


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
        rows = np.flatnonzero(self.c_status.data == ST.reserved)
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
        code = batch.invalid.astype(np.uint8)
        ref = np.zeros(len(batch), dtype=np.int64)
        valid = np.flatnonzero(code == 0)
        if valid.size == 0:
            return code, ref
        fingerprint = batch.fingerprints()
        keys = batch.key[valid]
        repeated = has_duplicates(keys)
        if repeated:
            rows = self.idem_index.lookup(keys)
            seen = rows >= 0
        else:
            # the common case: find the keys seen before and take slots for the
            # new ones in one pass (their rows follow in batch order)
            rows, added = self.idem_index.find_or_claim(keys, distinct=True)
            seen = ~added
        if seen.any():
            idx, r = valid[seen], rows[seen]
            same = self.i_fingerprint.data[r] == fingerprint[idx]
            code[idx[same]] = self.i_code.data[r[same]]
            ref[idx[same]] = self.i_ref.data[r[same]]
            code[idx[~same]] = R.idempotency_key_reused
        fresh = valid[~seen]
        if repeated and has_duplicates(batch.key[fresh]):
            _, first, inverse = group_first(batch.key[fresh])
            leaders = fresh[np.sort(first)]
        else:
            leaders, first = fresh, None
        self._run(batch, leaders, code, ref)
        if first is not None:
            leader_of = fresh[first][inverse]
            followers = fresh != leader_of
            f, lead = fresh[followers], leader_of[followers]
            same = fingerprint[f] == fingerprint[lead]
            code[f] = np.where(same, code[lead], R.idempotency_key_reused)
            ref[f] = np.where(same, ref[lead], 0)
        if repeated:
            self.idem_index.insert(batch.key[leaders])
        self.i_fingerprint.extend(fingerprint[leaders])
        self.i_code.extend(code[leaders])
        self.i_ref.extend(ref[leaders])
        return code, ref

    def _run(self, batch: CommandBatch, idx: np.ndarray, code: np.ndarray, ref: np.ndarray) -> None:
        line_start = batch.line_start
        for segment in self._segments(batch, idx):
            op = batch.op[segment]
            for kind, step in (
                (OP.pay, self._pay), (OP.confirm, self._confirm), (OP.refund, self._refund),
                (OP.cancel, self._cancel), (OP.restock, self._restock),
            ):
                chosen = segment[op == kind]
                if chosen.size:
                    step(batch, chosen, code, ref)
            chosen = segment[op == OP.checkout]
            if chosen.size:
                self._checkout(batch, line_start, chosen, code, ref)

    def _segments(self, batch: CommandBatch, idx: np.ndarray) -> list[np.ndarray]:
        op = batch.op[idx]
        target = batch.target[idx]
        is_checkout = op == OP.checkout
        n_checkouts, n_orders = self.c_status.size, self.o_status.size
        on_checkout = (op == OP.pay) | (op == OP.cancel)
        on_order = (op == OP.confirm) | (op == OP.refund)
        # the checkout each command touches (-1 - i: touches nothing shared)
        entity = -1 - np.arange(len(idx), dtype=np.int64)
        known = on_checkout & (target >= 1) & (target <= n_checkouts)
        entity[known] = target[known]
        known_order = on_order & (target >= 1) & (target <= n_orders)
        entity[known_order] = self.o_checkout.data[target[known_order] - 1] + 1
        future = (on_checkout & (target > n_checkouts)) | (on_order & (target > n_orders))
        is_release = (op == OP.cancel) | (op == OP.refund) | (op == OP.restock)
        first_checkout = int(np.argmax(is_checkout)) if is_checkout.any() else len(idx)
        touching = entity[~is_checkout & (op != OP.restock)]
        if (
            not has_duplicates(touching)
            and not is_release[first_checkout:].any()
            and not future[first_checkout:].any()
        ):
            return [idx]
        # rare: cut where reordering would matter, one command at a time.  A
        # command on a checkout or order that did not exist when the batch
        # began (made earlier in this batch) runs alone, after all before it.
        segments, start, seen, has_checkout, isolate_next = [], 0, set(), False, False
        for j in range(len(idx)):
            o = op[j]
            e = int(entity[j])
            cut = isolate_next or (o != OP.checkout and (
                e in seen or future[j] or (has_checkout and is_release[j])))
            if cut and j > start:
                segments.append(idx[start:j])
                start, seen, has_checkout = j, set(), False
            isolate_next = bool(future[j])
            if o == OP.checkout:
                has_checkout = True
            elif o != OP.restock:
                seen.add(e)
        segments.append(idx[start:])
        return segments

    # ------------------------------------------------------------- commands
    def _checkout(self, batch, line_start, idx, code, ref) -> None:
        n = len(idx)
        counts = batch.lines[idx].astype(np.int64)
        line = ranges(line_start[idx], counts)
        claim_of_line = np.repeat(np.arange(n), counts)
        sku_rows = self.sku_index.lookup(batch.sku[line])
        qty = batch.qty[line].astype(np.int64)
        ok = np.ones(n, dtype=bool)
        unknown = sku_rows < 0
        if unknown.any():
            bad, first = np.unique(claim_of_line[unknown], return_index=True)
            ok[bad] = False
            code[idx[bad]] = R.unknown_sku
            ref[idx[bad]] = batch.sku[line[unknown][first]]
        alive = ok[claim_of_line]
        served = self.counters.claim(
            sku_rows[alive] + self.stock_offset, qty[alive], claim_of_line[alive], n
        )
        short = ok & ~served
        code[idx[short]] = R.out_of_stock
        ok &= served
        accepted = np.flatnonzero(ok)
        if accepted.size == 0:
            return
        # accepted lines, ordered by checkout, then merchant id, then as given
        keep = ok[claim_of_line]
        position = np.arange(len(line)) - np.repeat(np.cumsum(counts) - counts, counts)
        l_claim, l_sku, l_qty, l_position = claim_of_line[keep], sku_rows[keep], qty[keep], position[keep]
        l_merchant_rank = self.sku_merchant_rank[l_sku]
        order = _order_lines(l_claim, l_merchant_rank, self.catalog.merchants)
        l_claim, l_sku, l_qty, l_merchant_rank = l_claim[order], l_sku[order], l_qty[order], l_merchant_rank[order]
        l_position = l_position[order]
        l_amount = self.sku_price[l_sku] * l_qty
        n_lines = len(l_claim)
        new_claim = starts_of_runs(l_claim)
        new_order = new_claim | starts_of_runs(l_merchant_rank)
        claim_first_line = np.flatnonzero(new_claim)
        order_first_line = np.flatnonzero(new_order)
        n_new_orders = len(order_first_line)
        line_order = np.cumsum(new_order) - 1  # local order index of each line
        c_base, o_base, l_base = self.c_status.size, self.o_status.size, self.l_sku.size
        checkout_ids = np.arange(c_base + 1, c_base + 1 + len(accepted), dtype=np.int64)
        # buyers: rows, registered on first sight
        buyer_ids = batch.target[idx[accepted]]
        buyer_rows, new_ids = self.buyer_index.lookup_or_insert(buyer_ids.astype(np.uint64))
        if len(new_ids):
            new_ids = new_ids.astype(np.int64)  # in the order of their new rows
            self.b_id.extend(new_ids)
            self.b_has_paid.extend(np.zeros(len(new_ids), dtype=bool))
            returning = np.zeros(len(new_ids), dtype=bool)
            if len(self.returning_sorted):
                pos = np.minimum(np.searchsorted(self.returning_sorted, new_ids), len(self.returning_sorted) - 1)
                returning = self.returning_sorted[pos] == new_ids
            self.b_returning.extend(returning)
            self.ledger.add_buyers(len(new_ids))
        cmd = idx[accepted]
        self.c_buyer.extend(buyer_rows)
        self.c_country.extend(batch.country[cmd])
        self.c_channel.extend(batch.channel[cmd])
        self.c_status.extend(np.full(len(accepted), ST.reserved, dtype=np.uint8))
        self.c_amount.extend(np.add.reduceat(l_amount, claim_first_line))
        self.c_created.extend(np.full(len(accepted), self.now_ms, dtype=np.int64))
        self.c_line_start.extend(l_base + claim_first_line)
        self.c_lines.extend(run_lengths(claim_first_line, n_lines))
        orders_of_claim = np.add.reduceat(new_order.astype(np.int64), claim_first_line)
        self.c_order_start.extend(o_base + line_order[claim_first_line])
        self.c_orders.extend(orders_of_claim)
        self.l_sku.extend(l_sku)
        self.l_qty.extend(l_qty)
        self.l_amount.extend(l_amount)
        self.l_order.extend(o_base + line_order)
        self.l_position.extend(l_position)
        claim_checkout_row = np.full(n, -1, dtype=np.int64)
        claim_checkout_row[accepted] = checkout_ids - 1
        self.o_checkout.extend(claim_checkout_row[l_claim[order_first_line]])
        self.o_merchant.extend(self.sku_merchant[l_sku[order_first_line]])
        self.o_amount.extend(np.add.reduceat(l_amount, order_first_line))
        self.o_status.extend(np.full(n_new_orders, ST.reserved, dtype=np.uint8))
        self.o_line_start.extend(l_base + order_first_line)
        self.o_lines.extend(run_lengths(order_first_line, n_lines))
        code[cmd] = R.ok
        ref[cmd] = checkout_ids
        self.stats.on_checkouts(self.now_ms, len(accepted), n_new_orders)

    def _checkout_rows(self, batch, idx, code, ref) -> tuple[np.ndarray, np.ndarray]:
        """Splits commands on a checkout into (command, checkout row) that exist."""
        target = batch.target[idx]
        ref[idx] = target
        exists = (target >= 1) & (target <= self.c_status.size)
        code[idx[~exists]] = R.unknown_checkout
        return idx[exists], target[exists] - 1

    def _reserved_only(self, idx, rows, code) -> tuple[np.ndarray, np.ndarray]:
        status = self.c_status.data[rows]
        for st, err in ((ST.paid, R.already_paid), (ST.cancelled, R.cancelled),
                        (ST.expired, R.expired)):
            code[idx[status == st]] = err
        ok = status == ST.reserved
        return idx[ok], rows[ok]

    def _pay(self, batch, idx, code, ref) -> None:
        idx, rows = self._checkout_rows(batch, idx, code, ref)
        idx, rows = self._reserved_only(idx, rows, code)
        amounts = self.c_amount.data[rows]
        wrong = batch.amount[idx] != amounts
        code[idx[wrong]] = R.amount_mismatch
        idx, rows, amounts = idx[~wrong], rows[~wrong], amounts[~wrong]
        if idx.size == 0:
            return
        code[idx] = R.ok
        self.c_status.data[rows] = ST.paid
        orders = ranges(self.c_order_start.data[rows], self.c_orders.data[rows])
        self.o_status.data[orders] = ST.paid
        lines = ranges(self.c_line_start.data[rows], self.c_lines.data[rows])
        l_sku, l_qty = self.l_sku.data[lines], self.l_qty.data[lines]
        add_at(self.sku_sold, l_sku, l_qty)
        buyers = self.c_buyer.data[rows]
        self.ledger.payments(buyers, rows + 1, amounts)
        first_time = buyers[~self.b_has_paid.data[buyers]]
        if has_duplicates(first_time):
            first_time = distinct(first_time)
        self.b_has_paid.data[first_time] = True
        self.stats.on_payments(
            self.now_ms, amounts,
            mobile=self.c_channel.data[rows] == Channel.mobile,
            countries=self.c_country.data[rows],
            order_merchants=self.o_merchant.data[orders], order_amounts=self.o_amount.data[orders],
            line_brands=self.sku_brand[l_sku], line_amounts=self.l_amount.data[lines],
            buyers=len(first_time), new_buyers=int(np.count_nonzero(~self.b_returning.data[first_time])),
        )

    def _cancel(self, batch, idx, code, ref) -> None:
        idx, rows = self._checkout_rows(batch, idx, code, ref)
        idx, rows = self._reserved_only(idx, rows, code)
        code[idx] = R.ok
        self._release_reserved(rows, ST.cancelled)

    def _expire(self, now: int) -> None:
        # checkouts are created in time order, so those due form a prefix
        start = self.expire_cursor
        created = self.c_created.data
        end = start + int(np.searchsorted(created[start:], now - self.config.payment_timeout_ms, side="right"))
        if end == start:
            return
        rows = np.arange(start, end)
        rows = rows[self.c_status.data[rows] == ST.reserved]
        self._release_reserved(rows, ST.expired)
        self.expire_cursor = end

    def _release_reserved(self, rows: np.ndarray, status: int) -> None:
        if rows.size == 0:
            return
        self.c_status.data[rows] = status
        self.o_status.data[ranges(self.c_order_start.data[rows], self.c_orders.data[rows])] = status
        lines = ranges(self.c_line_start.data[rows], self.c_lines.data[rows])
        l_sku, l_qty = self.l_sku.data[lines], self.l_qty.data[lines]
        self.counters.release(l_sku.astype(np.int64) + self.stock_offset, l_qty)

    def _order_rows(self, batch, idx, code, ref) -> tuple[np.ndarray, np.ndarray]:
        target = batch.target[idx]
        ref[idx] = target
        exists = (target >= 1) & (target <= self.o_status.size)
        code[idx[~exists]] = R.unknown_order
        idx, rows = idx[exists], target[exists] - 1
        status = self.o_status.data[rows]
        for st, err in ((ST.settled, R.already_settled), (ST.refunded, R.already_refunded)):
            code[idx[status == st]] = err
        unpaid = (status == ST.reserved) | (status == ST.cancelled) | (status == ST.expired)
        code[idx[unpaid]] = R.not_paid
        ok = status == ST.paid
        code[idx[ok]] = R.ok
        return idx[ok], rows[ok]

    def _confirm(self, batch, idx, code, ref) -> None:
        idx, rows = self._order_rows(batch, idx, code, ref)
        if rows.size == 0:
            return
        self.o_status.data[rows] = ST.settled
        amounts = self.o_amount.data[rows]
        commissions = self.commission(amounts)
        self.ledger.settlements(self.o_merchant.data[rows], rows + 1, amounts, commissions)
        self.stats.settled_fen += int(amounts.sum())

    def _refund(self, batch, idx, code, ref) -> None:
        idx, rows = self._order_rows(batch, idx, code, ref)
        if rows.size == 0:
            return
        self.o_status.data[rows] = ST.refunded
        amounts = self.o_amount.data[rows]
        lines = ranges(self.o_line_start.data[rows], self.o_lines.data[rows])
        l_sku, l_qty = self.l_sku.data[lines], self.l_qty.data[lines]
        subtract_at(self.sku_sold, l_sku, l_qty)
        self.counters.release(l_sku.astype(np.int64) + self.stock_offset, l_qty)
        buyers = self.c_buyer.data[self.o_checkout.data[rows]]
        self.ledger.refunds(buyers, rows + 1, amounts)
        self.stats.refunded_fen += int(amounts.sum())

    def _restock(self, batch, idx, code, ref) -> None:
        skus = batch.target[idx]
        ref[idx] = skus
        rows = self.sku_index.lookup(skus)
        known = rows >= 0
        code[idx[~known]] = R.unknown_sku
        code[idx[known]] = R.ok
        qty = batch.amount[idx[known]]
        self.counters.release(rows[known] + self.stock_offset, qty)
        add_at(self.sku_stocked, rows[known], qty)
