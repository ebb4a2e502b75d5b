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
prove most of the counting away, so the kernels are compiled without it
(`compiled.py`) and the tuples are unpacked once, before the loop.

The helpers of the busy path (checkout, payment, the prefetches) are merged
into the loop (`inline`).  Called, a helper is handed each array as seven
machine words on the stack: some 150 pushes per command, which filled the
store queue and took a third of the loop's time.  Each entity is one array
of records (`columns.Table`) for the same reason, and so that a checkout's
fields share a cache line.  The rarer commands' helpers stay called.

The idempotency key and the buyer of every command are looked up before
this loop, in passes of their own (`lookups.py`), and come in as rows.

Every entity comes in as a whole buffer of records (`Table.reserve`): the
loop appends in place and returns the new sizes in `sizes`; the caller has made
room for the batch's worst case beforehand.  Figures that are sums go back as
deltas in `totals`.
"""

from __future__ import annotations

import numpy as np

from double11.engine.batch import Channel, Op
from double11.engine.compiled import inline, kernel
from double11.engine.counters import claim_lines
from double11.engine.ledger import TransferKind
from double11.engine.lookups import NOT_RUN, RETRY_OF
from double11.engine.prefetch import prefetch
from double11.engine.refusals import OUT_OF_STOCK_LINE_BITS
from double11.engine.status import Status
from double11.errors import Result
from double11.promotions import kernels as promo
from double11.promotions.spec import COUPON_BUDGET, COUPON_TEMPLATE, DEAL, DEAL_QTY, GRANT, THRESHOLD_DISCOUNT
from double11.quotas import kernels as quota
from double11.quotas.spec import RELEASE

# plain ints: Numba freezes module globals as compile-time constants
CHECKOUT, PAY, CANCEL, CONFIRM, REFUND, RESTOCK = (
    int(Op.checkout), int(Op.pay), int(Op.cancel), int(Op.confirm), int(Op.refund), int(Op.restock))
RESERVED, PAID, CANCELLED, EXPIRED, SETTLED, REFUNDED = (
    int(Status.reserved), int(Status.paid), int(Status.cancelled), int(Status.expired),
    int(Status.settled), int(Status.refunded))
TEMPLATE, THRESHOLD, DEAL_, GRANT_ = (
    COUPON_TEMPLATE.number, THRESHOLD_DISCOUNT.number, DEAL.number, GRANT.number)
BUDGET, DEAL_QTY_ = COUPON_BUDGET.number, DEAL_QTY.number
RELEASE_ = RELEASE.number
MOBILE = int(Channel.mobile)
J_PAYMENT, J_SETTLEMENT, J_COMMISSION, J_REFUND = (
    int(TransferKind.payment), int(TransferKind.settlement), int(TransferKind.commission), int(TransferKind.refund))
J_MARKETING, J_MARKETING_REFUND = int(TransferKind.marketing), int(TransferKind.marketing_refund)
OK, UNKNOWN_OP = int(Result.ok), int(Result.unknown_op)
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
S_CHECKOUTS, S_LINES, S_ORDERS, S_BUYERS, S_BUYER_BALANCES, S_KEYS, S_TRANSFERS = range(7)
# rows of `totals`: what the batch added to each sum
(T_ESCROW, T_PLATFORM, T_GMV, T_MOBILE_GMV, T_PAYMENTS, T_CHECKOUTS, T_ORDERS,
 T_BUYERS, T_NEW_BUYERS, T_SETTLED, T_REFUNDED, T_MARKETING) = range(12)
TOTALS = 12


@kernel
def apply_batch(cmd, line, arg, now_ms, commission_bps, sizes, totals, code, ref,
                keys, skus, stock, checkouts, lines, orders, buyers, ledger, figures, scratch, promos):
    """Applies every command of the batch in order.  `code` comes in holding
    the edge's verdict (non-zero: the command is malformed and is skipped,
    unremembered); `code` and `ref` go out holding every command's result.
    `keys`, `skus`, `checkouts`, `lines`, `orders`, `buyers`: each entity's
    records (machine.py has their fields).  `arg`: the commands' args, one
    command's after another, ids already rows where the engine looked them
    up (machine.py).  `scratch`: (room for one checkout's line order, each
    command's key row from `lookups.claim_keys`, each command's buyer row
    from `lookups.claim_buyers`).  `promos`: the promotions' tables
    (promotions/tables.py), their sizes and live figures, the open
    threshold's row and a checkout's pricing scratch."""
    op, channel, n_lines, country, target, amount, target_row, n_args = cmd  # keys: claimed in lookups.py
    sku_id, sku_row, qty = line
    available, sku_stocked = stock
    buyer_balance, merchant_balance, journal = ledger
    merchant_gmv, brand_gmv, country_gmv = figures
    perm, claimed, buyer_row = scratch
    (templates, coupons, thresholds, threshold_merchants, deals, deal_takers, checkout_coupons, pfigures, psizes,
     open_threshold, ps, _buyers, checkout_promos, line_promos, order_promos, buyer_promos) = promos
    n = len(op)
    start = 0  # first line of command i
    a_next = 0  # first arg of command i
    ahead_start = 0  # first line of command i + AHEAD
    ahead_arg = 0  # first arg of command i + AHEAD
    half_arg = 0  # first arg of command i + AHEAD // 2
    for j in range(n + AHEAD):
        # software pipeline: prefetch the rows command j will touch, and the
        # rows those lead to for command j - AHEAD // 2, then run command i
        if j < n:
            _prefetch_command(j, ahead_start, op, n_lines, target, sku_row, available, skus, checkouts, orders)
            if op[j] == CHECKOUT:
                promo.prefetch_coupons(ahead_arg, n_args[j], arg, coupons, psizes)
            ahead_start += n_lines[j]
            ahead_arg += n_args[j]
        half = j - AHEAD // 2
        if 0 <= half < n:
            if op[half] == PAY:
                _prefetch_payment(target[half] - 1, sizes[S_CHECKOUTS], checkouts, lines, orders, skus, buyers,
                                  buyer_balance, merchant_gmv, checkout_promos)
            elif op[half] == CHECKOUT:
                promo.prefetch_templates(half_arg, n_args[half], arg, coupons, templates, psizes)
            half_arg += n_args[half]
        i = j - AHEAD
        if i < 0:
            continue
        count = np.int64(n_lines[i])
        first_line = start
        start += count  # type: ignore[assignment]  # compiled: an int64 in Numba from the start
        a = a_next
        a_next += n_args[i]
        row = claimed[i]
        if row == NOT_RUN:
            continue
        if row < 0:
            # a retry of a command already run, with the same body: its first result
            first = keys[RETRY_OF - row]
            code[i], ref[i] = first.code, first.ref
            continue
        o = op[i]
        if o == CHECKOUT:
            c, r = _checkout(first_line, count, buyer_row[i], country[i], channel[i], now_ms, sizes, totals, perm,
                             sku_row, qty, skus, available, checkouts, lines, orders, buyers, arg, a, n_args[i],
                             promos)
            if c == OUT_OF_STOCK:
                r = _short_line(first_line, count, sku_row, qty, available)
            elif c == UNKNOWN_SKU:
                r = sku_id[first_line + r]
        elif o == PAY or o == CANCEL:  # noqa: SIM109 (compiled: plain comparisons)
            c, row_c = _row_of(target[i], sizes[S_CHECKOUTS], checkouts, PAY_OR_CANCEL_VERDICT, UNKNOWN_CHECKOUT)
            r = target[i]
            if c == OK and o == CANCEL:
                release_reserved(row_c, CANCELLED, available, checkouts, lines, orders, promos)
            elif c == OK:
                c = _pay(row_c, amount[i], sizes, totals, skus, checkouts, lines, orders, buyers, buyer_balance,
                         journal, merchant_gmv, brand_gmv, country_gmv, promos)
        elif o == CONFIRM or o == REFUND:  # noqa: SIM109 (compiled: plain comparisons)
            c, row_o = _row_of(target[i], sizes[S_ORDERS], orders, CONFIRM_OR_REFUND_VERDICT, UNKNOWN_ORDER)
            r = target[i]
            if c == OK and o == CONFIRM:
                _confirm(row_o, commission_bps, sizes, totals, checkouts, orders, merchant_balance, journal, promos)
            elif c == OK:
                _refund(row_o, sizes, totals, available, skus, checkouts, lines, orders, buyer_balance, journal,
                        promos)
        elif o == RESTOCK:
            r = target[i]
            c = _restock(target_row[i], amount[i], available, sku_stocked)
        elif o == GRANT_:
            c, r = promo.grant(target[i], a, arg, buyer_row[i], now_ms, templates, coupons, buyers, buyer_promos,
                               psizes, pfigures)
        elif o == TEMPLATE:
            c, r = promo.create_template(a, arg, now_ms, templates, psizes)
        elif o == THRESHOLD:
            c, r = promo.create_threshold(a, arg, now_ms, thresholds, threshold_merchants, psizes, open_threshold)
        elif o == DEAL_:
            c, r = promo.create_deal(a, arg, now_ms, skus, available, deals, psizes)
        elif o == BUDGET:
            c, r = promo.coupon_budget(target[i], a, n_args[i], arg, templates, psizes)
        elif o == DEAL_QTY_:
            c, r = promo.deal_qty(target[i], a, n_args[i], arg, deals, psizes, pfigures)
        elif o == RELEASE_:
            c, r = quota.release(target[i], target_row[i], a, n_args[i], arg, available, sku_stocked)
        else:
            # an op this loop does not know (a batch that skipped validation:
            # a log record written by a newer version, a forged column) is
            # refused and changes nothing, never taken for another op
            c, r = UNKNOWN_OP, 0
        code[i], ref[i] = c, r
        remembered = keys[row]
        remembered.code = c
        remembered.ref = r


@inline
def _prefetch_command(j, first_line, op, n_lines, target, sku_row, available, skus, checkouts, orders):
    """The rows command j reads first: its SKUs (a checkout) or its
    checkout or order (the others)."""
    o = op[j]
    if o == CHECKOUT:
        for p in range(first_line, first_line + n_lines[j]):
            s = sku_row[p]
            if s >= 0:
                prefetch(available, s)
                prefetch(skus, s)
    elif o == PAY or o == CANCEL:  # noqa: SIM109 (compiled: plain comparisons)
        row = target[j] - 1
        if 0 <= row < len(checkouts):
            prefetch(checkouts, row)
    elif o == CONFIRM or o == REFUND:  # noqa: SIM109 (compiled: plain comparisons)
        row = target[j] - 1
        if 0 <= row < len(orders):
            prefetch(orders, row)


@inline
def _prefetch_payment(row, n_checkouts, checkouts, lines, orders, skus, buyers, buyer_balance, merchant_gmv,
                      checkout_promos):
    """For a payment: the rows its checkout's rows lead to (its buyer's
    record and balance, its SKUs, its merchants' GMV, its discounts)."""
    if not 0 <= row < n_checkouts:
        return
    c = checkouts[row]
    if c.promo != 0:
        prefetch(checkout_promos, c.promo - 1)
    prefetch(buyers, c.buyer)
    prefetch(buyer_balance, c.buyer)
    for n in range(c.line_start, c.line_start + c.lines):
        prefetch(skus, lines[n].sku)
    for o in range(c.order_start, c.order_start + c.orders):
        prefetch(merchant_gmv, orders[o].merchant)


@inline
def _checkout(first_line, count, buyer, country, channel, now_ms, sizes, totals, perm,
              sku_row, qty, skus, available, checkouts, lines, orders, buyers, arg, a, n_coupons, promos):
    """Prices the lines (promotions: when the checkout has coupons, a line
    is on deal or a threshold discount is open), reserves them, all or
    nothing, and records the checkout, split into one order per merchant.
    Returns (code, ref): the checkout id; for unknown_sku, the index of the
    line naming it; for a promotions refusal, the coupon's or deal's id."""
    (templates, coupons, thresholds, threshold_merchants, deals, deal_takers, checkout_coupons, pfigures, psizes,
     open_threshold, ps, _buyers, checkout_promos, line_promos, order_promos, buyer_promos) = promos
    priced = n_coupons > 0 or open_threshold[0] >= 0
    for j in range(first_line, first_line + count):
        if sku_row[j] < 0:
            return UNKNOWN_SKU, j - first_line
        if skus[sku_row[j]].deal_head != 0:
            priced = True
    # lines go by merchant id (one order per merchant, ascending), then as given
    for p in range(count):
        perm[p] = p
    for p in range(1, count):
        moving = perm[p]
        rank = skus[sku_row[first_line + moving]].merchant_rank
        q = p - 1
        while q >= 0 and skus[sku_row[first_line + perm[q]]].merchant_rank > rank:
            perm[q + 1] = perm[q]
            q -= 1
        perm[q + 1] = moving
    if priced:
        pc, pr = promo.price_checkout(first_line, count, perm, sku_row, qty, arg, a, n_coupons, buyer, now_ms, skus,
                                      templates, coupons, thresholds, threshold_merchants, deals, deal_takers,
                                      buyers, buyer_promos, open_threshold, psizes, ps)
        if pc != OK:
            return pc, pr
    if not claim_lines(available, sku_row, qty, first_line, count):
        return OUT_OF_STOCK, 0
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
        sku = skus[s]
        if sku.merchant_rank != last_rank:  # a new order
            o += 1
            last_rank = sku.merchant_rank
            order = orders[o]
            order.checkout = c
            order.merchant = sku.merchant
            order.amount = 0
            order.status = RESERVED
            order.line_start = n
            order.lines = 0
        line_amount = sku.price * qty[j]
        ln = lines[n]
        ln.sku = s
        ln.qty = qty[j]
        ln.amount = line_amount
        ln.order = o
        ln.position = perm[p]
        order = orders[o]
        order.amount += line_amount
        order.lines += 1
        total += line_amount
    made = o + 1 - o_base
    checkout = checkouts[c]
    checkout.buyer = buyer
    checkout.country = country
    checkout.channel = channel
    checkout.status = RESERVED
    checkout.amount = total
    checkout.created = now_ms
    checkout.line_start = l_base
    checkout.lines = count
    checkout.order_start = o_base
    checkout.orders = made
    checkout.promo = 0
    if priced:
        checkout.promo = promo.commit_checkout(c, l_base, o_base, count, perm, qty, first_line, lines, arg, a,
                                               n_coupons, buyer, now_ms, coupons, deals, deal_takers, buyers,
                                               buyer_promos, checkout_coupons, checkout_promos, line_promos,
                                               order_promos, psizes, pfigures, ps)
    sizes[S_CHECKOUTS] = c + 1
    sizes[S_LINES] = l_base + count
    sizes[S_ORDERS] = o_base + made
    totals[T_CHECKOUTS] += 1
    totals[T_ORDERS] += made
    return OK, c + 1


@kernel
def _short_line(first_line, count, sku_row, qty, available):
    """out_of_stock's ref, for its message: the first line of the checkout
    that found too few units, and how many its SKU had for it (less what
    the checkout's earlier lines of the same SKU asked for), packed as
    refusals.short_line reads them.  Kept in the idempotency table as the
    result's ref, so a retry answers what the first try was told; replay
    computes it again from the same state."""
    for p in range(count):
        j = first_line + p
        left = available[sku_row[j]]
        for q in range(first_line, j):
            if sku_row[q] == sku_row[j]:
                left -= qty[q]
        if left < qty[j]:
            return (left << OUT_OF_STOCK_LINE_BITS) | (p + 1)
    return 0


@inline
def _row_of(entity_id, count, table, verdict_by_status, unknown):
    """(verdict, row) of a command on checkout or order `entity_id`: `unknown`
    when there is no such entity, else what its status says (OK: go on)."""
    if entity_id < 1 or entity_id > count:
        return unknown, -1
    row = entity_id - 1
    return verdict_by_status[table[row].status], row


@inline
def _off(x):
    """A promotions record's discounts, all kinds."""
    return x.off_deal + x.off_store + x.off_threshold + x.off_platform


@inline
def _pay(row, amount, sizes, totals, skus, checkouts, lines, orders, buyers, buyer_balance, journal,
         merchant_gmv, brand_gmv, country_gmv, promos):
    """Moves the checkout's payable amount from the buyer, and its platform
    funded discounts from the marketing account, to escrow: its units are sold."""
    checkout = checkouts[row]
    if checkout.promo != 0:
        return _pay_discounted(row, amount, sizes, totals, skus, checkouts, lines, orders, buyers, buyer_balance,
                               journal, merchant_gmv, brand_gmv, country_gmv, promos)
    if amount != checkout.amount:
        return AMOUNT_MISMATCH
    checkout.status = PAID
    for o in range(checkout.order_start, checkout.order_start + checkout.orders):
        order = orders[o]
        order.status = PAID
        merchant_gmv[order.merchant] += order.amount
    for n in range(checkout.line_start, checkout.line_start + checkout.lines):
        ln = lines[n]
        sku = skus[ln.sku]
        sku.sold += ln.qty
        brand_gmv[sku.brand] += ln.amount
    _paid(row, amount, sizes, totals, checkout, buyers, buyer_balance, journal, country_gmv)
    return OK


@inline
def _pay_discounted(row, amount, sizes, totals, skus, checkouts, lines, orders, buyers, buyer_balance, journal,
                    merchant_gmv, brand_gmv, country_gmv, promos):
    """_pay of a checkout with discounts or coupons (its promotions record
    gives what each order and line costs)."""
    (templates, coupons, thresholds, threshold_merchants, deals, deal_takers, checkout_coupons, pfigures, psizes,
     open_threshold, ps, p_buyers, checkout_promos, line_promos, order_promos, buyer_promos) = promos
    checkout = checkouts[row]
    cp = checkout_promos[checkout.promo - 1]
    if amount != checkout.amount - _off(cp):
        return AMOUNT_MISMATCH
    checkout.status = PAID
    for k in range(checkout.orders):
        order = orders[checkout.order_start + k]
        order.status = PAID
        merchant_gmv[order.merchant] += order.amount - _off(order_promos[cp.order_start + k])
    for k in range(checkout.lines):
        ln = lines[checkout.line_start + k]
        sku = skus[ln.sku]
        sku.sold += ln.qty
        brand_gmv[sku.brand] += ln.amount - _off(line_promos[cp.line_start + k])
    if cp.off_platform != 0:
        _journal(J_MARKETING, row + 1, cp.off_platform, sizes, journal)
        totals[T_ESCROW] += cp.off_platform
        totals[T_MARKETING] -= cp.off_platform
    promo.on_payment(cp, checkout.lines, checkout.line_start, lines, templates, coupons, deals, checkout_coupons,
                     line_promos, pfigures)
    _paid(row, amount, sizes, totals, checkout, buyers, buyer_balance, journal, country_gmv)
    return OK


@inline
def _paid(row, amount, sizes, totals, checkout, buyers, buyer_balance, journal, country_gmv):
    """What every payment moves: the buyer's amount to escrow, and the figures."""
    b = checkout.buyer
    buyer_balance[b] -= amount
    _journal(J_PAYMENT, row + 1, amount, sizes, journal)
    totals[T_ESCROW] += amount
    buyer = buyers[b]
    if not buyer.has_paid:
        buyer.has_paid = True
        totals[T_BUYERS] += 1
        if not buyer.returning:
            totals[T_NEW_BUYERS] += 1
    totals[T_GMV] += amount
    if checkout.channel == MOBILE:
        totals[T_MOBILE_GMV] += amount
    totals[T_PAYMENTS] += 1
    country_gmv[checkout.country] += amount


@kernel
def release_reserved(row, status, available, checkouts, lines, orders, promos):
    """A reserved checkout is cancelled or expires: its units go back on
    sale, its coupons are held again and its deal units go back."""
    checkout = checkouts[row]
    checkout.status = status
    for o in range(checkout.order_start, checkout.order_start + checkout.orders):
        orders[o].status = status
    for n in range(checkout.line_start, checkout.line_start + checkout.lines):
        ln = lines[n]
        available[ln.sku] += ln.qty
    if checkout.promo != 0:
        (templates, coupons, thresholds, threshold_merchants, deals, deal_takers, checkout_coupons, pfigures, psizes,
         open_threshold, ps, p_buyers, checkout_promos, line_promos, order_promos, buyer_promos) = promos
        promo.release(checkout_promos[checkout.promo - 1], checkout.lines, checkout.line_start, checkout.buyer, lines,
                      coupons, deals, deal_takers, p_buyers, buyer_promos, checkout_coupons, line_promos)


@kernel
def expire_due(first, due_ms, available, checkouts, lines, orders, promos):
    """Expires the reserved checkouts created at or before due_ms, from row
    `first` on (checkouts are created in time order, so those due are a
    prefix).  Returns the first row not yet due."""
    row = first
    while row < len(checkouts) and checkouts[row].created <= due_ms:
        if checkouts[row].status == RESERVED:
            release_reserved(row, EXPIRED, available, checkouts, lines, orders, promos)
        row += 1
    return row


@inline
def _order_promo(row, checkouts, orders, checkout_promos):
    """The row of order `row`'s promotions record (its discounts), or -1."""
    checkout = checkouts[orders[row].checkout]
    if checkout.promo == 0:
        return -1
    return checkout_promos[checkout.promo - 1].order_start + row - checkout.order_start


@kernel
def _confirm(row, commission_bps, sizes, totals, checkouts, orders, merchant_balance, journal, promos):
    """The buyer received the order: escrow pays the merchant its amount
    before platform-funded discounts (list less what the merchant funds),
    less the platform's commission."""
    order = orders[row]
    amount = order.amount
    checkout_promos, order_promos = promos[12], promos[14]  # (see apply_batch's unpacking)
    op = _order_promo(row, checkouts, orders, checkout_promos)
    if op >= 0:
        off = order_promos[op]
        amount -= off.off_deal + off.off_store + off.off_threshold
    commission = amount * commission_bps // 10_000
    order.status = SETTLED
    merchant_balance[order.merchant] += amount - commission
    totals[T_ESCROW] -= amount
    totals[T_PLATFORM] += commission
    totals[T_SETTLED] += amount
    _journal(J_SETTLEMENT, row + 1, amount - commission, sizes, journal)
    _journal(J_COMMISSION, row + 1, commission, sizes, journal)


@kernel
def _refund(row, sizes, totals, available, skus, checkouts, lines, orders, buyer_balance, journal, promos):
    """A paid order goes back: escrow repays the buyer what they paid for it
    and the marketing account its platform-funded share, and its units are
    on sale again."""
    order = orders[row]
    amount = order.amount
    platform_funded = 0
    checkout_promos, order_promos = promos[12], promos[14]  # (see apply_batch's unpacking)
    op = _order_promo(row, checkouts, orders, checkout_promos)
    if op >= 0:
        off = order_promos[op]
        amount -= off.off_deal + off.off_store + off.off_threshold + off.off_platform
        platform_funded = off.off_platform
    order.status = REFUNDED
    for n in range(order.line_start, order.line_start + order.lines):
        ln = lines[n]
        skus[ln.sku].sold -= ln.qty
        available[ln.sku] += ln.qty
    checkout = checkouts[order.checkout]
    buyer = checkout.buyer
    buyer_balance[buyer] += amount
    totals[T_ESCROW] -= amount
    totals[T_REFUNDED] += amount
    _journal(J_REFUND, row + 1, amount, sizes, journal)
    if platform_funded != 0:
        _journal(J_MARKETING_REFUND, row + 1, platform_funded, sizes, journal)
        totals[T_ESCROW] -= platform_funded
        totals[T_MARKETING] += platform_funded
    if checkout.promo != 0:
        (templates, coupons, thresholds, threshold_merchants, deals, deal_takers, checkout_coupons, pfigures, psizes,
         open_threshold, ps, p_buyers, checkout_promos, line_promos, order_promos, buyer_promos) = promos
        cp = checkout_promos[checkout.promo - 1]
        promo.on_refund(cp.line_start + order.line_start - checkout.line_start, order.lines, order.line_start, buyer,
                        lines, deals, deal_takers, p_buyers, buyer_promos, line_promos)


@kernel
def _restock(sku_row, qty, available, sku_stocked):
    if sku_row < 0:
        return UNKNOWN_SKU
    available[sku_row] += qty
    sku_stocked[sku_row] += qty
    return OK


@inline
def _journal(kind, ref, amount, sizes, journal):
    t = sizes[S_TRANSFERS]
    transfer = journal[t]
    transfer.kind = kind
    transfer.ref = ref
    transfer.amount = amount
    sizes[S_TRANSFERS] = t + 1
