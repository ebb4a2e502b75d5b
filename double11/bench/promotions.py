"""The promotions mix of `double11 bench` (issue 22): every checkout priced
against an open cross-store threshold, half of them spending a store coupon,
a fifth a red packet, the ten hottest SKUs on flash deals with a per-buyer
limit, and coupons granted at a tenth of the checkout rate.

The same pieces serve the in-process engine and the server:
- `setup_batches`: the threshold, a store coupon template per merchant, the
  red packet's template and the flash deals, all open all day;
- `PromoMix`: rounds of checkouts planned ahead, the grants of the coupons
  they will spend (made before the timed load: a coupon must be held by the
  buyer who spends it), then the checkouts spending them with the game's
  new grants beside them;
- `SoldOutSwap`: what the app does once a hot item reads zero stock;
- `promotion_checks`: the invariants the promotions add, on a recovered state.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from double11 import limits
from double11.bench.workload import Workload, spending
from double11.catalog.model import Catalog
from double11.engine.batch import CommandBatch, Op
from double11.engine.encode import encode_commands
from double11.engine.machine import Engine, ranges
from double11.engine.status import Status
from double11.errors import Result
from double11.promotions import audit
from double11.promotions.tables import RESERVED, USED

# the cross-store threshold: every 200 yuan of a checkout, 25 off
THRESHOLD_EVERY_FEN = 20_000
THRESHOLD_OFF_FEN = 2_500
STORE_COUPON_FEN = 1_000
RED_PACKET_FEN = 500
# the mix's shares of the checkouts: spending a store coupon, a red packet;
# and the new coupons the games grant meanwhile
STORE_COUPON_SHARE = 0.5
RED_PACKET_SHARE = 0.2
GAME_GRANT_SHARE = 0.1
FLASH_DEALS = 10  # the hottest SKUs (catalog rows 0..9), at half price
FLASH_DEAL_PER_BUYER = 2
# a flash item goes into a checkout one unit at a time, as the app sells it
# (its per-buyer limit refuses a checkout asking more)
FLASH_DEAL_LINE_QTY = 1
OPEN_ALL_DAY = (0, limits.festival_time_ms_max)
PRE_GRANT_SOURCE = "bench:before-the-load"
GAME_SOURCE = "game:catch-the-cat"
# ids the setup gives, in its order: the red packet's template is the first,
# the store templates follow in the catalog's merchant order
RED_PACKET_TEMPLATE = 1


def setup_commands(catalog: Catalog) -> list[dict[str, Any]]:
    """The promotions of the mix, as JSON-shaped commands: the threshold over
    all merchants, the flash deals, the red packet's template, then a store
    coupon template per merchant of the catalog (in its row order)."""
    opens, closes = OPEN_ALL_DAY
    window = {"grant_from": opens, "grant_until": closes, "use_from": opens, "use_until": closes}
    # budgets far above what a run grants: the mix is never refused for them
    budget = {"min_spend_fen": 0, "budget_count": limits.coupon_budget_count_max,
              "per_buyer_max": limits.coupon_per_buyer_max}
    commands: list[dict[str, Any]] = [
        {"op": "threshold_discount", "idempotency_key": "bench-threshold", "every_fen": THRESHOLD_EVERY_FEN,
         "off_fen": THRESHOLD_OFF_FEN, "from": opens, "until": closes}]
    for row in range(min(FLASH_DEALS, catalog.skus)):
        list_fen = int(catalog.sku_price_fen[row])
        commands.append({
            "op": "deal", "idempotency_key": f"bench-deal-{row}", "sku": int(catalog.sku_id[row]),
            "price_fen": max(1, list_fen // 2), "qty": int(min(max(1, catalog.sku_stock[row]), limits.deal_qty_max)),
            "per_buyer_max": FLASH_DEAL_PER_BUYER, "from": opens, "until": closes, "kind": "flash"})
    commands.append({"op": "coupon_template", "idempotency_key": "bench-red-packet", "kind": "platform",
                     "discount_fen": RED_PACKET_FEN, **budget, **window})
    commands.extend({"op": "coupon_template", "idempotency_key": f"bench-store-{m}", "kind": "store",
                     "merchant": int(m), "discount_fen": STORE_COUPON_FEN, **budget, **window}
                    for m in catalog.merchant_id.tolist())
    return commands


def setup_batches(catalog: Catalog) -> list[CommandBatch]:
    """`setup_commands` as batches of at most limits.batch_commands_max."""
    commands = setup_commands(catalog)
    step = limits.batch_commands_max
    return [encode_commands(commands[k:k + step]) for k in range(0, len(commands), step)]


def check_setup(batch: CommandBatch, code: np.ndarray) -> None:
    """Raises RuntimeError naming the first setup command refused (the mix
    would measure something else without it)."""
    refused = np.flatnonzero(code != Result.ok)
    if len(refused):
        i = int(refused[0])
        raise RuntimeError(f"the promotions setup was refused: command {i} (op {int(batch.op[i])}) answered "
                           f"{Result(int(code[i])).name}")


@dataclass
class Round:
    """One batch of the mix, planned ahead: its checkouts (no coupons yet),
    which of them spend a store coupon or a red packet, the grants of those
    coupons, and the game's grants that go beside the checkouts."""

    checkouts: CommandBatch
    store: np.ndarray  # bool per checkout
    red: np.ndarray  # bool per checkout
    pre_grants: CommandBatch  # the store coupons' grants, then the red packets'
    game_grants: CommandBatch


class PromoMix:
    """The mix's batches.  Keys and buyers as the plain Workload's (its
    `work` also makes the payments)."""

    def __init__(self, catalog: Catalog, seed: int = 11, key_space: int = 0) -> None:
        self.work = Workload(catalog.sku_id, seed=seed, key_space=key_space)
        self.rng = np.random.default_rng(seed + 1)
        order = np.argsort(catalog.sku_id, kind="stable")
        self._sku_sorted, self._sku_rows = catalog.sku_id[order], order
        merchant_order = np.argsort(catalog.merchant_id, kind="stable")
        merchant_row = merchant_order[np.searchsorted(catalog.merchant_id[merchant_order], catalog.sku_merchant)]
        # a SKU's store coupon template, by SKU row (setup_commands' order)
        self.store_template = merchant_row.astype(np.int64) + RED_PACKET_TEMPLATE + 1
        self.merchants = catalog.merchants
        self.deal_skus = catalog.sku_id[:FLASH_DEALS].astype(np.int64)

    def sku_rows(self, sku_ids: np.ndarray) -> np.ndarray:
        return self._sku_rows[np.searchsorted(self._sku_sorted, sku_ids)]

    def round(self, n: int) -> Round:
        checkouts = self.work.checkouts(n)
        on_deal = np.isin(checkouts.sku, self.deal_skus)
        checkouts.qty[on_deal] = FLASH_DEAL_LINE_QTY
        store = self.rng.random(n) < STORE_COUPON_SHARE
        red = self.rng.random(n) < RED_PACKET_SHARE
        first_line = np.cumsum(checkouts.lines, dtype=np.int64) - checkouts.lines
        templates = np.r_[self.store_template[self.sku_rows(checkouts.sku[first_line[store]])],
                          np.full(int(red.sum()), RED_PACKET_TEMPLATE, dtype=np.int64)]
        pre_grants = self.work.grants(templates, np.r_[checkouts.target[store], checkouts.target[red]],
                                      PRE_GRANT_SOURCE)
        games = int(round(n * GAME_GRANT_SHARE))
        game_templates = np.where(self.rng.random(games) < 0.5, RED_PACKET_TEMPLATE,
                                  self.rng.integers(0, self.merchants, size=games) + RED_PACKET_TEMPLATE + 1)
        game_grants = self.work.grants(game_templates, self.rng.integers(1, self.work.buyers, size=games),
                                       GAME_SOURCE)
        return Round(checkouts, store, red, pre_grants, game_grants)

    @staticmethod
    def spend(planned: Round, code: np.ndarray, ref: np.ndarray) -> CommandBatch:
        """The round's checkouts spending the coupons its pre-grants gave
        (a grant refused leaves its checkout without that coupon), then the
        game's grants."""
        n, stores = len(planned.checkouts), int(planned.store.sum())
        coupon = np.where(code == Result.ok, ref, 0)
        held = np.zeros((n, 2), dtype=np.int64)  # a store coupon, then a red packet: pricing's order
        held[planned.store, 0] = coupon[:stores]
        held[planned.red, 1] = coupon[stores:]
        return CommandBatch.concat([spending(planned.checkouts, held), planned.game_grants])


def grant_ahead(rounds: list[Round], apply: Callable[[CommandBatch], tuple[np.ndarray, np.ndarray]]
                ) -> list[CommandBatch]:
    """Each round's pre-grants applied (`apply` answers code and ref per
    command), and the round as it will be sent: spending them."""
    return [PromoMix.spend(r, *apply(r.pre_grants)) for r in rounds]


def payable_fen(engine: Engine, rows: np.ndarray) -> np.ndarray:
    """What the checkouts of these rows ask the buyer to pay: list less discounts."""
    return audit.payable(engine, rows)


def checkouts_of(batch: CommandBatch) -> np.ndarray:
    """Which commands of a mix batch are checkouts (the rest are grants)."""
    return batch.op == Op.checkout


class SoldOutSwap:
    """Lines of hot SKUs seen sold out go to another SKU of the same
    merchant (the app greys out the item, the buyer picks the store's next
    one), so a checkout keeps its store coupon's merchant."""

    def __init__(self, catalog: Catalog, watched: int) -> None:
        hot = np.arange(min(watched, catalog.skus))
        self.hot_ids = catalog.sku_id[hot].astype(np.int64)
        self.instead = self.hot_ids.copy()
        for k, row in enumerate(hot):
            same = np.flatnonzero(catalog.sku_merchant == catalog.sku_merchant[row])
            cold = same[same >= len(hot)]  # rows are popularity ranks: the store's most popular unwatched one
            if len(cold):
                self.instead[k] = catalog.sku_id[cold[0]]

    def apply(self, batch: CommandBatch, sold_out: list[int]) -> CommandBatch:
        """The batch with its lines on `sold_out` SKUs swapped (in place)."""
        if sold_out:
            gone = np.isin(batch.sku, np.array(sold_out, dtype=np.int64))
            if gone.any():
                batch.sku[gone] = self.instead[np.searchsorted(self.hot_ids, batch.sku[gone],
                                                              sorter=np.argsort(self.hot_ids))]
        return batch


class MadeAhead:
    """The mix's batches made ahead (their coupons granted), handed to the
    load's clients one at a time, lines of sold out hot items swapped."""

    def __init__(self, batches: list[CommandBatch], catalog: Catalog, watched: int) -> None:
        self._batches = collections.deque(batches)
        self.checkouts_per_batch = int(checkouts_of(batches[0]).sum()) if batches else 0
        self._swap = SoldOutSwap(catalog, watched)

    def __len__(self) -> int:
        return len(self._batches)

    def take(self, sold_out: list[int]) -> CommandBatch | None:
        """The next batch (None: none left); safe across threads."""
        try:
            batch = self._batches.popleft()
        except IndexError:
            return None
        return self._swap.apply(batch, sold_out)


# ------------------------------------------------------------------ invariants
def promotion_checks(engine: Engine, ledger: dict[str, Any]) -> dict[str, bool]:
    """The promotions' invariants on a (recovered) state, each recounted from
    the records rather than read from a counter where it can be."""
    p = engine.promos
    templates = p.coupon_templates.rows[:p.coupon_templates.size]
    coupons = p.coupons.rows[:p.coupons.size]
    deals = p.deals.rows[:p.deals.size]
    granted = np.bincount(coupons["template"], minlength=len(templates))
    used = np.bincount(coupons["template"][coupons["status"] == USED], minlength=len(templates))
    budgets_ok = bool((templates["granted"] <= templates["budget_count"]).all()
                      and (granted == templates["granted"]).all() and (used == templates["used"]).all())

    # a deal's units: on the lines of its orders still reserved or paid
    n_lines = engine.lines.size
    deal_row = audit.line_deals(engine)
    order_status = engine.o_status.data[engine.l_order.data[:n_lines]]
    taking = (deal_row >= 0) & np.isin(order_status, (Status.reserved, Status.paid, Status.settled))
    qty = engine.l_qty.data[:n_lines].astype(np.int64)
    taken = np.bincount(deal_row[taking], weights=qty[taking], minlength=len(deals)).astype(np.int64)
    deals_ok = bool((deals["taken"] >= 0).all() and (deals["taken"] <= deals["qty"]).all()
                    and (taken == deals["taken"]).all())
    # each buyer's units of each deal, recounted from the lines
    buyer = engine.c_buyer.data[engine.o_checkout.data[engine.l_order.data[:n_lines][taking]]].astype(np.int64)
    pair = buyer * max(1, len(deals)) + deal_row[taking]
    pairs, at = np.unique(pair, return_inverse=True)
    units = np.bincount(at.ravel(), weights=qty[taking], minlength=len(pairs)).astype(np.int64)
    takers = p.deal_takers.rows[:p.deal_takers.size]
    per_buyer_ok = bool((units <= deals["per_buyer_max"][pairs % max(1, len(deals))]).all()
                        and (takers["units"] >= 0).all()
                        and (takers["units"] <= deals["per_buyer_max"][takers["deal"]]).all())

    amounts_ok, kinds_ok = _checkout_sums(engine)
    paid = engine.c_status.data[:engine.checkouts.size] == Status.paid
    platform_paid = int(audit.discounts_by_row(engine, "checkouts")[paid, 3].sum())
    accounts = ledger["accounts"]
    return {
        "templates_within_budget": budgets_ok,
        "deal_units_within_qty": deals_ok,
        "deal_units_within_per_buyer_max": per_buyer_ok,
        "list_less_discounts_is_payable": amounts_ok,
        "each_discount_sums_over_orders_and_lines": kinds_ok,
        "ledger_with_marketing_sums_to_zero": "marketing" in accounts and ledger["sum"] == 0
        and accounts["marketing"] == -platform_paid,
        "coupons_of_paid_checkouts_used": _coupons_follow_checkouts(engine),
    }


def _checkout_sums(engine: Engine) -> tuple[bool, bool]:
    """(list - discounts == payable == the sum of its orders' payable, for
    every checkout, which costs at least 1 fen, no order or line below zero;
    each kind of discount sums exactly over its orders and over its lines)."""
    checkouts = engine.checkouts.rows[:engine.checkouts.size]
    orders = engine.orders.rows[:engine.orders.size]
    lines = engine.lines.rows[:engine.lines.size]
    of_order = np.repeat(np.arange(len(checkouts)), checkouts["orders"].astype(np.int64))
    order_rows = ranges(checkouts["order_start"], checkouts["orders"])
    line_rows = ranges(checkouts["line_start"], checkouts["lines"])
    of_line = np.repeat(np.arange(len(checkouts)), checkouts["lines"].astype(np.int64))

    def by_checkout(values: np.ndarray, owner: np.ndarray) -> np.ndarray:
        return np.bincount(owner, weights=values, minlength=len(checkouts)).astype(np.int64)

    offs = {kind: audit.discounts_by_row(engine, kind) for kind in ("checkouts", "orders", "lines")}
    pay = checkouts["amount"] - offs["checkouts"].sum(axis=1)
    order_pay = orders["amount"] - offs["orders"].sum(axis=1)
    line_pay = lines["amount"] - offs["lines"].sum(axis=1)
    amounts_ok = bool((pay >= 1).all() and (order_pay >= 0).all() and (line_pay >= 0).all()
                      and (by_checkout(order_pay[order_rows], of_order) == pay).all()
                      and (by_checkout(line_pay[line_rows], of_line) == pay).all()
                      and (by_checkout(orders["amount"][order_rows], of_order) == checkouts["amount"]).all())
    kinds_ok = all((offs["checkouts"][:, k] >= 0).all()
                   and (by_checkout(offs["orders"][order_rows, k], of_order) == offs["checkouts"][:, k]).all()
                   and (by_checkout(offs["lines"][line_rows, k], of_line) == offs["checkouts"][:, k]).all()
                   for k in range(4))
    return amounts_ok, bool(kinds_ok)


def _coupons_follow_checkouts(engine: Engine) -> bool:
    """A coupon is used exactly when its checkout is paid, reserved while it
    is reserved, and held (no checkout) otherwise."""
    coupons = engine.promos.coupons.rows[:engine.promos.coupons.size]
    linked = coupons["checkout"] > 0
    status = np.zeros(len(coupons), dtype=np.int64)
    status[linked] = engine.c_status.data[coupons["checkout"][linked] - 1]
    return bool(((coupons["status"] == USED) == (status == Status.paid)).all()
                and ((coupons["status"] == RESERVED) == (status == Status.reserved)).all())
