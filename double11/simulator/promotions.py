"""2017's promotions in the day's plan (docs/promotions.md), as pure functions of the
plan and the catalog: what the operators create before midnight, which buyers win or
claim coupons and when, and which checkouts spend them.

- the cross-store threshold, "every RMB 400, RMB 50 off" (满400减50), all merchants,
  the whole day;
- store coupons of the biggest merchants, claimed before the day by some of the
  buyers who will shop there (the carts were filled in the weeks before);
- red packets (platform coupons) won in the AR "catch the cat" game, before and
  during the day, and in trivia rounds at set hours, usable on the day only;
- flash deals on the hottest SKUs at set hours (the midnight rush first), one unit
  a buyer, with too few units for the rush, so they sell out;
- livestream deals in the evening on the next hottest SKUs, and Juhuasuan group buys
  all day on a few more.

Times are ms after the festival's midnight, as the plan's; the replay adds the
server's midnight.  A grant planned before midnight is sent as the replay starts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from double11 import limits
from double11.simulator import mixes

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
MINUTE_MS = 60_000
# The games opened on 1 November, ten days before the day: the red packets' and store
# coupons' grant windows open then (a replay sends the grants "before the day" at its start).
GRANTS_OPEN_BEFORE_MS = 10 * DAY_MS

DISCOUNT_KINDS = ("deal", "store_coupon", "threshold", "platform_coupon")  # as the server names them

THRESHOLD_EVERY_FEN, THRESHOLD_OFF_FEN = 40_000, 5_000

STORE_COUPON_MERCHANTS = 20  # the biggest merchants of the plan each issue one template
STORE_COUPON_CLAIM_SHARE = 0.5  # of the (buyer, merchant) pairs the plan holds, claimed before the day
STORE_COUPON_OFF_SHARE = 0.1  # "RMB 20 off RMB 200": a tenth of the minimum spend
STORE_COUPON_STEP_FEN = 1_000  # minimum spends are round amounts

AR_SOURCE, TRIVIA_SOURCE, STORE_SOURCE = "game:ar-catch-the-cat", "game:trivia", "store-page"
AR_DISCOUNT_FEN, TRIVIA_DISCOUNT_FEN = 500, 1_000
AR_BEFORE_SHARE = 0.25  # of the day's buyers, caught a cat in the ten days before
AR_DURING_SHARE = 0.10  # caught one on the day
TRIVIA_ROUNDS_MS = (-4 * HOUR_MS, 10 * HOUR_MS, 20 * HOUR_MS)  # 20:00 on the eve, 10:00, 20:00
TRIVIA_ROUND_SHARE = 0.05  # of the day's buyers, won a round
TRIVIA_ROUND_SPREAD_MS = 2 * MINUTE_MS  # a round's winners are paid out over its first minutes

SPEND_SHARE = 0.6  # of the checkouts, spend the buyer's usable coupons

# deals: (kind, SKU ranks, price as a share of the list price, per-buyer limit,
# units as a share of the units the plan asks in the window, windows (from, until))
FLASH_RANKS = range(0, 3)
FLASH_WINDOWS = tuple((h * HOUR_MS, h * HOUR_MS + 20 * MINUTE_MS) for h in (0, 10, 20))
LIVESTREAM_RANKS = range(3, 8)
LIVESTREAM_WINDOWS = ((20 * HOUR_MS, 22 * HOUR_MS),)
GROUP_BUY_RANKS = range(8, 14)
GROUP_BUY_WINDOWS = ((0, DAY_MS),)
DEAL_SHAPES = (
    ("flash", FLASH_RANKS, 0.7, 1, 0.5, FLASH_WINDOWS),
    ("livestream", LIVESTREAM_RANKS, 0.8, 2, 0.8, LIVESTREAM_WINDOWS),
    ("group_buy", GROUP_BUY_RANKS, 0.85, 3, 1.2, GROUP_BUY_WINDOWS),
)


@dataclass(frozen=True)
class Template:
    kind: str  # "store" or "platform"
    merchant: int | None  # a store coupon's merchant id
    discount_fen: int
    min_spend_fen: int
    budget_count: int
    per_buyer_max: int
    source: str  # where its grants come from

    def command(self, key: str, start_ms: int) -> dict:
        cmd = {"op": "coupon_template", "idempotency_key": key, "kind": self.kind,
               "discount_fen": self.discount_fen, "min_spend_fen": self.min_spend_fen,
               "budget_count": self.budget_count, "budget_fen": self.budget_count * self.discount_fen,
               "per_buyer_max": self.per_buyer_max, "grant_from": start_ms - GRANTS_OPEN_BEFORE_MS,
               "grant_until": start_ms + DAY_MS, "use_from": start_ms, "use_until": start_ms + DAY_MS}
        if self.merchant is not None:
            cmd["merchant"] = self.merchant
        return cmd


@dataclass(frozen=True)
class Deal:
    kind: str
    sku_row: int
    price_fen: int
    qty: int
    per_buyer_max: int
    from_ms: int
    until_ms: int

    def command(self, key: str, start_ms: int, sku_id: int) -> dict:
        return {"op": "deal", "idempotency_key": key, "sku": sku_id, "price_fen": self.price_fen, "qty": self.qty,
                "per_buyer_max": self.per_buyer_max, "from": start_ms + self.from_ms,
                "until": start_ms + self.until_ms, "kind": self.kind}


@dataclass
class Promotions:
    templates: list[Template]
    deals: list[Deal]
    grant_at_ms: np.ndarray  # sorted; below 0: before the day (sent as the replay starts)
    grant_template: np.ndarray  # index into templates
    grant_buyer: np.ndarray  # buyer id
    spends_coupons: np.ndarray  # per checkout of the plan

    def threshold_command(self, key: str, start_ms: int) -> dict:
        return {"op": "threshold_discount", "idempotency_key": key, "every_fen": THRESHOLD_EVERY_FEN,
                "off_fen": THRESHOLD_OFF_FEN, "from": start_ms, "until": start_ms + DAY_MS}

    def deal_rows(self) -> dict[int, list[Deal]]:
        """Each SKU row's deals."""
        out: dict[int, list[Deal]] = {}
        for d in self.deals:
            out.setdefault(d.sku_row, []).append(d)
        return out

    def deal_at(self, sku_row: int, at_ms: int) -> Deal | None:
        """The deal open on the SKU at that moment of the day, if any."""
        for d in self.deals:
            if d.sku_row == sku_row and d.from_ms <= at_ms < d.until_ms:
                return d
        return None


def build(at_ms: np.ndarray, buyer: np.ndarray, fate: np.ndarray, line_offsets: np.ndarray,
          line_rows: np.ndarray, line_qty: np.ndarray, price_fen: np.ndarray, merchant: np.ndarray,
          stock: np.ndarray, rng: np.random.Generator) -> Promotions:
    """The day's promotions for the plan's checkouts (at_ms sorted), drawn from rng."""
    n = len(at_ms)
    line_owner = np.repeat(np.arange(n), np.diff(line_offsets))
    templates: list[Template] = []
    grants: list[tuple[np.ndarray, int, np.ndarray]] = []  # (at_ms, template, buyers)

    # store coupons: the biggest merchants by the plan's paid value
    paid_line = fate[line_owner] == mixes.PAY
    line_value = price_fen[line_rows] * line_qty
    line_merchant = merchant[line_rows]
    ids, owner = np.unique(line_merchant[paid_line], return_inverse=True)
    value = np.bincount(owner, weights=line_value[paid_line], minlength=len(ids))
    for m in ids[np.argsort(-value, kind="stable")[:STORE_COUPON_MERCHANTS]].tolist():
        mine = line_merchant == m
        # what a buyer spends at the store in one checkout: the minimum spend is its median, rounded
        per_checkout = np.bincount(line_owner[mine], weights=line_value[mine])
        spent = per_checkout[per_checkout > 0]
        min_spend = max(STORE_COUPON_STEP_FEN,
                        int(np.median(spent)) // STORE_COUPON_STEP_FEN * STORE_COUPON_STEP_FEN)
        pairs = np.unique(buyer[line_owner[mine]])
        claimed = pairs[rng.random(len(pairs)) < STORE_COUPON_CLAIM_SHARE]
        if len(claimed) == 0:
            continue
        templates.append(Template("store", int(m), int(min_spend * STORE_COUPON_OFF_SHARE), min_spend,
                                  len(claimed), 1, STORE_SOURCE))
        grants.append((np.full(len(claimed), -MINUTE_MS), len(templates) - 1, claimed))

    # red packets: AR before and during the day, trivia rounds
    buyers = np.unique(buyer)
    ar_before = rng.choice(buyers, size=int(len(buyers) * AR_BEFORE_SHARE), replace=False)
    ar_during = rng.choice(buyers, size=int(len(buyers) * AR_DURING_SHARE), replace=False)
    during_at = np.sort(rng.integers(0, DAY_MS, size=len(ar_during)))
    templates.append(Template("platform", None, AR_DISCOUNT_FEN, 0, len(ar_before) + len(ar_during), 2, AR_SOURCE))
    grants.append((np.full(len(ar_before), -MINUTE_MS), len(templates) - 1, ar_before))
    grants.append((during_at, len(templates) - 1, ar_during))
    rounds = [(start, rng.choice(buyers, size=int(len(buyers) * TRIVIA_ROUND_SHARE), replace=False))
              for start in TRIVIA_ROUNDS_MS]
    templates.append(Template("platform", None, TRIVIA_DISCOUNT_FEN, 0, sum(len(w) for _, w in rounds),
                              len(rounds), TRIVIA_SOURCE))
    for start, winners in rounds:
        grants.append((start + rng.integers(0, TRIVIA_ROUND_SPREAD_MS, size=len(winners)), len(templates) - 1,
                       winners))

    grant_at = np.concatenate([g[0] for g in grants]).astype(np.int64)
    grant_template = np.concatenate([np.full(len(g[2]), g[1], np.int64) for g in grants])
    grant_buyer = np.concatenate([g[2] for g in grants]).astype(np.int64)
    order = np.argsort(grant_at, kind="stable")
    return Promotions(templates=templates, deals=_deals(at_ms, line_owner, line_rows, line_qty, price_fen, stock),
                      grant_at_ms=grant_at[order], grant_template=grant_template[order],
                      grant_buyer=grant_buyer[order], spends_coupons=rng.random(n) < SPEND_SHARE)


def _deals(at_ms: np.ndarray, line_owner: np.ndarray, line_rows: np.ndarray, line_qty: np.ndarray,
           price_fen: np.ndarray, stock: np.ndarray) -> list[Deal]:
    """Deals on the hottest SKUs (rows are popularity ranks), with units for a share
    of what the plan's checkouts in the window ask (a buyer asks at most the limit),
    and never more than a share of the SKU's stock (its list-price sales go on
    outside the windows, and a deal's units are part of that stock)."""
    line_at = at_ms[line_owner]
    deals = []
    for kind, ranks, price_share, per_buyer, units_share, windows in DEAL_SHAPES:
        for row in ranks:
            if row >= len(price_fen) or price_fen[row] < 2:
                continue  # no cheaper price than a fen
            price = min(int(price_fen[row]) - 1, max(1, int(price_fen[row] * price_share)))
            for lo, hi in windows:
                asked = line_qty[(line_rows == row) & (line_at >= lo) & (line_at < hi)]
                units = min(int(np.minimum(asked, per_buyer).sum() * units_share),
                            int(stock[row]) // (len(windows) + 1))
                deals.append(Deal(kind, row, price, max(1, units), per_buyer, lo, hi))
    return deals


@dataclass
class Coupon:
    """A coupon a buyer holds, as its grant's answer described it."""

    coupon: int  # its id (or the grant's index, in the plan's own estimate)
    kind: str
    merchant: int | None
    discount_fen: int
    min_spend_fen: int


def choose_coupons(wallet: list[Coupon], merchant_amounts: dict[int, int]) -> list[Coupon]:
    """The coupons a checkout spends, oldest first: at most one store coupon per
    merchant, of a merchant whose lines reach its minimum spend (`merchant_amounts`
    is what they cost after deals, or less), and the red packets (they have no
    minimum spend); never more than a checkout takes."""
    chosen: list[Coupon] = []
    stores: set[int] = set()
    for c in wallet:
        if len(chosen) == limits.checkout_coupons_max:
            break
        if c.kind == "store":
            if c.merchant is None or c.merchant in stores or merchant_amounts.get(c.merchant, -1) < c.min_spend_fen:
                continue
            stores.add(c.merchant)
        elif c.min_spend_fen:
            continue  # the plan's red packets have none; one that had would be priced after the others
        chosen.append(c)
    return chosen


def expected_discounts(at_ms: np.ndarray, buyer: np.ndarray, fate: np.ndarray, line_offsets: np.ndarray,
                       line_rows: np.ndarray, line_qty: np.ndarray, price_fen: np.ndarray, merchant: np.ndarray,
                       promos: Promotions) -> tuple[dict[str, int], np.ndarray]:
    """The discounts of the paid checkouts, by kind and per checkout (0 for those
    not paid), if every grant and checkout of
    the plan is accepted as planned: the checkouts priced in time order as
    docs/promotions.md prices them, a deal's units running out (its latecomers pay
    the list price, as a similar item would cost), coupons spent as the replay
    spends them (choose_coupons), used when paid, back when cancelled, lost when
    abandoned."""
    out = dict.fromkeys(DISCOUNT_KINDS, 0)
    per_checkout = np.zeros(len(at_ms), np.int64)
    deals_of = promos.deal_rows()
    # Most checkouts have no line on a deal and spend no coupon: only the threshold
    # applies, to their list value, taken in one go; the others are priced one by one.
    lines = np.diff(line_offsets)
    on_deal = np.add.reduceat(np.isin(line_rows, list(deals_of)), line_offsets[:-1]) > 0 if len(at_ms) else lines > 0
    one_by_one = on_deal | (promos.spends_coupons & np.isin(buyer, promos.grant_buyer))
    plain = (fate == mixes.PAY) & ~one_by_one
    value = np.add.reduceat(price_fen[line_rows] * line_qty, line_offsets[:-1]) if len(at_ms) else lines
    per_checkout[plain] = value[plain] // THRESHOLD_EVERY_FEN * THRESHOLD_OFF_FEN
    out["threshold"] = int(per_checkout.sum())
    left = {id(d): d.qty for d in promos.deals}
    wallets: dict[int, list[Coupon]] = {}
    g, n_grants = 0, len(promos.grant_at_ms)
    for i in np.flatnonzero(one_by_one).tolist():
        at = int(at_ms[i])
        while g < n_grants and promos.grant_at_ms[g] <= at:
            t = promos.templates[int(promos.grant_template[g])]
            wallets.setdefault(int(promos.grant_buyer[g]), []).append(
                Coupon(g, t.kind, t.merchant, t.discount_fen, t.min_spend_fen))
            g += 1
        paid = fate[i] == mixes.PAY
        amounts: dict[int, int] = {}
        deal_off = 0
        for k in range(int(line_offsets[i]), int(line_offsets[i + 1])):
            row, qty, price = int(line_rows[k]), int(line_qty[k]), int(price_fen[line_rows[k]])
            deal = next((d for d in deals_of.get(row, ()) if d.from_ms <= at < d.until_ms), None)
            if deal is not None:
                qty = min(qty, deal.per_buyer_max)
                if left[id(deal)] >= qty:
                    deal_off += (price - deal.price_fen) * qty
                    price = deal.price_fen
                    left[id(deal)] -= qty if paid else 0
            m = int(merchant[row])
            amounts[m] = amounts.get(m, 0) + price * qty
        spent: list[Coupon] = []
        wallet = wallets.get(int(buyer[i]))
        if wallet and promos.spends_coupons[i]:
            spent = choose_coupons(wallet, amounts)
            if fate[i] != mixes.CANCEL:
                wallets[int(buyer[i])] = [c for c in wallet if c not in spent]
        if not paid:
            continue
        store_off = 0
        for c in spent:
            if c.kind == "store" and c.merchant is not None:
                off = min(c.discount_fen, amounts[c.merchant])
                amounts[c.merchant] -= off
                store_off += off
        base = sum(amounts.values())
        threshold_off = base // THRESHOLD_EVERY_FEN * THRESHOLD_OFF_FEN
        rest = base - threshold_off
        platform_off = 0
        for c in spent:
            if c.kind == "platform":
                off = min(c.discount_fen, rest - 1)  # a checkout costs at least a fen
                rest -= off
                platform_off += off
        out["deal"] += deal_off
        out["store_coupon"] += store_off
        out["threshold"] += threshold_off
        out["platform_coupon"] += platform_off
        per_checkout[i] = deal_off + store_off + threshold_off + platform_off
    return out, per_checkout
