"""The HTTP client against a tiny in-process fake of POST /v1/batch and GET /v1/stats
(httpx.MockTransport): what it sends follows from what the server accepted."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np

from double11.simulator import mixes
from double11.simulator import plan as plans
from double11.simulator.client import Simulation
from double11.simulator.years import profile

START = 1_510_329_600_000
SPEEDUP = 5_000.0  # the fake's clock: a festival hour in 0.72 s
PREROLL_MS = 60_000


class FakeServer:
    """Just enough of the platform: stock, checkouts, pay/cancel/confirm/refund, keys;
    promotions as far as coupons go (templates with a count budget, grants, a checkout's
    coupons checked in the doc's order and taken off: a store coupon from its merchant's
    order, a red packet from the last order; no deal pricing)."""

    def __init__(self, view: plans.CatalogView):
        self.stock = dict(zip(view.sku_id.tolist(), view.stock.tolist()))
        self.price = dict(zip(view.sku_id.tolist(), view.price_fen.tolist()))
        self.merchant = dict(zip(view.sku_id.tolist(), view.merchant.tolist()))
        self.checkouts: dict[int, dict] = {}
        self.orders: dict[int, str] = {}
        self.keys: dict[str, dict] = {}
        self.ops = Counter()
        self.templates: dict[int, dict] = {}
        self.coupons: dict[int, dict] = {}
        self.first_checkout_seen_promotions = -1  # operator commands made before the first checkout
        # the clock starts a festival minute before midnight, once the promotions are made:
        # at 5,000x that is 12 real ms for the client to get going (a second, 0.2 ms, was
        # too little on a busy machine, and the first checkout came due before it started)
        self.t0: float | None = None

    def elapsed_real_s(self) -> float:
        """Real seconds the clock has run: it stands until the operators have made the
        day's promotions (the replay's first commands), as a real server's preroll is
        long enough for them."""
        now = asyncio.get_running_loop().time()
        if self.t0 is None and self.ops["coupon_template"]:
            self.t0 = now
        return 0.0 if self.t0 is None else now - self.t0

    def at(self) -> int:
        return START - PREROLL_MS + int(self.elapsed_real_s() * 1000 * SPEEDUP)

    def apply(self, c: dict) -> dict:
        if c["idempotency_key"] in self.keys:
            return self.keys[c["idempotency_key"]]
        self.ops[c["op"]] += 1
        res = getattr(self, c["op"])(c)
        self.keys[c["idempotency_key"]] = res
        return res

    def threshold_discount(self, c):
        return {"status": 201, "body": {"threshold": 1}}

    def deal(self, c):
        assert c["price_fen"] < self.price[c["sku"]] and c["from"] < c["until"]
        return {"status": 201, "body": {"deal": self.ops["deal"]}}

    def coupon_template(self, c):
        tid = len(self.templates) + 1
        self.templates[tid] = dict(c, granted=0)
        return {"status": 201, "body": {"template": tid}}

    def grant(self, c):
        t = self.templates[c["template"]]
        if t["granted"] >= t["budget_count"]:
            return {"status": 409, "body": {"error": {"code": "budget_exhausted"}}}
        t["granted"] += 1
        cid = len(self.coupons) + 1
        self.coupons[cid] = {"buyer": c["buyer"], "template": t, "status": "held", "source": c["source"]}
        return {"status": 201, "body": {"coupon": cid, "buyer": c["buyer"], "kind": t["kind"],
                                        "merchant": t.get("merchant"), "discount_fen": t["discount_fen"],
                                        "min_spend_fen": t["min_spend_fen"], "status": "held"}}

    def _refuse_coupons(self, c, by_merchant) -> str | None:
        stores = set()
        for k in c.get("coupons", []):
            coupon = self.coupons.get(k)
            if coupon is None:
                return "unknown_coupon"
            if coupon["buyer"] != c["buyer"]:
                return "not_your_coupon"
            if coupon["status"] != "held":
                return "coupon_not_held"
            t = coupon["template"]
            if t["kind"] == "store":
                if t["merchant"] not in by_merchant:
                    return "coupon_merchant_not_in_checkout"
                if t["merchant"] in stores:
                    return "two_store_coupons"
                stores.add(t["merchant"])
                if by_merchant[t["merchant"]] < t["min_spend_fen"]:
                    return "min_spend_not_met"
        return None

    def checkout(self, c):
        if self.first_checkout_seen_promotions < 0:
            self.first_checkout_seen_promotions = self.ops["coupon_template"] + self.ops["deal"]
        lines = c["lines"]
        if any(self.stock[line["sku"]] < line["qty"] for line in lines):
            return {"status": 409, "body": {"error": {"code": "out_of_stock"}}}
        by_merchant = Counter()
        for line in lines:
            by_merchant[self.merchant[line["sku"]]] += self.price[line["sku"]] * line["qty"]
        refused = self._refuse_coupons(c, by_merchant)
        if refused:
            return {"status": 409, "body": {"error": {"code": refused}}}
        for line in lines:
            self.stock[line["sku"]] -= line["qty"]
        payable = dict(by_merchant)
        discounts = {"deal": 0, "store_coupon": 0, "threshold": 0, "platform_coupon": 0}
        last = max(payable)
        for k in c.get("coupons", []):
            self.coupons[k]["status"] = "reserved"
            t = self.coupons[k]["template"]
            m = t["merchant"] if t["kind"] == "store" else last
            off = min(t["discount_fen"], payable[m] - 1)
            payable[m] -= off
            discounts["store_coupon" if t["kind"] == "store" else "platform_coupon"] += off
        orders = []
        for m in sorted(payable):
            oid = len(self.orders) + 1
            self.orders[oid] = "reserved"
            orders.append({"order": oid, "merchant": m, "amount_fen": payable[m]})
        cid = len(self.checkouts) + 1
        self.checkouts[cid] = {"status": "reserved", "amount": sum(payable.values()), "orders": orders,
                               "coupons": list(c.get("coupons", [])), "discounts": discounts}
        body = {"checkout": cid, "amount_fen": sum(payable.values()), "orders": orders, "status": "reserved"}
        if c.get("coupons"):
            body["discounts"] = discounts
        return {"status": 201, "body": body}

    def pay(self, c):
        ck = self.checkouts[c["checkout"]]
        assert ck["status"] == "reserved" and c["amount_fen"] == ck["amount"]
        ck["status"] = "paid"
        for o in ck["orders"]:
            self.orders[o["order"]] = "paid"
        for k in ck["coupons"]:
            self.coupons[k]["status"] = "used"
        return {"status": 200, "body": {"checkout": c["checkout"], "status": "paid", "amount_fen": ck["amount"]}}

    def cancel(self, c):
        ck = self.checkouts[c["checkout"]]
        ck["status"] = "cancelled"
        for k in ck["coupons"]:
            self.coupons[k]["status"] = "held"
        return {"status": 200, "body": {"checkout": c["checkout"], "status": "cancelled"}}

    def confirm(self, c):
        assert self.orders[c["order"]] == "paid"
        self.orders[c["order"]] = "settled"
        return {"status": 200, "body": {"order": c["order"], "status": "settled"}}

    def refund(self, c):
        assert self.orders[c["order"]] == "paid"
        self.orders[c["order"]] = "refunded"
        return {"status": 200, "body": {"order": c["order"], "status": "refunded", "amount_fen": 1}}

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/stats":
            return httpx.Response(200, json={"at": self.at(), "festival_start": START})
        commands = json.loads(request.content)["commands"]
        return httpx.Response(200, json={"results": [self.apply(c) for c in commands]})


def test_the_client_follows_up_only_what_the_server_accepted():
    rng = np.random.default_rng(0)
    n = 400
    view = plans.CatalogView(sku_id=np.arange(1, n + 1), price_fen=rng.integers(1000, 30000, n),
                             merchant=rng.integers(1, 40, n), stock=np.where(np.arange(n) < 5, 3, 10_000))
    plan = plans.build(profile(2017), 2e-6, 1, view)

    async def run():
        fake = FakeServer(view)
        async with httpx.AsyncClient(base_url="http://fake", transport=httpx.MockTransport(fake.handle)) as http:
            tally = await Simulation(plan, view, http, SPEEDUP, hours=2).run(asyncio.Event())
        return fake, tally

    # a thread of its own: the browser tests' Playwright keeps an event loop on this one
    with ThreadPoolExecutor(1) as pool:
        fake, tally = pool.submit(asyncio.run, run()).result()
    in_two_hours = int((plan.at_ms < 2 * 3_600_000).sum())
    assert tally.skipped == 0
    assert tally.sent["checkout"] == in_two_hours + tally.substitutions
    assert tally.substitutions > 0  # the five hot SKUs sold out, and buyers took other items
    assert tally.sold_out_avoided > 0  # later buyers saw them sold out and chose others at once
    assert tally.checkouts == len(fake.checkouts)
    paid = [c for c in fake.checkouts.values() if c["status"] == "paid"]
    assert tally.payments == len(paid) and tally.gmv_fen == sum(c["amount"] for c in paid)
    assert 0.7 < tally.payments / tally.checkouts < 0.85  # 2017's conversion
    assert fake.ops["cancel"] > 0 and fake.ops["confirm"] > 0
    assert tally.settled_orders == fake.ops["confirm"]
    assert sum(v for k, v in tally.answers.items() if " ok" not in k and "out_of_stock" not in k) == 0
    assert tally.merchant_clubs(1.0) == [0, 0, 0]
    assert sum(tally.merchant_gmv_fen.values()) == tally.gmv_fen
    # 2017's promotions: made before the first checkout, the coupons granted as planned ...
    promos = plan.promotions
    assert fake.ops["threshold_discount"] == 1
    assert fake.first_checkout_seen_promotions == len(promos.templates) + len(promos.deals)
    granted = int((promos.grant_at_ms < 2 * 3_600_000).sum())
    assert tally.sent["grant"] == tally.coupons_granted == len(fake.coupons) == granted > 0
    assert {c["source"] for c in fake.coupons.values()} == {"store-page", "game:ar-catch-the-cat", "game:trivia"}
    # ... and spent only by their own buyers while held (the fake refuses anything else, and
    # no refusal but out_of_stock came back), used when paid, with the discounts they gave
    assert tally.coupon_checkouts > 0 and tally.coupons_dropped == 0
    assert tally.coupons_used == sum(c["status"] == "used" for c in fake.coupons.values()) > 0
    assert tally.discounts_fen == {kind: sum(c["discounts"][kind] for c in paid) for kind in tally.discounts_fen}
    assert tally.discounts_fen["platform_coupon"] > 0 and tally.discounts_fen["store_coupon"] > 0


class CouponsSpentElsewhere(FakeServer):
    """Every third coupon is used on another device as soon as it is granted: the
    simulator's wallet is wrong about it."""

    def grant(self, c):
        res = super().grant(c)
        if res["status"] == 201 and res["body"]["coupon"] % 3 == 0:
            self.coupons[res["body"]["coupon"]]["status"] = "used"
        return res


def test_a_checkout_refused_for_its_coupons_is_sent_again_without_them():
    view = _small_view()
    plan = plans.build(profile(2017), 2e-6, 1, view)
    fake = CouponsSpentElsewhere(view)

    async def run():
        async with httpx.AsyncClient(base_url="http://fake", transport=httpx.MockTransport(fake.handle)) as http:
            return await Simulation(plan, view, http, SPEEDUP, hours=1).run(asyncio.Event())

    tally = _run_in_thread(run())
    refused = tally.answers["checkout 409 coupon_not_held"]
    assert refused > 0 and tally.coupons_dropped >= refused
    # each refused checkout went again without coupons (unless that fell after the hour) and was
    # accepted: every checkout sent but the refused ones is there
    resent = [k for k in fake.keys if k.endswith("n")]
    assert 0 < len(resent) <= refused and all(fake.keys[k]["status"] == 201 for k in resent)
    assert all(fake.keys[k[:-1]]["body"]["error"]["code"] == "coupon_not_held" for k in resent)
    assert tally.checkouts == tally.sent["checkout"] - refused
    assert tally.sent["checkout"] == int((plan.at_ms < 3_600_000).sum()) + len(resent)


def _small_view(n: int = 400) -> plans.CatalogView:
    rng = np.random.default_rng(0)
    return plans.CatalogView(sku_id=np.arange(1, n + 1), price_fen=rng.integers(1000, 30000, n),
                             merchant=rng.integers(1, 40, n), stock=np.full(n, 10_000))


def _run_in_thread(coro):
    # a thread of its own: the browser tests' Playwright keeps an event loop on this one
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


class SlowFake(FakeServer):
    """The fake at `speedup` (60x: a festival minute a real second), noting every clock read."""

    def __init__(self, view: plans.CatalogView, fail_stats_after_reads: int | None = None, speedup: float = 60.0):
        super().__init__(view)
        self.reads: list[int] = []
        self.fail_stats_after_reads = fail_stats_after_reads
        self.speedup = speedup

    def at(self) -> int:
        return START - 2_000 + int(self.elapsed_real_s() * 1000 * self.speedup)

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/stats":
            if self.fail_stats_after_reads is not None and len(self.reads) >= self.fail_stats_after_reads:
                raise httpx.ConnectError("connection refused", request=request)
            self.reads.append(self.at())
        return super().handle(request)


def test_a_partial_day_ends_with_its_hours_not_with_the_last_payment_due_after_them():
    view = _small_view()
    plan = plans.build(profile(2017), 2e-6, 1, view)
    hours = 0.01  # 36 festival seconds: its buyers' payments fall due up to ~35 s after them
    end_ms = START + int(hours * 3_600_000)
    # at 10x, waiting for those payments would read the clock 3.5 real seconds past the
    # end, while a loaded machine's lag (up to a real second seen) stays inside the margin
    speedup = 10.0
    fake = SlowFake(view, speedup=speedup)
    later_due_ms = plan.next_at_ms[(plan.at_ms < hours * 3_600_000) & (plan.fate == mixes.PAY)].max()
    assert START + later_due_ms > end_ms + 20_000  # the plan still has payments the bug would wait for

    async def run():
        async with httpx.AsyncClient(base_url="http://fake", transport=httpx.MockTransport(fake.handle)) as http:
            return await Simulation(plan, view, http, speedup, hours=hours).run(asyncio.Event())

    tally = _run_in_thread(run())
    assert tally.checkouts > 0 and tally.sent["checkout"] == int((plan.at_ms < hours * 3_600_000).sum())
    assert tally.sent["pay"] == tally.payments  # a payment due after the hours is never counted as sent
    # it stopped once the hours were sent, not once the dropped payments came due
    assert [at for at in fake.reads if at > end_ms + 20_000] == []


def test_a_server_that_stops_answering_ends_the_replay_with_one_line(monkeypatch):
    from double11.lifecycle import CommandFailed
    from double11.simulator import client

    monkeypatch.setattr(client, "SERVER_LOST_S", 0.3)
    view = _small_view()
    plan = plans.build(profile(2017), 2e-6, 1, view)
    fake = SlowFake(view, fail_stats_after_reads=2)

    async def run():
        async with httpx.AsyncClient(base_url="http://fake", transport=httpx.MockTransport(fake.handle)) as http:
            return await Simulation(plan, view, http, 60.0, hours=1).run(asyncio.Event())

    try:
        _run_in_thread(run())
    except CommandFailed as e:
        assert "lost http://fake" in str(e) and "\n" not in str(e) and e.status == 1
    else:
        raise AssertionError("the replay went on without its server")


def test_a_replay_stopped_early_covers_the_minutes_it_got_through():
    from double11.simulator.schedule import hours_text, stopped_hours

    assert stopped_hours(22 * 60_000 + 4_000, 24.0) == 22 / 60
    assert stopped_hours(-5_000, 24.0) == 1 / 60  # stopped before midnight: a minute, not nothing
    assert stopped_hours(3 * 3_600_000, 2.0) == 2.0  # never more than was asked for
    assert hours_text(22 / 60) == "the first 22 min"
    assert hours_text(stopped_hours(142 * 60_000, 24.0)) == "the first 2 h 22 min"

    view = _small_view()
    plan = plans.build(profile(2017), 2e-6, 1, view)
    fake = SlowFake(view)

    async def run():
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(1.5, stop.set)  # about a festival minute and a half in
        async with httpx.AsyncClient(base_url="http://fake", transport=httpx.MockTransport(fake.handle)) as http:
            return await Simulation(plan, view, http, 60.0, hours=24).run(stop)

    tally = _run_in_thread(run())
    assert tally.hours == stopped_hours(fake.reads[-1] - START, 24.0) < 0.5
    assert tally.summary(2e-6)["hours"] == tally.hours


def test_a_payment_scheduled_by_an_answer_is_sent_when_due_not_at_the_next_resync():
    """With no checkout left to wake for, the pacing loop slept up to a
    second (RESYNC_S) while an answer scheduled a payment due sooner: at
    600x, 600 s of festival time late (festival --cluster's lag warning).
    Here the replay's 3.6 s hold one checkout (at 1.2 s) and its payment
    (due at 2.5 s), at 60x: slept through, the payment went at about 60 s."""
    view = _small_view()
    plan = plans.build(profile(2017), 2e-6, 1, view)
    hours = 0.001
    fake = SlowFake(view, speedup=60.0)

    async def run():
        async with httpx.AsyncClient(base_url="http://fake", transport=httpx.MockTransport(fake.handle)) as http:
            return await Simulation(plan, view, http, 60.0, hours=hours).run(asyncio.Event())

    tally = _run_in_thread(run())
    assert tally.sent["checkout"] == 1 and tally.sent["pay"] == tally.payments == 1
    assert tally.max_lag_ms < 20_000, tally.max_lag_ms  # a third of a real second at 60x
