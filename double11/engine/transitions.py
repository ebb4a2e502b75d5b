"""The state machine's inner loop, compiled with Numba: a batch is applied
command by command, in order, exactly as a plain Python model would do it.

Why a compiled loop and not NumPy passes: a command touches a handful of rows
(1 to 3 SKUs, its checkout and orders, its buyer's balance), so
the work is random memory access, not arithmetic.  Vectorized, every step is a
NumPy call over the batch plus the sorting needed to stay first come, first
served, which made a batch cost ~300 calls whatever its size; compiled, a
command costs a few cache misses and the order of the batch is the order of
the loop.  The loop releases the GIL, so the HTTP side runs beside it.

Numba counts references to arrays, and in a loop this branchy it cannot
prove most of the counting away: an array taken out of a tuple or handed to
an inlined helper inside the loop costs two atomic operations per command,
which at first made up 70% of the time.  So the tuples are unpacked once,
before the loop, and the helpers are plain compiled functions that take
each array they touch as an argument.

The idempotency key and the buyer of every command are looked up before
this loop, in passes of their own (`lookups.py`), and come in as rows.

Every array here is a whole column buffer (`Column.reserve`): the loop
appends in place and returns the new sizes in `sizes`; the caller has made
room for the batch's worst case beforehand.  Figures that are sums go back as
deltas in `totals`.
"""

from __future__ import annotations

import numpy as np
from double11.engine.compiled import kernel

from double11.engine.batch import Channel, Op
from double11.engine.counters import claim_lines
from double11.engine.lookups import NOT_RUN, RETRY_OF
from double11.engine.ledger import TransferKind
from double11.engine.prefetch import prefetch
from double11.engine.status import Status
from double11.errors import Result

# plain ints: Numba freezes module globals as compile-time constants
CHECKOUT, PAY, CANCEL, CONFIRM, REFUND, RESTOCK = (
    int(Op.checkout), int(Op.pay), int(Op.cancel), int(Op.confirm), int(Op.refund), int(Op.restock))
RESERVED, PAID, CANCELLED, EXPIRED, SETTLED, REFUNDED = (
    int(Status.reserved), int(Status.paid), int(Status.cancelled), int(Status.expired),
    int(Status.settled), int(Status.refunded))
MOBILE = int(Channel.mobile)
J_PAYMENT, J_SETTLEMENT, J_COMMISSION, J_REFUND = (
    int(TransferKind.payment), int(TransferKind.settlement), int(TransferKind.commission), int(TransferKind.refund))
OK = int(Result.ok)
UNKNOWN_SKU, UNKNOWN_CHECKOUT, UNKNOWN_ORDER = (
    int(Result.unknown_sku), int(Result.unknown_checkout), int(Result.unknown_order))
OUT_OF_STOCK, AMOUNT_MISMATCH, ALREADY_PAID, R_EXPIRED, R_CANCELLED, NOT_PAID = (
    int(Result.out_of_stock), int(Result.amount_mismatch), int(Result.already_paid), int(Result.expired),
    int(Result.cancelled), int(Result.not_paid))
ALREADY_SETTLED, ALREADY_REFUNDED = int(Result.already_settled), int(Result.already_refunded)
AHEAD = 16  # commands between prefetching a command's rows and running it

# what a command on a checkout (pay, cancel) or an order (confirm, refund)
# gets, by the status it finds; OK: go on
PAY_OR_CANCEL_VERDICT = np.full(len(Status) + 1, OK, dtype=np.int64)
PAY_OR_CANCEL_VERDICT[[PAID, CANCELLED, EXPIRED]] = ALREADY_PAID, R_CANCELLED, R_EXPIRED
CONFIRM_OR_REFUND_VERDICT = np.full(len(Status) + 1, NOT_PAID, dtype=np.int64)
CONFIRM_OR_REFUND_VERDICT[[PAID, SETTLED, REFUNDED]] = OK, ALREADY_SETTLED, ALREADY_REFUNDED

# rows of `sizes`: how many of each entity exist
S_CHECKOUTS, S_LINES, S_ORDERS, S_BUYERS, S_KEYS, S_TRANSFERS = range(6)
# rows of `totals`: what the batch added to each sum
(T_ESCROW, T_PLATFORM, T_GMV, T_MOBILE_GMV, T_PAYMENTS, T_CHECKOUTS, T_ORDERS,
 T_BUYERS, T_NEW_BUYERS, T_SETTLED, T_REFUNDED) = range(11)
TOTALS = 11


@kernel
def apply_batch(cmd, line, now_ms, commission_bps, sizes, totals, code, ref,
                keys, catalog, stock, checkouts, lines, orders, buyers, ledger, figures, scratch):
    """Applies every command of the batch in order.  `code` comes in holding
    the edge's verdict (non-zero: the command is malformed and is skipped,
    unremembered); `code` and `ref` go out holding every command's result.
    `scratch`: (room for one checkout's line order, each command's key row
    from `lookups.claim_keys`, each checkout's buyer row from
    `lookups.claim_buyers`)."""
    op, channel, n_lines, country, _key, target, amount, target_row = cmd  # keys: claimed in lookups.py
    sku_id, sku_row, qty = line
    k_code, k_ref = keys
    sku_merchant, sku_merchant_rank, sku_brand, sku_price = catalog
    available, sku_sold, sku_stocked = stock
    (c_buyer, c_country, c_channel, c_status, c_amount, c_created,
     c_line_start, c_lines, c_order_start, c_orders) = checkouts
    l_sku, l_qty, l_amount, l_order, l_position = lines
    o_checkout, o_merchant, o_amount, o_status, o_line_start, o_lines = orders
    b_has_paid, b_returning = buyers
    buyer_balance, merchant_balance, journal_kind, journal_ref, journal_amount = ledger
    merchant_gmv, brand_gmv, country_gmv = figures
    perm, claimed, buyer_row = scratch
    n = len(op)
    start = 0  # first line of command i
    ahead_start = 0  # first line of command i + AHEAD
    for j in range(n + AHEAD):
        # software pipeline: prefetch the rows command j will touch, and the
        # rows those lead to for command j - AHEAD // 2, then run command i
        if j < n:
            _prefetch_command(j, ahead_start, op, n_lines, target, sku_row,
                              available, sku_price, sku_merchant_rank, sku_merchant,
                              c_buyer, c_status, c_amount, c_line_start, c_order_start, o_merchant, o_amount, o_status)
            ahead_start += n_lines[j]
        half = j - AHEAD // 2
        if 0 <= half < n and op[half] == PAY:
            _prefetch_payment(target[half] - 1, sizes[S_CHECKOUTS], c_buyer, c_line_start, c_lines, c_order_start,
                              c_orders, l_sku, o_merchant, buyer_balance, sku_sold, sku_brand, merchant_gmv)
        i = j - AHEAD
        if i < 0:
            continue
        count = np.int64(n_lines[i])
        first_line = start
        start += count
        row = claimed[i]
        if row == NOT_RUN:
            continue
        if row < 0:
            # a retry of a command already run, with the same body: its first result
            code[i], ref[i] = k_code[RETRY_OF - row], k_ref[RETRY_OF - row]
            continue
        o = op[i]
        if o == CHECKOUT:
            r = _checkout(first_line, count, buyer_row[i], country[i], channel[i], now_ms, sizes, totals, perm,
                          sku_row, qty, sku_merchant, sku_merchant_rank, sku_price, available,
                          c_buyer, c_country, c_channel, c_status, c_amount, c_created,
                          c_line_start, c_lines, c_order_start, c_orders,
                          l_sku, l_qty, l_amount, l_order, l_position,
                          o_checkout, o_merchant, o_amount, o_status, o_line_start, o_lines)
            if r == 0:
                c, r = OUT_OF_STOCK, 0
            elif r < 0:
                c, r = UNKNOWN_SKU, sku_id[first_line - r - 1]
            else:
                c = OK
        elif o == PAY or o == CANCEL:
            c, row_c = _row_of(target[i], sizes[S_CHECKOUTS], c_status, PAY_OR_CANCEL_VERDICT, UNKNOWN_CHECKOUT)
            r = target[i]
            if c == OK and o == CANCEL:
                release_reserved(row_c, CANCELLED, available, c_status, c_line_start, c_lines, c_order_start,
                                 c_orders, l_sku, l_qty, o_status)
            elif c == OK:
                c = _pay(row_c, amount[i], sizes, totals, sku_brand, sku_sold,
                         c_buyer, c_country, c_channel, c_status, c_amount,
                         c_line_start, c_lines, c_order_start, c_orders, l_sku, l_qty, l_amount,
                         o_merchant, o_amount, o_status, b_has_paid, b_returning,
                         buyer_balance, journal_kind, journal_ref, journal_amount,
                         merchant_gmv, brand_gmv, country_gmv)
        elif o == CONFIRM or o == REFUND:
            c, row_o = _row_of(target[i], sizes[S_ORDERS], o_status, CONFIRM_OR_REFUND_VERDICT, UNKNOWN_ORDER)
            r = target[i]
            if c == OK and o == CONFIRM:
                _confirm(row_o, commission_bps, sizes, totals, o_merchant, o_amount, o_status,
                         merchant_balance, journal_kind, journal_ref, journal_amount)
            elif c == OK:
                _refund(row_o, sizes, totals, available, sku_sold, c_buyer, l_sku, l_qty,
                        o_checkout, o_amount, o_status, o_line_start, o_lines,
                        buyer_balance, journal_kind, journal_ref, journal_amount)
        else:
            r = target[i]
            c = _restock(target_row[i], amount[i], available, sku_stocked)
        code[i], ref[i] = c, r
        k_code[row], k_ref[row] = c, r


@kernel
def _prefetch_command(j, first_line, op, n_lines, target, sku_row, available, sku_price, sku_merchant_rank, sku_merchant,
                      c_buyer, c_status, c_amount, c_line_start, c_order_start, o_merchant, o_amount, o_status):
    """The rows command j reads first: its SKUs (a checkout) or its
    checkout or order (the others)."""
    o = op[j]
    if o == CHECKOUT:
        for p in range(first_line, first_line + n_lines[j]):
            s = sku_row[p]
            if s >= 0:
                prefetch(available, s)
                prefetch(sku_price, s)
                prefetch(sku_merchant_rank, s)
                prefetch(sku_merchant, s)
    elif o == PAY or o == CANCEL:
        row = target[j] - 1
        if 0 <= row < len(c_status):
            prefetch(c_buyer, row)
            prefetch(c_status, row)
            prefetch(c_amount, row)
            prefetch(c_line_start, row)
            prefetch(c_order_start, row)
    elif o == CONFIRM or o == REFUND:
        row = target[j] - 1
        if 0 <= row < len(o_status):
            prefetch(o_merchant, row)
            prefetch(o_amount, row)
            prefetch(o_status, row)


@kernel
def _prefetch_payment(row, checkouts, c_buyer, c_line_start, c_lines, c_order_start, c_orders, l_sku,
                      o_merchant, buyer_balance, sku_sold, sku_brand, merchant_gmv):
    """For a payment: the rows its checkout's rows lead to (its buyer's
    balance, its SKUs' sold counts and brands, its merchants' GMV)."""
    if not 0 <= row < checkouts:
        return
    prefetch(buyer_balance, c_buyer[row])
    for n in range(c_line_start[row], c_line_start[row] + c_lines[row]):
        prefetch(sku_sold, l_sku[n])
        prefetch(sku_brand, l_sku[n])
    for o in range(c_order_start[row], c_order_start[row] + c_orders[row]):
        prefetch(merchant_gmv, o_merchant[o])


@kernel
def _checkout(first_line, count, buyer, country, channel, now_ms, sizes, totals, perm,
              sku_row, qty, sku_merchant, sku_merchant_rank, sku_price, available,
              c_buyer, c_country, c_channel, c_status, c_amount, c_created,
              c_line_start, c_lines, c_order_start, c_orders,
              l_sku, l_qty, l_amount, l_order, l_position,
              o_checkout, o_merchant, o_amount, o_status, o_line_start, o_lines):
    """Reserves the lines, all or nothing, and records the checkout, split
    into one order per merchant.  Returns the checkout id; 0 when out of
    stock; -1 - p when line p names an unknown SKU."""
    for j in range(first_line, first_line + count):
        if sku_row[j] < 0:
            return -1 - (j - first_line)
    if not claim_lines(available, sku_row, qty, first_line, count):
        return 0
    # lines go by merchant id (one order per merchant, ascending), then as given
    for p in range(count):
        perm[p] = p
    for p in range(1, count):
        moving = perm[p]
        rank = sku_merchant_rank[sku_row[first_line + moving]]
        q = p - 1
        while q >= 0 and sku_merchant_rank[sku_row[first_line + perm[q]]] > rank:
            perm[q + 1] = perm[q]
            q -= 1
        perm[q + 1] = moving
    c = sizes[S_CHECKOUTS]
    l_base = sizes[S_LINES]
    o_base = sizes[S_ORDERS]
    o = o_base - 1
    total = np.int64(0)
    last_rank = np.int64(-1)
    for p in range(count):
        j = first_line + perm[p]
        s = sku_row[j]
        n = l_base + p
        rank = sku_merchant_rank[s]
        if rank != last_rank:  # a new order
            o += 1
            last_rank = rank
            o_checkout[o] = c
            o_merchant[o] = sku_merchant[s]
            o_amount[o] = 0
            o_status[o] = RESERVED
            o_line_start[o] = n
            o_lines[o] = 0
        line_amount = sku_price[s] * qty[j]
        l_sku[n] = s
        l_qty[n] = qty[j]
        l_amount[n] = line_amount
        l_order[n] = o
        l_position[n] = perm[p]
        o_amount[o] += line_amount
        o_lines[o] += 1
        total += line_amount
    made = o + 1 - o_base
    c_buyer[c] = buyer
    c_country[c] = country
    c_channel[c] = channel
    c_status[c] = RESERVED
    c_amount[c] = total
    c_created[c] = now_ms
    c_line_start[c] = l_base
    c_lines[c] = count
    c_order_start[c] = o_base
    c_orders[c] = made
    sizes[S_CHECKOUTS] = c + 1
    sizes[S_LINES] = l_base + count
    sizes[S_ORDERS] = o_base + made
    totals[T_CHECKOUTS] += 1
    totals[T_ORDERS] += made
    return c + 1


@kernel
def _row_of(entity_id, count, status, verdict_by_status, unknown):
    """(verdict, row) of a command on checkout or order `entity_id`: `unknown`
    when there is no such entity, else what its status says (OK: go on)."""
    if entity_id < 1 or entity_id > count:
        return unknown, -1
    row = entity_id - 1
    return verdict_by_status[status[row]], row


@kernel
def _pay(row, amount, sizes, totals, sku_brand, sku_sold,
         c_buyer, c_country, c_channel, c_status, c_amount,
         c_line_start, c_lines, c_order_start, c_orders, l_sku, l_qty, l_amount,
         o_merchant, o_amount, o_status, b_has_paid, b_returning,
         buyer_balance, journal_kind, journal_ref, journal_amount,
         merchant_gmv, brand_gmv, country_gmv):
    """Moves the checkout's total from the buyer to escrow: its units are sold."""
    if amount != c_amount[row]:
        return AMOUNT_MISMATCH
    c_status[row] = PAID
    for o in range(c_order_start[row], c_order_start[row] + c_orders[row]):
        o_status[o] = PAID
        merchant_gmv[o_merchant[o]] += o_amount[o]
    for n in range(c_line_start[row], c_line_start[row] + c_lines[row]):
        sku_sold[l_sku[n]] += l_qty[n]
        brand_gmv[sku_brand[l_sku[n]]] += l_amount[n]
    buyer = c_buyer[row]
    buyer_balance[buyer] -= amount
    _journal(J_PAYMENT, row + 1, amount, sizes, journal_kind, journal_ref, journal_amount)
    totals[T_ESCROW] += amount
    if not b_has_paid[buyer]:
        b_has_paid[buyer] = True
        totals[T_BUYERS] += 1
        if not b_returning[buyer]:
            totals[T_NEW_BUYERS] += 1
    totals[T_GMV] += amount
    if c_channel[row] == MOBILE:
        totals[T_MOBILE_GMV] += amount
    totals[T_PAYMENTS] += 1
    country_gmv[c_country[row]] += amount
    return OK


@kernel
def release_reserved(row, status, available, c_status, c_line_start, c_lines, c_order_start, c_orders,
                     l_sku, l_qty, o_status):
    """A reserved checkout is cancelled or expires: its units go back on sale."""
    c_status[row] = status
    for o in range(c_order_start[row], c_order_start[row] + c_orders[row]):
        o_status[o] = status
    for n in range(c_line_start[row], c_line_start[row] + c_lines[row]):
        available[l_sku[n]] += l_qty[n]


@kernel
def expire_due(first, due_ms, available, c_status, c_created, c_line_start, c_lines, c_order_start, c_orders,
               l_sku, l_qty, o_status):
    """Expires the reserved checkouts created at or before due_ms, from row
    `first` on (checkouts are created in time order, so those due are a
    prefix).  Returns the first row not yet due."""
    row = first
    while row < len(c_created) and c_created[row] <= due_ms:
        if c_status[row] == RESERVED:
            release_reserved(row, EXPIRED, available, c_status, c_line_start, c_lines, c_order_start, c_orders,
                             l_sku, l_qty, o_status)
        row += 1
    return row


@kernel
def _confirm(row, commission_bps, sizes, totals, o_merchant, o_amount, o_status,
             merchant_balance, journal_kind, journal_ref, journal_amount):
    """The buyer received the order: escrow pays the merchant, less the platform's commission."""
    amount = o_amount[row]
    commission = amount * commission_bps // 10_000
    o_status[row] = SETTLED
    merchant_balance[o_merchant[row]] += amount - commission
    totals[T_ESCROW] -= amount
    totals[T_PLATFORM] += commission
    totals[T_SETTLED] += amount
    _journal(J_SETTLEMENT, row + 1, amount - commission, sizes, journal_kind, journal_ref, journal_amount)
    _journal(J_COMMISSION, row + 1, commission, sizes, journal_kind, journal_ref, journal_amount)


@kernel
def _refund(row, sizes, totals, available, sku_sold, c_buyer, l_sku, l_qty,
            o_checkout, o_amount, o_status, o_line_start, o_lines,
            buyer_balance, journal_kind, journal_ref, journal_amount):
    """A paid order goes back: escrow repays the buyer and its units are on sale again."""
    amount = o_amount[row]
    o_status[row] = REFUNDED
    for n in range(o_line_start[row], o_line_start[row] + o_lines[row]):
        sku_sold[l_sku[n]] -= l_qty[n]
        available[l_sku[n]] += l_qty[n]
    buyer_balance[c_buyer[o_checkout[row]]] += amount
    totals[T_ESCROW] -= amount
    totals[T_REFUNDED] += amount
    _journal(J_REFUND, row + 1, amount, sizes, journal_kind, journal_ref, journal_amount)


@kernel
def _restock(sku_row, qty, available, sku_stocked):
    if sku_row < 0:
        return UNKNOWN_SKU
    available[sku_row] += qty
    sku_stocked[sku_row] += qty
    return OK


@kernel
def _journal(kind, ref, amount, sizes, journal_kind, journal_ref, journal_amount):
    t = sizes[S_TRANSFERS]
    journal_kind[t] = kind
    journal_ref[t] = ref
    journal_amount[t] = amount
    sizes[S_TRANSFERS] = t + 1
