"""The engine against the reference model (tests/model/reference.py) on random streams
mixing promotions (docs/promotions.md: coupon templates of both kinds with small
budgets and per-buyer limits, thresholds, deals with few units, grants, checkouts
with coupons, templates' budgets and deals' units moved up and down, deals sold
out and opened again) with the core's commands: every result, every view and the
invariants after every batch; recovery gives back the same state.

As in tests/test_properties.py, streams are abstract recipes turned into commands
when their batch is sent.  Here a scratch copy of the model applies each command as
it is built, so "pay the right amount" and "a coupon of the buyer's own" mean what
they say even for a checkout or a grant earlier in the same batch.
"""

from __future__ import annotations

import copy
import tempfile
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from model import (
    MERCHANTS,
    SMALL_SKUS,
    UNKNOWN_SKU,
    cancel,
    co,
    confirm,
    coupon_budget,
    deal,
    deal_qty,
    grant,
    pay,
    refund,
    release,
    restock,
    small_catalog,
    template,
    threshold,
)
from model.reference import DISCOUNT_KINDS, ReferenceFestival
from test_properties import COMMON_DEFECTS, CONFIG, DEFECTS, SETTINGS, SKUS, START, TIMEOUT, norm, weighted
from test_properties import check_invariants as check_core_invariants
from test_properties import views as core_views

from double11 import Festival

UNKNOWN_MERCHANT = 40
BUYERS = (1, 2, 3, 4, 5, 6)

# --- recipes ------------------------------------------------------------------------

sku_choice = st.sampled_from(SKUS * 3 + [UNKNOWN_SKU])
merchant_choice = st.sampled_from([*MERCHANTS, *MERCHANTS, UNKNOWN_MERCHANT])
# a window as (start after now, length): mostly open now and for a while, some opening
# later or closing soon
window_r = st.tuples(weighted((3, st.sampled_from([-1_000, 0, 0])),
                              (1, st.sampled_from([-2 * TIMEOUT, 1, 1_000, 30_000, TIMEOUT]))),
                     weighted((3, st.sampled_from([TIMEOUT, 5 * TIMEOUT, 20 * TIMEOUT])),
                              (1, st.sampled_from([1, 1_000, 30_000]))))
template_r = st.tuples(
    st.just("template"),
    st.sampled_from(["store", "platform"]),
    merchant_choice,
    st.sampled_from([50, 300, 1_000, 5_000]),  # discount_fen
    st.sampled_from([0, 0, 500, 3_000]),  # min_spend_fen
    st.integers(1, 4),  # budget_count
    st.sampled_from([None, 0, 1, 2, 3]),  # budget_fen in discounts (None: absent)
    st.sampled_from([None, 1, 2, 3]),  # per_buyer_max (None: absent)
    window_r,  # grants
    window_r,  # use
)
threshold_r = st.tuples(
    st.just("threshold"),
    st.sampled_from([1_000, 2_000, 5_000, 30_000]),  # every_fen
    st.sampled_from([1, 10, 50]),  # off_fen in percent of every_fen
    st.none() | st.lists(merchant_choice, max_size=2, unique=True),
    window_r,
)
deal_r = st.tuples(
    st.just("deal"),
    sku_choice,
    st.sampled_from([50, 90, 99, 100]),  # price in percent of the list price (100: refused)
    st.integers(1, 3),  # qty
    st.integers(1, 2),  # per_buyer_max
    window_r,
    st.sampled_from(["flash", "group_buy", "livestream"]),
)
# which thing a command names: 0 = the newest, 1 = the one before, ...; past the
# oldest it names one that does not exist
pick = weighted((3, st.integers(0, 1)), (1, st.integers(0, 6)))
# buyers 1..3 get most grants and make most checkouts, so that they use their coupons
buyer_choice = weighted((4, st.integers(1, 3)), (1, st.sampled_from(BUYERS)))
grant_r = st.tuples(st.just("grant"), pick, buyer_choice, st.sampled_from(["game:ar", "live", "x"]))
# a coupon of the buyer's own (newest first; none if the buyer has fewer), any coupon
# (newest first, round), or one that does not exist
coupon_pick = st.tuples(st.sampled_from(["own"] * 6 + ["any", "unknown"]), st.integers(0, 3))
coupon_picks = weighted((2, st.just([])), (3, st.lists(coupon_pick, min_size=1, max_size=1)),
                        (1, st.lists(coupon_pick, min_size=2, max_size=3)))
checkout_r = st.tuples(
    st.just("checkout"),
    buyer_choice,
    st.sampled_from(["CN", "CN", "US", "HK"]),
    st.sampled_from(["mobile", "pc"]),
    st.lists(st.tuples(sku_choice, weighted((2, st.just(1)), (1, st.integers(1, 3)))), min_size=1, max_size=3),
    coupon_picks,
)
pay_r = st.tuples(st.just("pay"), pick, st.sampled_from(["right", "right", "right", "wrong"]))
cancel_r = st.tuples(st.just("cancel"), pick)
confirm_r = st.tuples(st.just("confirm"), pick)
refund_r = st.tuples(st.just("refund"), pick)
restock_r = st.tuples(st.just("restock"), sku_choice, st.integers(1, 4))
release_r = st.tuples(st.just("release"), sku_choice, st.integers(1, 4))  # stock taken from under a deal, too
# a template's budget or a deal's units moved: often more taken out than is left, or a sold-out deal reopened
moved = st.sampled_from([-4, -3, -2, -1, -1, 1, 1, 2])
budget_r = st.tuples(st.just("coupon_budget"), pick, moved)
deal_qty_r = st.tuples(st.just("deal_qty"), pick, moved)
# checkouts of what an open deal has left (each by a buyer without units of it, within its per-buyer
# limit), then units moved on that deal: a deal sold out and opened again
sell_out_r = st.tuples(st.just("sell_out"), pick, st.sampled_from([1, 1, 2, -1]))
base_r = weighted((4, checkout_r), (4, pay_r), (1, cancel_r), (2, confirm_r), (2, refund_r), (1, restock_r),
                  (1, release_r), (2, template_r), (1, threshold_r), (2, deal_r), (4, grant_r), (1, budget_r),
                  (1, deal_qty_r), (1, sell_out_r))
retry_r = st.tuples(st.just("retry"), st.integers(0, 40))
reuse_r = st.tuples(st.just("reuse"), st.integers(0, 40), base_r)
bad_r = st.tuples(st.just("bad"), base_r, st.integers(0, 1000), st.booleans())
buy_r = st.tuples(st.just("buy"), checkout_r)  # a checkout and its payment, so that coupons get used
recipe = weighted((14, base_r), (3, buy_r), (1, retry_r), (1, reuse_r), (2, bad_r))
DELTAS = [0, 0, 0, 1, 1_000, 1_000, 30_000, 30_000, TIMEOUT - 1, TIMEOUT, TIMEOUT + 1, 5 * TIMEOUT, -5_000]
batch_r = st.tuples(st.sampled_from(DELTAS), st.lists(recipe, min_size=1, max_size=8))
# a first batch that makes templates, maybe a deal or a threshold, and grants; then the mix
opening_r = st.tuples(st.lists(template_r, min_size=1, max_size=3), st.lists(deal_r | threshold_r, max_size=2),
                      st.lists(grant_r, min_size=1, max_size=5)).map(lambda t: (0, [*t[0], *t[1], *t[2]]))
stream_r = st.tuples(opening_r, st.lists(batch_r, min_size=1, max_size=12)).map(lambda t: [t[0], *t[1]])


def _without(c: dict, name: str) -> dict:
    return {k: v for k, v in c.items() if k != name}


PROMOTION_DEFECTS: dict[str, list] = {
    "coupon_template": [
        lambda c: {**c, "kind": "shop"},
        lambda c: {**c, "discount_fen": 0},
        lambda c: _without(c, "min_spend_fen"),
        lambda c: {**c, "budget_count": -1},
        lambda c: {**c, "use_until": c["use_from"]},
        lambda c: {**c, "per_buyer_max": 1001},
        lambda c: {**c, "budget_fen": c["discount_fen"] - 1},
    ],
    "threshold_discount": [
        lambda c: {**c, "off_fen": c["every_fen"]},
        lambda c: {**c, "merchants": [10, 10]},
        lambda c: {**c, "until": c["from"]},
        lambda c: {**c, "every_fen": "1000"},
    ],
    "deal": [
        lambda c: {**c, "qty": -1},
        lambda c: {**c, "per_buyer_max": 1000},
        lambda c: {**c, "kind": "auction"},
        lambda c: {**c, "sku": 0},
    ],
    "grant": [
        lambda c: {**c, "template": 0},
        lambda c: {**c, "source": ""},
        lambda c: {**c, "source": "x" * 33},
        lambda c: _without(c, "buyer"),
    ],
    "coupon_budget": [
        lambda c: {**c, "count": 0},
        lambda c: {**c, "count": -1_000_000_001},
        lambda c: {**c, "count": "1"},
        lambda c: {**c, "template": 0},
        lambda c: _without(c, "count"),
    ],
    "deal_qty": [
        lambda c: {**c, "qty": 0},
        lambda c: {**c, "qty": 1_000_000_001},
        lambda c: {**c, "deal": -1},
        lambda c: _without(c, "qty"),
    ],
    "checkout": [
        *DEFECTS["checkout"],
        lambda c: {**c, "coupons": [1, 1]},
        lambda c: {**c, "coupons": list(range(1, 10))},
        lambda c: {**c, "coupons": "1"},
        lambda c: {**c, "coupons": [0]},
    ],
}
ALL_DEFECTS = {**DEFECTS, **PROMOTION_DEFECTS}


class Driver:
    """Turns recipes into commands against a scratch copy of the model, sends each
    batch to the engine (if any) and the model, and checks results, views and
    invariants."""

    def __init__(self, engine: Any, model: ReferenceFestival):
        self.engine = engine
        self.model = model
        self.now = START
        self.keys = 0
        self.sold_out = 0  # the deal the last sell_out recipe took units of
        self.history: list = []  # every command sent, in order
        self.log: list = []  # (now, commands) of every batch, for repro messages

    def new_key(self) -> str:
        self.keys += 1
        return f"k{self.keys}"

    @staticmethod
    def _pick(known: int, p: int) -> int:
        return known - p if p < known else known + 1 + (p - known)

    def _coupons(self, s: ReferenceFestival, buyer: int, picks: list) -> list[int]:
        chosen: list[int] = []
        for which, p in picks:
            if which == "own":
                mine = sorted((cid for cid, c in s.coupons.items() if c["buyer"] == buyer), reverse=True)
                if p >= len(mine):
                    continue
                coupon = mine[p]
            elif which == "any" and s.coupons:
                coupon = len(s.coupons) - p % len(s.coupons)
            else:
                coupon = len(s.coupons) + 1 + p
            if coupon not in chosen:
                chosen.append(coupon)
        return chosen

    def build(self, r: tuple, s: ReferenceFestival, key: str | None = None) -> dict:
        """the command of recipe r, against s: the model with the batch's earlier commands applied"""
        key = key or self.new_key()
        kind, now = r[0], self.now
        if kind == "checkout":
            _, buyer, country, channel, lines, picks = r
            if any(which == "own" for which, _ in picks) and s.coupons and not any(
                    c["buyer"] == buyer for c in s.coupons.values()):
                buyer = s.coupons[len(s.coupons)]["buyer"]  # a buyer who holds a coupon
            return co(key, lines, buyer=buyer, country=country, channel=channel,
                      coupons=self._coupons(s, buyer, picks) if picks else None)
        if kind in ("pay", "cancel"):
            cid = self._pick(len(s.checkouts), r[1])
            if kind == "cancel":
                return cancel(key, cid)
            amount = s.checkouts[cid]["amount_fen"] if cid in s.checkouts else 100
            return pay(key, cid, amount if r[2] == "right" else amount + 1)
        if kind in ("confirm", "refund"):
            return (confirm if kind == "confirm" else refund)(key, self._pick(len(s.orders), r[1]))
        if kind == "restock":
            return restock(key, r[1], r[2])
        if kind == "release":
            return release(key, r[1], r[2])
        if kind == "template":
            _, tkind, merchant, discount, min_spend, budget_count, budget_in, per_buyer, gw, uw = r
            return template(key, kind=tkind, merchant=merchant if tkind == "store" else None, discount_fen=discount,
                            min_spend_fen=min_spend, budget_count=budget_count,
                            budget_fen=None if budget_in is None else budget_in * discount, per_buyer_max=per_buyer,
                            grant_from=now + gw[0], grant_until=now + gw[0] + gw[1], use_from=now + uw[0],
                            use_until=now + uw[0] + uw[1])
        if kind == "threshold":
            _, every, off_percent, merchants, w = r
            return threshold(key, every, max(1, every * off_percent // 100), merchants=merchants,
                             start=now + w[0], until=now + w[0] + w[1])
        if kind == "deal":
            _, sku, price_percent, qty, per_buyer, w, dkind = r
            list_price = SMALL_SKUS[sku][2] if sku in SMALL_SKUS else 100
            return deal(key, sku, max(1, list_price * price_percent // 100), qty, per_buyer_max=per_buyer,
                        start=now + w[0], until=now + w[0] + w[1], kind=dkind)
        if kind == "grant":
            _, p, buyer, source = r
            return grant(key, self._pick(len(s.templates), p), buyer=buyer, source=source)
        if kind == "coupon_budget":
            return coupon_budget(key, self._pick(len(s.templates), r[1]), r[2])
        if kind == "deal_qty":
            return deal_qty(key, self.sold_out if r[1] == "sold_out" else self._pick(len(s.deals), r[1]), r[2])
        if kind in ("sell_out", "sell_more"):
            if kind == "sell_out":  # the newest deal open now with units left, else the one picked
                open_ = [d for d in s.deals.values() if d["from"] <= now < d["until"] and s._deal_left(d) > 0]
                self.sold_out = open_[-1]["deal"] if open_ else self._pick(len(s.deals), r[1])
            d = s.deals.get(self.sold_out)
            if d is None:
                return co(key, [(UNKNOWN_SKU, 1)])
            buyer = next((b for b in BUYERS if not s.deal_units_of.get((d["deal"], b))), BUYERS[0])
            return co(key, [(d["sku"], max(1, min(s._deal_left(d), d["per_buyer_max"])))], buyer=buyer)
        raise AssertionError(kind)

    def concrete(self, r: tuple, s: ReferenceFestival) -> Any:
        kind = r[0]
        if kind == "retry":
            if not self.history:
                return cancel(self.new_key(), 1)
            return copy.deepcopy(self.history[-1 - r[1] % len(self.history)])
        keyed = [c for c in self.history
                 if isinstance(c, dict) and isinstance(c.get("idempotency_key"), str) and c["idempotency_key"]]
        if kind == "reuse":
            key = keyed[-1 - r[1] % len(keyed)]["idempotency_key"] if keyed else None
            return self.build(r[2], s, key=key)
        if kind == "bad":
            _, inner, which, old_key = r
            key = keyed[which % len(keyed)]["idempotency_key"] if old_key and keyed else None
            cmd = self.build(inner, s, key=key)
            defects = COMMON_DEFECTS + ALL_DEFECTS[cmd["op"]]
            return defects[which % len(defects)](cmd)
        return self.build(r, s)

    @staticmethod
    def steps(r: tuple) -> list[tuple]:
        """the recipes a recipe stands for"""
        if r[0] == "buy":
            return [r[1], ("pay", 0, "right")]
        if r[0] == "sell_out":
            return [r, ("sell_more",), ("sell_more",), ("deal_qty", "sold_out", r[2])]
        return [r]

    def send(self, batch: tuple) -> None:
        delta, recipes = batch
        self.now += delta
        scratch = copy.deepcopy(self.model)
        cmds = []
        for r in recipes:
            for step in self.steps(r):
                cmd = self.concrete(step, scratch)
                scratch.execute([copy.deepcopy(cmd)], self.now)
                cmds.append(cmd)
        self.history.extend(copy.deepcopy(cmds))
        self.log.append((self.now, copy.deepcopy(cmds)))
        want = self.model.execute(copy.deepcopy(cmds), self.now)
        if self.engine is not None:
            got = self.engine.execute(copy.deepcopy(cmds), self.now)
            assert len(got) == len(cmds), self.repro("result count")
            for i, (g, w) in enumerate(zip(got, want, strict=True)):
                assert norm(g) == norm(w), self.repro(
                    f"command {i} of the last batch {cmds[i]!r}: engine {g!r}, model {w!r}")
                if g["status"] >= 400:
                    assert set(g["body"]) == {"error"} and isinstance(g["body"]["error"].get("message"), str)
        self.check_views()

    def repro(self, what: str) -> str:
        lines = [f"mismatch at {what}", "stream (now_ms, commands):"]
        lines += [f"  {now}: {cmds!r}" for now, cmds in self.log]
        return "\n".join(lines)

    def check_views(self) -> None:
        want = views(self.model, self.model)
        if self.engine is not None:
            got = views(self.engine, self.model)
            for name in want:
                assert got[name] == want[name], self.repro(
                    f"view {name}: engine {got[name]!r}, model {want[name]!r}")
        check_invariants(want)

MODEL_FIGURES = ("discounts_fen", "coupons_granted", "coupons_used", "deals_sold_out")


def views(f: Any, model: ReferenceFestival) -> dict:
    """Every view of f, the core's and the promotions', for every id the model knows and one past them."""
    out = core_views(f, model)
    for i in range(1, len(model.templates) + 2):
        out[f"coupon_template({i})"] = f.view("coupon_template", i)
    for i in range(1, len(model.coupons) + 2):
        out[f"coupon({i})"] = f.view("coupon", i)
    for i in range(1, len(model.deals) + 2):
        out[f"deal({i})"] = f.view("deal", i)
    for i in range(1, len(model.thresholds) + 2):
        out[f"threshold_discount({i})"] = f.view("threshold_discount", i)
    for b in (*BUYERS, 99):
        out[f"buyer_coupons({b})"] = f.view("buyer_coupons", b)
    figures = f.stats().get("promotions") or {}  # the figures the model keeps (the screen's extras aside)
    out["promotions"] = {key: figures.get(key) for key in MODEL_FIGURES}
    return out


def of_kind(v: dict, prefix: str) -> list[dict]:
    return [x for k, x in v.items() if k.startswith(prefix + "(") and x is not None]


def check_pricing(c: dict, orders: list[dict]) -> None:
    """list - discounts == payable == sum of the orders' payable; each kind sums over orders and lines"""
    assert c["amount_fen"] == sum(o["amount_fen"] for o in orders) == sum(ln["amount_fen"] for ln in c["lines"])
    if "discounts" not in c:
        assert all("discounts" not in x for x in [*c["lines"], *c["orders"], *orders]), c
        assert all(ln["amount_fen"] == ln["qty"] * ln["price_fen"] for ln in c["lines"]), c
        return
    assert c["list_fen"] - sum(c["discounts"].values()) == c["amount_fen"], c
    for kind in DISCOUNT_KINDS:
        assert c["discounts"][kind] == sum(o["discounts"][kind] for o in orders) == sum(
            ln["discounts"][kind] for ln in c["lines"]), (kind, c)
    for o in orders:
        assert o["list_fen"] - sum(o["discounts"].values()) == o["amount_fen"] >= 0, o
        assert o["amount_fen"] == sum(ln["amount_fen"] for ln in o["lines"]), o
    for ln in c["lines"]:
        assert ln["list_fen"] == ln["qty"] * ln["price_fen"], c
        assert ln["list_fen"] - sum(ln["discounts"].values()) == ln["amount_fen"] >= 0, c
        assert min(ln["discounts"].values()) >= 0, c


def check_invariants(v: dict) -> None:
    check_core_invariants(v)
    checkouts = of_kind(v, "checkout")
    orders = {o["order"]: o for o in of_kind(v, "order")}
    for c in checkouts:
        check_pricing(c, [orders[o["order"]] for o in c["orders"]])
    # coupons: budgets, per-buyer limits, states that agree with their checkouts
    coupons = of_kind(v, "coupon")
    by_id = {c["checkout"]: c for c in checkouts}
    for t in of_kind(v, "coupon_template"):
        mine = [c for c in coupons if c["template"] == t["template"]]
        assert t["granted"] == len(mine) <= t["budget_count"], t
        assert t["budget_count_left"] == t["budget_count"] - t["granted"], t
        if t["budget_fen"] is not None:
            assert t["granted"] * t["discount_fen"] <= t["budget_fen"], t
            assert t["budget_fen_left"] == t["budget_fen"] - t["granted"] * t["discount_fen"] >= 0, t
        assert t["used"] == sum(1 for c in mine if c["status"] == "used"), t
        for buyer in {c["buyer"] for c in mine}:
            assert sum(1 for c in mine if c["buyer"] == buyer) <= t["per_buyer_max"], (t, buyer)
    for coupon in coupons:
        if coupon["status"] in ("held", "expired"):
            assert coupon["checkout"] is None, coupon
        else:
            holder = by_id[coupon["checkout"]]
            assert holder["status"] == ("reserved" if coupon["status"] == "reserved" else "paid"), (coupon, holder)
    for b in BUYERS:
        listed = v[f"buyer_coupons({b})"]["coupons"]
        assert listed == sorted((c for c in coupons if c["buyer"] == b), key=lambda c: -c["coupon"])
    # deals: units never below 0 nor more than qty, recounted from the checkouts, per-buyer limits
    for d in of_kind(v, "deal"):
        assert min(d["sold"], d["reserved"], d["left"]) >= 0 and d["sold"] + d["reserved"] + d["left"] == d["qty"], d
        reserved, sold, per_buyer = 0, 0, dict[int, int]()
        for c in checkouts:
            if not (d["from"] <= c["created_at"] < d["until"]) or c["status"] not in ("reserved", "paid"):
                continue
            for ln in c["lines"]:
                # a checkout priced before the deal was made takes no deal discount
                if ln["sku"] != d["sku"] or "discounts" not in ln or ln["discounts"]["deal"] == 0:
                    continue
                if orders[ln["order"]]["status"] == "refunded":
                    continue
                assert ln["discounts"]["deal"] == ln["qty"] * (ln["price_fen"] - d["price_fen"]), (d, c)
                per_buyer[c["buyer"]] = per_buyer.get(c["buyer"], 0) + ln["qty"]
                if c["status"] == "reserved":
                    reserved += ln["qty"]
                else:
                    sold += ln["qty"]
        assert (d["reserved"], d["sold"]) == (reserved, sold), (d, reserved, sold)
        assert all(units <= d["per_buyer_max"] for units in per_buyer.values()), (d, per_buyer)
        assert (d["sold_out_at"] is None) or d["sold_out_at"] >= d["from"], d
    # the figures and the ledger's marketing account
    promotions = v["promotions"]
    assert promotions["coupons_granted"] == len(coupons)
    assert promotions["coupons_used"] == sum(1 for c in coupons if c["status"] == "used")
    assert promotions["deals_sold_out"] == sum(1 for d in of_kind(v, "deal") if d["sold_out_at"] is not None)
    paid = [c for c in checkouts if c["status"] == "paid"]
    for kind in DISCOUNT_KINDS:
        assert promotions["discounts_fen"][kind] == sum(c.get("discounts", {}).get(kind, 0) for c in paid), kind

    def platform(o: dict) -> int:
        return int(o.get("discounts", {}).get("platform_coupon", 0))

    accounts = v["ledger"]["accounts"]
    assert accounts["escrow"] == sum(o["amount_fen"] + platform(o) for o in orders.values() if o["status"] == "paid")
    assert accounts["marketing"] == -sum(platform(o) for o in orders.values() if o["status"] in ("paid", "settled"))


# --- properties ---------------------------------------------------------------------


@settings(SETTINGS, max_examples=150)
@given(stream=stream_r)
def test_model_alone_keeps_every_invariant(stream):
    """the strategies and the model on their own (no engine): the invariants hold after every batch"""
    d = Driver(None, ReferenceFestival(small_catalog(), CONFIG))
    for batch in stream:
        d.send(batch)


@settings(SETTINGS, max_examples=150)
@given(stream=stream_r)
def test_engine_matches_model_with_promotions(stream):
    engine = Festival.open(small_catalog(), config=CONFIG)
    try:
        d = Driver(engine, ReferenceFestival(small_catalog(), CONFIG))
        for batch in stream:
            d.send(batch)
    finally:
        engine.close()


@settings(SETTINGS, max_examples=10)
@given(before=stream_r, after=st.lists(batch_r, min_size=1, max_size=4), snapshot_at=st.integers(-1, 12))
def test_recovery_with_promotions_is_deterministic(before, after, snapshot_at):
    with tempfile.TemporaryDirectory() as data_dir:
        engine = Festival.open(small_catalog(), data_dir=data_dir, config=CONFIG)
        d = Driver(engine, ReferenceFestival(small_catalog(), CONFIG))
        try:
            for i, batch in enumerate(before):
                d.send(batch)
                if i == snapshot_at:
                    engine.snapshot()
            closed = views(engine, d.model)
        finally:
            engine.close()
        engine = Festival.open(small_catalog(), data_dir=data_dir, config=CONFIG)
        try:
            reopened = views(engine, d.model)
            for name in closed:
                assert reopened[name] == closed[name], d.repro(
                    f"recovery, view {name}: before close {closed[name]!r}, after {reopened[name]!r}")
            d.engine = engine  # the idempotency table, the clock and the promotions came back: go on
            for batch in after:
                d.send(batch)
        finally:
            engine.close()
