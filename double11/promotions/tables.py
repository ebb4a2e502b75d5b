"""What the engine keeps for promotions: one table of records per entity.

A checkout's, order's and line's discounts live here, not in their records:
most checkouts of a day have none, and every byte of a checkout's records is
paid for tens of millions of times (the tables are sized for the festival's
peak).  A checkout with discounts or coupons links to its `checkout_promos`
record (`checkouts.promo`), which gives where its lines' and orders' are
(`line_promos`, `order_promos`: one record per line or order, in the
checkout's stored order).  A buyer with coupons or deal units links to a
`buyer_promos` record (`buyers.promo`).

Rows of other entities are held as rows (a merchant's, a SKU's, a buyer's),
and links between rows as row + 1 (0: none), so a zeroed record means
"nothing" and a table read from an older snapshot needs no fix-up.

Lists hang off their owner as chains, newest first: a buyer's coupons
(`buyer_promos.coupon_head` -> `coupons.next_of_buyer`), a buyer's deal units
(`buyer_promos.deal_head` -> `deal_takers.next`), a SKU's deals (`skus.deal_head`
-> `deals.next_of_sku`).  A buyer holds a handful of coupons and a SKU sees a
few deals a day, so walking a chain is a few loads, and nothing needs a
hash table or a rebuild.
"""

from __future__ import annotations

import numpy as np

from double11.engine.batch import CommandBatch, Op
from double11.engine.columns import Column, Table
from double11.promotions.spec import COUPON_TEMPLATE, DEAL, GRANT, THRESHOLD_DISCOUNT

# the ops that make promotions' rows (room() counts them in a batch)
_MAKERS = [COUPON_TEMPLATE.number, THRESHOLD_DISCOUNT.number, DEAL.number, GRANT.number]
_THRESHOLD_OP, _CHECKOUT_OP = THRESHOLD_DISCOUNT.number, int(Op.checkout)
_OPS_MAX = 255  # a batch's op column is one byte

# coupon and deal statuses, as a record's `status` holds them
HELD, RESERVED, USED = 1, 2, 3
COUPON_STATUS = {HELD: "held", RESERVED: "reserved", USED: "used"}
NEVER = -1  # a time that has not come (a deal never sold out)

TEMPLATE_FIELDS = [("discount", "i8"), ("min_spend", "i8"), ("budget_count", "i8"), ("budget_fen", "i8"),
                   ("grant_from", "i8"), ("grant_until", "i8"), ("use_from", "i8"), ("use_until", "i8"),
                   ("granted", "i8"), ("used", "i8"), ("given", "i8"),  # given: discount of coupons paid with
                   ("merchant", "i4"),  # a store coupon's merchant row; -1 for a platform one
                   ("per_buyer_max", "i4"), ("kind", "u1")]
COUPON_FIELDS = [("buyer", "i8"), ("checkout", "i8"),  # checkout: row + 1 while reserved or used
                 ("granted_at", "i8"), ("next_of_buyer", "i8"),
                 ("applied", "i8"),  # the discount it gave its checkout
                 ("source0", "i8"), ("source1", "i8"), ("source2", "i8"), ("source3", "i8"),
                 ("template", "i4"), ("status", "u1")]
THRESHOLD_FIELDS = [("every", "i8"), ("off", "i8"), ("opens", "i8"), ("closes", "i8"),
                    ("merchant_start", "i8"), ("merchants", "i4")]  # merchants: 0 = all
DEAL_FIELDS = [("price", "i8"), ("qty", "i8"), ("taken", "i8"),  # taken: reserved + paid units
               ("sold", "i8"), ("opens", "i8"), ("closes", "i8"), ("sold_out_at", "i8"),
               ("next_of_sku", "i8"), ("per_buyer_max", "i4"), ("sku", "i4"), ("kind", "u1")]
DEAL_TAKER_FIELDS = [("units", "i8"), ("next", "i8"), ("deal", "i4")]
# a record's discounts by kind (DISCOUNT_KINDS' order)
OFF_FIELDS = [("off_deal", "i8"), ("off_store", "i8"), ("off_threshold", "i8"), ("off_platform", "i8")]
CHECKOUT_PROMO_FIELDS = [*OFF_FIELDS, ("coupon_start", "i8"),  # its coupons: checkout_coupons
                         ("line_start", "i8"), ("order_start", "i8"),  # its lines' and orders' records
                         ("coupons", "u1")]
LINE_PROMO_FIELDS = [*OFF_FIELDS, ("deal", "i4")]  # deal: the row + 1 of the deal it was sold on
ORDER_PROMO_FIELDS = OFF_FIELDS
BUYER_PROMO_FIELDS = [("coupon_head", "i8"), ("deal_head", "i8")]

# rows of `figures`: the live figures promotions add to (docs/promotions.md, "Live figures")
F_DEAL, F_STORE_COUPON, F_THRESHOLD, F_PLATFORM_COUPON, F_GRANTED, F_USED, F_SOLD_OUT = range(7)
DISCOUNT_KINDS = ("deal", "store_coupon", "threshold", "platform_coupon")  # rows F_DEAL..F_PLATFORM_COUPON
FIGURES = 7



class PromotionTables:
    """The promotions' tables.  Operator-made ones start small (operators make
    thousands, not millions).  The rest are sized for the checkouts with
    discounts or coupons the festival expects (`expected_discounted_checkouts`,
    and as many coupons), and prefaulted with the core's tables where the
    festival's are: a first write to a fresh page costs a fault, and faults
    on these tables as they filled halved the engine's rate of discounted
    checkouts.  A festival that expects none pays nothing for them: they
    start small and grow."""

    def __init__(self, expected_discounted_checkouts: int, prefault: bool = False) -> None:
        cap = max(expected_discounted_checkouts, 1 << 12)
        pf = prefault and expected_discounted_checkouts > 0
        # a store coupon template per merchant is common: room for a big
        # marketplace's before the first grows (address space only, untouched)
        self.coupon_templates = Table(TEMPLATE_FIELDS, 1 << 17, align=False)
        self.coupons = Table(COUPON_FIELDS, cap, pf, align=False)
        self.thresholds = Table(THRESHOLD_FIELDS, 1 << 6, align=False)
        self.threshold_merchants = Column(np.int32, 1 << 10)  # each threshold's merchant rows, one after another
        self.deals = Table(DEAL_FIELDS, 1 << 10, align=False)
        self.deal_takers = Table(DEAL_TAKER_FIELDS, cap, pf, align=False)
        # each checkout's coupons (rows), one checkout's after another (checkout_promos.coupon_start)
        self.checkout_coupons = Column(np.int64, cap, pf)
        self.checkout_promos = Table(CHECKOUT_PROMO_FIELDS, cap, pf, align=False)
        self.line_promos = Table(LINE_PROMO_FIELDS, cap * 8 // 5, pf, align=False)
        self.order_promos = Table(ORDER_PROMO_FIELDS, cap * 3 // 2, pf, align=False)
        self.buyer_promos = Table(BUYER_PROMO_FIELDS, cap, pf, align=False)
        self.figures = Column(np.int64, FIGURES)
        self.figures.size = FIGURES

    def open_threshold(self, now_ms: int) -> int:
        """The row of the threshold discount open at now_ms, or -1 (windows
        never meet, so there is at most one)."""
        rows = self.thresholds.rows
        open_now = (rows["opens"] <= now_ms) & (now_ms < rows["closes"])
        return int(np.argmax(open_now)) if open_now.any() else -1

    def tables(self) -> dict[str, Table | Column]:
        return {"coupon_templates": self.coupon_templates, "coupons": self.coupons, "thresholds": self.thresholds,
                "threshold_merchants": self.threshold_merchants, "deals": self.deals,
                "deal_takers": self.deal_takers, "checkout_coupons": self.checkout_coupons,
                "checkout_promos": self.checkout_promos, "line_promos": self.line_promos,
                "order_promos": self.order_promos, "buyer_promos": self.buyer_promos,
                "promotion_figures": self.figures}

    # growing(), in order: names for operators (a table that grows pauses the engine)
    GROWING_NAMES = ("coupon templates", "coupons", "threshold discounts", "threshold merchants", "deals",
                     "deal takers", "checkout coupons", "checkouts' discounts", "lines' discounts",
                     "orders' discounts", "buyers' promotions")

    def growing(self) -> tuple[Table | Column, ...]:
        """What a batch may append to, in the order of the kernel's `psizes`."""
        return (self.coupon_templates, self.coupons, self.thresholds, self.threshold_merchants, self.deals,
                self.deal_takers, self.checkout_coupons, self.checkout_promos, self.line_promos, self.order_promos,
                self.buyer_promos)

    def room(self, batch: CommandBatch) -> tuple[int, ...]:
        """Rows `batch` may add to each growing table, from what it holds:
        none while the festival has no promotions and the batch makes none
        (so a plain festival never grows them)."""
        counts = np.bincount(batch.op, minlength=_OPS_MAX + 1)
        made = counts[_MAKERS]
        if not made.any() and not (self.coupon_templates.size or self.thresholds.size or self.deals.size):
            return (0,) * len(self.GROWING_NAMES)
        n_lines, n_args, checkouts = len(batch.sku), len(batch.arg), int(counts[_CHECKOUT_OP])
        threshold_args = int(batch.args[batch.op == _THRESHOLD_OP].sum(dtype=np.int64))
        templates, thresholds, deals, grants = (int(x) for x in made)
        return (templates, grants, thresholds, threshold_args, deals, n_lines, n_args, checkouts, n_lines, n_lines,
                checkouts + grants)
