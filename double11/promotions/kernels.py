"""The promotions' compiled commands and bookkeeping, called from the
engine's batch loop (double11/engine/transitions.py) in batch order.

- the operator commands (`create_template`, `create_threshold`,
  `create_deal`) and `grant`: each checks, then writes one record;
- `coupon_budget` and `deal_qty`: an operator's (or a cluster's rebalancer's)
  move of a template's budget or a deal's units, up, or down by what is not
  yet granted or taken, all or none;
- `price_checkout`: a checkout's refusals (coupons, deals, minimum spends)
  and its prices (pricing.py), before any stock is taken;
- `commit_checkout`: the coupons reserved and the deal units taken, once the
  stock was;
- `on_payment`, `release` (cancel, expiry) and `on_refund`: what a
  checkout's life does to its coupons and deals.

Every quantity here (a template's budget, a buyer's coupons or deal units, a
deal's units) is checked and taken in the same step of the one loop that
applies commands in order, so none is ever exceeded, whatever the
concurrency outside.
"""

from __future__ import annotations

from double11.engine.compiled import inline, kernel
from double11.engine.prefetch import prefetch
from double11.errors import Result
from double11.promotions import pricing
from double11.promotions.spec import COUPON_BUDGET, COUPON_TEMPLATE, DEAL, DEAL_QTY, GRANT, STORE, THRESHOLD_DISCOUNT
from double11.promotions.tables import (
    F_DEAL,
    F_GRANTED,
    F_PLATFORM_COUPON,
    F_SOLD_OUT,
    F_STORE_COUPON,
    F_THRESHOLD,
    F_USED,
    HELD,
    NEVER,
    RESERVED,
    USED,
)

# plain ints: Numba freezes module globals as compile-time constants
OK, UNKNOWN_OP = int(Result.ok), int(Result.unknown_op)
UNKNOWN_DEAL = int(Result.unknown_deal)
UNKNOWN_MERCHANT, UNKNOWN_SKU, UNKNOWN_TEMPLATE, UNKNOWN_COUPON = (
    int(Result.unknown_merchant), int(Result.unknown_sku), int(Result.unknown_template), int(Result.unknown_coupon))
INVALID_DEAL, WINDOW_OVERLAPS = int(Result.invalid_deal), int(Result.window_overlaps)
NOT_IN_WINDOW, BUDGET_EXHAUSTED, BUYER_LIMIT_REACHED = (
    int(Result.not_in_window), int(Result.budget_exhausted), int(Result.buyer_limit_reached))
NOT_YOUR_COUPON, COUPON_NOT_HELD, COUPON_EXPIRED = (
    int(Result.not_your_coupon), int(Result.coupon_not_held), int(Result.coupon_expired))
TWO_STORE_COUPONS, NOT_IN_CHECKOUT = int(Result.two_store_coupons), int(Result.coupon_merchant_not_in_checkout)
MIN_SPEND_NOT_MET, DEAL_SOLD_OUT, DEAL_BUYER_LIMIT = (
    int(Result.min_spend_not_met), int(Result.deal_sold_out), int(Result.deal_buyer_limit))
HELD_, RESERVED_, USED_, NEVER_ = HELD, RESERVED, USED, NEVER
STORE_ = STORE

# where each field sits in a command's args (their declarations' layout)
TA_KIND, TA_MERCHANT, TA_DISCOUNT, TA_MIN_SPEND = (COUPON_TEMPLATE.arg_at(n) for n in (
    "kind", "merchant", "discount_fen", "min_spend_fen"))
TA_BUDGET_COUNT, TA_BUDGET_FEN, TA_PER_BUYER = (COUPON_TEMPLATE.arg_at(n) for n in (
    "budget_count", "budget_fen", "per_buyer_max"))
TA_GRANT_FROM, TA_GRANT_UNTIL, TA_USE_FROM, TA_USE_UNTIL = (COUPON_TEMPLATE.arg_at(n) for n in (
    "grant_from", "grant_until", "use_from", "use_until"))
HA_EVERY, HA_OFF, HA_FROM, HA_UNTIL, HA_MERCHANTS = (THRESHOLD_DISCOUNT.arg_at(n) for n in (
    "every_fen", "off_fen", "from", "until", "merchants"))
DA_SKU, DA_PRICE, DA_QTY, DA_PER_BUYER, DA_FROM, DA_UNTIL, DA_KIND = (DEAL.arg_at(n) for n in (
    "sku", "price_fen", "qty", "per_buyer_max", "from", "until", "kind"))
GA_BUYER, GA_SOURCE = GRANT.arg_at("buyer"), GRANT.arg_at("source")
BUDGET_ARGS, BA_COUNT = len(COUPON_BUDGET.arg_fields), COUPON_BUDGET.arg_at("count")
QTY_ARGS, QA_QTY = len(DEAL_QTY.arg_fields), DEAL_QTY.arg_at("qty")

# rows of `psizes`: how many of each promotions table exist (PromotionTables.growing)
(P_TEMPLATES, P_COUPONS, P_THRESHOLDS, P_THRESHOLD_MERCHANTS, P_DEALS, P_DEAL_TAKERS, P_CHECKOUT_COUPONS,
 P_CHECKOUT_PROMOS, P_LINE_PROMOS, P_ORDER_PROMOS, P_BUYER_PROMOS) = range(11)

# rows of a checkout's pricing scratch (`ps`), one column per line in stored order
S_DEAL, S_OFF_DEAL, S_OFF_STORE, S_OFF_THRESHOLD, S_OFF_PLATFORM = 0, 1, 2, 3, 4
S_APPLIED = pricing.S_APPLIED  # column k: what the checkout's coupon k takes off
SCRATCH_ROWS = pricing.SCRATCH_ROWS


# ------------------------------------------------------------------ operators
@kernel
def create_template(a, arg, now, templates, psizes):
    """A coupon template from its args (its merchant's id already a row: -1
    unknown).  Returns (code, ref: the template's id)."""
    store = arg[a + TA_KIND] == STORE_
    merchant = arg[a + TA_MERCHANT]
    if store and merchant < 0:
        return UNKNOWN_MERCHANT, 0
    row = psizes[P_TEMPLATES]
    t = templates[row]
    t.kind = arg[a + TA_KIND]
    t.merchant = merchant if store else -1
    t.discount = arg[a + TA_DISCOUNT]
    t.min_spend = arg[a + TA_MIN_SPEND]
    t.budget_count = arg[a + TA_BUDGET_COUNT]
    t.budget_fen = arg[a + TA_BUDGET_FEN]
    t.per_buyer_max = arg[a + TA_PER_BUYER]
    t.grant_from = arg[a + TA_GRANT_FROM]
    t.grant_until = arg[a + TA_GRANT_UNTIL]
    t.use_from = arg[a + TA_USE_FROM]
    t.use_until = arg[a + TA_USE_UNTIL]
    t.granted = 0
    t.used = 0
    t.given = 0
    psizes[P_TEMPLATES] = row + 1
    return OK, row + 1


@kernel
def create_threshold(a, arg, now, thresholds, threshold_merchants, psizes, open_threshold):
    """A threshold discount (its merchants' ids already rows: -1 unknown).
    Returns (code, ref): unknown_merchant's ref is the list position + 1,
    window_overlaps' the id of the threshold it meets."""
    opens, closes = arg[a + HA_FROM], arg[a + HA_UNTIL]
    count = arg[a + HA_MERCHANTS]
    for p in range(count):
        if arg[a + HA_MERCHANTS + 1 + p] < 0:
            return UNKNOWN_MERCHANT, p + 1
    for other in range(psizes[P_THRESHOLDS]):
        if opens < thresholds[other].closes and thresholds[other].opens < closes:
            return WINDOW_OVERLAPS, other + 1
    row = psizes[P_THRESHOLDS]
    m = psizes[P_THRESHOLD_MERCHANTS]
    t = thresholds[row]
    t.every = arg[a + HA_EVERY]
    t.off = arg[a + HA_OFF]
    t.opens = opens
    t.closes = closes
    t.merchant_start = m
    t.merchants = count
    for p in range(count):
        threshold_merchants[m + p] = arg[a + HA_MERCHANTS + 1 + p]
    psizes[P_THRESHOLD_MERCHANTS] = m + count
    psizes[P_THRESHOLDS] = row + 1
    if opens <= now < closes:
        open_threshold[0] = row
    return OK, row + 1


@kernel
def create_deal(a, arg, now, skus, available, deals, psizes):
    """A deal on a SKU (its id already a row: -1 unknown).  Returns (code,
    ref): window_overlaps' ref is the id of the deal it meets."""
    s = arg[a + DA_SKU]
    if s < 0:
        return UNKNOWN_SKU, 0
    sku = skus[s]
    if arg[a + DA_PRICE] >= sku.price:
        return INVALID_DEAL, sku.price
    opens, closes = arg[a + DA_FROM], arg[a + DA_UNTIL]
    other = sku.deal_head - 1
    while other >= 0:
        if opens < deals[other].closes and deals[other].opens < closes:
            return WINDOW_OVERLAPS, other + 1
        other = deals[other].next_of_sku - 1
    row = psizes[P_DEALS]
    d = deals[row]
    d.sku = s
    d.kind = arg[a + DA_KIND]
    d.price = arg[a + DA_PRICE]
    d.qty = arg[a + DA_QTY]
    d.per_buyer_max = arg[a + DA_PER_BUYER]
    d.opens = opens
    d.closes = closes
    d.taken = 0
    d.sold = 0
    d.sold_out_at = NEVER_
    d.next_of_sku = sku.deal_head
    sku.deal_head = row + 1
    psizes[P_DEALS] = row + 1
    return OK, row + 1


# ---------------------------------------------------- budgets and units moved
@kernel
def coupon_budget(template_id, a, n_args, arg, templates, psizes):
    """Adds count (its arg) to template `template_id`'s budget_count, or
    takes -count coupons not yet granted out of it, all or none (its
    budget_fen stays).  Returns (code, ref): ref is the budget_count after
    (OK), the coupons it could still grant (budget_exhausted: fewer than
    -count) or the template's id (unknown_template)."""
    if n_args != BUDGET_ARGS:
        # only a batch that skipped validation (a forged log record) gets
        # here: its args are not this command's, so none is read
        return UNKNOWN_OP, 0
    row = template_id - 1
    if row < 0 or row >= psizes[P_TEMPLATES]:
        return UNKNOWN_TEMPLATE, template_id
    count = arg[a + BA_COUNT]
    t = templates[row]
    left = t.budget_count - t.granted
    if left < -count:
        return BUDGET_EXHAUSTED, left
    t.budget_count += count
    return OK, t.budget_count


@kernel
def deal_qty(deal_id, a, n_args, arg, deals, psizes, figures):
    """Adds qty (its arg) to deal `deal_id`'s units, opening it again if it
    had sold out, or takes -qty units not yet taken (reserved or sold) out
    of it, all or none; taking units out never marks it sold out.  Returns
    (code, ref): ref is the deal's qty after (OK), the units it had left
    (deal_sold_out: fewer than -qty) or the deal's id (unknown_deal)."""
    if n_args != QTY_ARGS:
        return UNKNOWN_OP, 0  # a forged record, as in coupon_budget
    row = deal_id - 1
    if row < 0 or row >= psizes[P_DEALS]:
        return UNKNOWN_DEAL, deal_id
    qty = arg[a + QA_QTY]
    d = deals[row]
    left = d.qty - d.taken
    if left < -qty:
        return DEAL_SOLD_OUT, left
    d.qty += qty
    if qty > 0 and d.sold_out_at != NEVER_:
        d.sold_out_at = NEVER_
        figures[F_SOLD_OUT] -= 1
    return OK, d.qty


@inline
def buyer_promo(buyer, buyers, buyer_promos, psizes):
    """The row of buyer row `buyer`'s promotions record, made on first need."""
    b = buyers[buyer]
    if b.promo == 0:
        row = psizes[P_BUYER_PROMOS]
        psizes[P_BUYER_PROMOS] = row + 1
        buyer_promos[row].coupon_head = 0
        buyer_promos[row].deal_head = 0
        b.promo = row + 1
    return b.promo - 1


@inline
def _deal_head(buyer, buyers, buyer_promos):
    p = buyers[buyer].promo
    return buyer_promos[p - 1].deal_head if p != 0 else 0


@kernel
def grant(template_id, a, arg, buyer, now, templates, coupons, buyers, buyer_promos, psizes, figures):
    """A coupon of template `template_id` for buyer row `buyer`.  Returns
    (code, ref: the coupon's id)."""
    row = template_id - 1
    if row < 0 or row >= psizes[P_TEMPLATES]:
        return UNKNOWN_TEMPLATE, 0
    t = templates[row]
    if not t.grant_from <= now < t.grant_until:
        return NOT_IN_WINDOW, 0
    if t.granted >= t.budget_count or (t.budget_fen > 0 and (t.granted + 1) * t.discount > t.budget_fen):
        return BUDGET_EXHAUSTED, 0
    held = 0
    p = buyers[buyer].promo
    c = buyer_promos[p - 1].coupon_head - 1 if p != 0 else -1
    while c >= 0:
        if coupons[c].template == row:
            held += 1
        c = coupons[c].next_of_buyer - 1
    if held >= t.per_buyer_max:
        return BUYER_LIMIT_REACHED, 0
    new = psizes[P_COUPONS]
    coupon = coupons[new]
    coupon.template = row
    coupon.buyer = buyer
    coupon.status = HELD_
    coupon.checkout = 0
    coupon.applied = 0
    coupon.granted_at = now
    coupon.source0 = arg[a + GA_SOURCE]
    coupon.source1 = arg[a + GA_SOURCE + 1]
    coupon.source2 = arg[a + GA_SOURCE + 2]
    coupon.source3 = arg[a + GA_SOURCE + 3]
    mine = buyer_promos[buyer_promo(buyer, buyers, buyer_promos, psizes)]
    coupon.next_of_buyer = mine.coupon_head
    mine.coupon_head = new + 1
    psizes[P_COUPONS] = new + 1
    t.granted += 1
    figures[F_GRANTED] += 1
    return OK, new + 1


# ------------------------------------------------------------------ checkouts
@inline
def prefetch_coupons(a, n_coupons, arg, coupons, psizes):
    """A checkout's coupons' records, a few commands before it runs (the
    batch loop's software pipeline: transitions.py)."""
    for k in range(n_coupons):
        row = arg[a + k] - 1
        if 0 <= row < psizes[P_COUPONS]:
            prefetch(coupons, row)


@inline
def prefetch_templates(a, n_coupons, arg, coupons, templates, psizes):
    """The templates its coupons lead to (their records came in by now)."""
    for k in range(n_coupons):
        row = arg[a + k] - 1
        if 0 <= row < psizes[P_COUPONS]:
            prefetch(templates, coupons[row].template)


@inline
def open_deal(head, now, deals):
    """The row of the deal open at `now` in a SKU's chain, or -1."""
    d = head - 1
    while d >= 0:
        if deals[d].opens <= now < deals[d].closes:
            return d
        d = deals[d].next_of_sku - 1
    return -1


@inline
def _taker(head, deal, deal_takers):
    """The row of a buyer's units of `deal` in their chain, or -1."""
    r = head - 1
    while r >= 0:
        if deal_takers[r].deal == deal:
            return r
        r = deal_takers[r].next - 1
    return -1


@inline
def price_checkout(first_line, count, perm, sku_row, qty, arg, a, n_coupons, buyer, now, skus, templates,
                   coupons, thresholds, threshold_merchants, deals, deal_takers, buyers, buyer_promos,
                   open_threshold, psizes, ps):
    """A checkout's promotions refusals, in the order of docs/promotions.md
    (coupons, deals, minimum spends), then its prices into `ps` (rows S_*,
    one column per line in stored order `perm`).  Returns (code, ref: the
    coupon's or the deal's id).  Changes nothing outside `ps`."""
    for k in range(n_coupons):
        cid = arg[a + k]
        row = cid - 1
        if row >= psizes[P_COUPONS]:
            return UNKNOWN_COUPON, cid
        coupon = coupons[row]
        if coupon.buyer != buyer:
            return NOT_YOUR_COUPON, cid
        if coupon.status != HELD_:
            return COUPON_NOT_HELD, cid
        t = templates[coupon.template]
        if now < t.use_from:
            return NOT_IN_WINDOW, cid
        if now >= t.use_until:
            return COUPON_EXPIRED, cid
        if t.kind == STORE_:
            present = False
            for j in range(first_line, first_line + count):
                if skus[sku_row[j]].merchant == t.merchant:
                    present = True
            if not present:
                return NOT_IN_CHECKOUT, cid
            for q in range(k):
                earlier = templates[coupons[arg[a + q] - 1].template]
                if earlier.kind == STORE_ and earlier.merchant == t.merchant:
                    return TWO_STORE_COUPONS, cid
    for j in range(first_line, first_line + count):
        d = open_deal(skus[sku_row[j]].deal_head, now, deals)
        if d < 0:
            continue
        asked = 0
        first = True
        for q in range(first_line, first_line + count):
            if sku_row[q] == sku_row[j]:
                asked += qty[q]
                if q < j:
                    first = False
        if not first:
            continue
        deal = deals[d]
        if deal.qty - deal.taken < asked:
            return DEAL_SOLD_OUT, d + 1
        mine = _taker(_deal_head(buyer, buyers, buyer_promos), d, deal_takers)
        units = deal_takers[mine].units if mine >= 0 else 0
        if units + asked > deal.per_buyer_max:
            return DEAL_BUYER_LIMIT, d + 1
    # the deal prices, then the discounts in order
    for p in range(count):
        j = first_line + perm[p]
        sku = skus[sku_row[j]]
        d = open_deal(sku.deal_head, now, deals)
        ps[S_DEAL, p] = d
        off = (sku.price - deals[d].price) * qty[j] if d >= 0 else 0
        pricing.start_line(ps, p, sku.price * qty[j], off)
    for k in range(n_coupons):
        t = templates[coupons[arg[a + k] - 1].template]
        if t.kind == STORE_:
            for p in range(count):
                pricing.mark(ps, p, skus[sku_row[first_line + perm[p]]].merchant == t.merchant)
            taken = pricing.coupon(ps, count, k, S_OFF_STORE, t.discount, t.min_spend)
            if taken < 0:
                return MIN_SPEND_NOT_MET, arg[a + k]
    ot = open_threshold[0]
    if ot >= 0:
        th = thresholds[ot]
        for p in range(count):
            merchant = skus[sku_row[first_line + perm[p]]].merchant
            joins = th.merchants == 0
            for m in range(th.merchant_start, th.merchant_start + th.merchants):
                if threshold_merchants[m] == merchant:
                    joins = True
            pricing.mark(ps, p, joins)
        pricing.threshold(ps, count, th.every, th.off)
    for k in range(n_coupons):
        t = templates[coupons[arg[a + k] - 1].template]
        if t.kind != STORE_:
            for p in range(count):
                pricing.mark(ps, p, True)
            taken = pricing.coupon(ps, count, k, S_OFF_PLATFORM, t.discount, t.min_spend)
            if taken < 0:
                return MIN_SPEND_NOT_MET, arg[a + k]
    return OK, 0


@inline
def commit_checkout(c, l_base, o_base, count, perm, qty, first_line, lines, arg, a, n_coupons, buyer, now, coupons,
                    deals, deal_takers, buyers, buyer_promos, checkout_coupons, checkout_promos, line_promos,
                    order_promos, psizes, figures, ps):
    """The stock is taken and checkout row `c` written (its lines from row
    `l_base`, its orders from `o_base`): its discounts are recorded (by
    line and by order), its coupons reserved and each deal's units taken,
    for the deal and for the buyer.  Returns its `checkouts.promo`: its
    record's row + 1, or 0 when it has neither discounts nor coupons."""
    off = 0
    for p in range(count):
        off += ps[S_OFF_DEAL, p] + ps[S_OFF_STORE, p] + ps[S_OFF_THRESHOLD, p] + ps[S_OFF_PLATFORM, p]
    if off == 0 and n_coupons == 0:
        return 0
    row = psizes[P_CHECKOUT_PROMOS]
    cp = checkout_promos[row]
    cp.off_deal = 0
    cp.off_store = 0
    cp.off_threshold = 0
    cp.off_platform = 0
    cp.line_start = psizes[P_LINE_PROMOS]
    cp.order_start = psizes[P_ORDER_PROMOS]
    cp.coupon_start = psizes[P_CHECKOUT_COUPONS]
    cp.coupons = n_coupons
    orders = lines[l_base + count - 1].order + 1 - o_base
    for k in range(orders):
        op = order_promos[cp.order_start + k]
        op.off_deal = 0
        op.off_store = 0
        op.off_threshold = 0
        op.off_platform = 0
    for p in range(count):
        lp = line_promos[cp.line_start + p]
        lp.deal = ps[S_DEAL, p] + 1
        lp.off_deal = ps[S_OFF_DEAL, p]
        lp.off_store = ps[S_OFF_STORE, p]
        lp.off_threshold = ps[S_OFF_THRESHOLD, p]
        lp.off_platform = ps[S_OFF_PLATFORM, p]
        op = order_promos[cp.order_start + lines[l_base + p].order - o_base]
        op.off_deal += lp.off_deal
        op.off_store += lp.off_store
        op.off_threshold += lp.off_threshold
        op.off_platform += lp.off_platform
        cp.off_deal += lp.off_deal
        cp.off_store += lp.off_store
        cp.off_threshold += lp.off_threshold
        cp.off_platform += lp.off_platform
    psizes[P_LINE_PROMOS] += count
    psizes[P_ORDER_PROMOS] += orders
    for k in range(n_coupons):
        coupon_row = arg[a + k] - 1
        coupon = coupons[coupon_row]
        coupon.status = RESERVED_
        coupon.checkout = c + 1
        coupon.applied = ps[S_APPLIED, k]
        checkout_coupons[cp.coupon_start + k] = coupon_row
    psizes[P_CHECKOUT_COUPONS] += n_coupons
    for p in range(count):
        d = ps[S_DEAL, p]
        if d >= 0:
            _take(d, qty[first_line + perm[p]], buyer, now, deals, deal_takers, buyers, buyer_promos, psizes, figures)
    psizes[P_CHECKOUT_PROMOS] = row + 1
    return row + 1


@inline
def _take(d, units, buyer, now, deals, deal_takers, buyers, buyer_promos, psizes, figures):
    deal = deals[d]
    deal.taken += units
    if deal.taken == deal.qty and deal.sold_out_at == NEVER_:
        deal.sold_out_at = now
        figures[F_SOLD_OUT] += 1
    mine_promo = buyer_promos[buyer_promo(buyer, buyers, buyer_promos, psizes)]
    mine = _taker(mine_promo.deal_head, d, deal_takers)
    if mine < 0:
        mine = psizes[P_DEAL_TAKERS]
        psizes[P_DEAL_TAKERS] = mine + 1
        taker = deal_takers[mine]
        taker.deal = d
        taker.units = 0
        taker.next = mine_promo.deal_head
        mine_promo.deal_head = mine + 1
    deal_takers[mine].units += units


@inline
def _give_back(d, units, buyer, deals, deal_takers, buyers, buyer_promos):
    deals[d].taken -= units
    mine = _taker(_deal_head(buyer, buyers, buyer_promos), d, deal_takers)
    if mine >= 0:
        deal_takers[mine].units -= units


# ------------------------------------------------------------ a checkout's life
@inline
def on_payment(cp, lines_count, line_start, lines, templates, coupons, deals, checkout_coupons, line_promos,
               figures):
    """A checkout (its promotions record `cp`) is paid: its coupons are
    used, its deal units sold, and its discounts count in the live figures."""
    for k in range(cp.coupon_start, cp.coupon_start + cp.coupons):
        coupon = coupons[checkout_coupons[k]]
        coupon.status = USED_
        t = templates[coupon.template]
        t.used += 1
        t.given += coupon.applied
        figures[F_USED] += 1
    for p in range(lines_count):
        d = line_promos[cp.line_start + p].deal
        if d > 0:
            deals[d - 1].sold += lines[line_start + p].qty
    figures[F_DEAL] += cp.off_deal
    figures[F_STORE_COUPON] += cp.off_store
    figures[F_THRESHOLD] += cp.off_threshold
    figures[F_PLATFORM_COUPON] += cp.off_platform


@kernel
def release(cp, lines_count, line_start, buyer, lines, coupons, deals, deal_takers, buyers, buyer_promos,
            checkout_coupons, line_promos):
    """A reserved checkout (its promotions record `cp`) is cancelled or
    expires: its coupons are held again and its deal units go back, for the
    deal and for the buyer."""
    for k in range(cp.coupon_start, cp.coupon_start + cp.coupons):
        coupon = coupons[checkout_coupons[k]]
        coupon.status = HELD_
        coupon.checkout = 0
        coupon.applied = 0
    for p in range(lines_count):
        d = line_promos[cp.line_start + p].deal
        if d > 0:
            _give_back(d - 1, lines[line_start + p].qty, buyer, deals, deal_takers, buyers, buyer_promos)


@kernel
def on_refund(first_promo, lines_count, line_start, buyer, lines, deals, deal_takers, buyers, buyer_promos,
              line_promos):
    """A paid order is refunded (its lines' promotions records from
    `first_promo`): its deal units go back, sold no more."""
    for p in range(lines_count):
        d = line_promos[first_promo + p].deal
        if d > 0:
            qty = lines[line_start + p].qty
            deals[d - 1].sold -= qty
            _give_back(d - 1, qty, buyer, deals, deal_takers, buyers, buyer_promos)
