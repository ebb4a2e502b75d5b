"""The HTTP client against a tiny in-process fake of POST /v1/batch and GET /v1/stats
(httpx.MockTransport): what it sends follows from what the server accepted."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np

from double11.simulator import plan as plans
from double11.simulator.client import Simulation
from double11.simulator.years import profile

START = 1_510_329_600_000
SPEEDUP = 5_000.0  # the fake's clock: a festival hour in 0.72 s
PREROLL_MS = 60_000


class FakeServer:
    """Just enough of the platform: stock, checkouts, pay/cancel/confirm/refund, keys."""

    def __init__(self, view: plans.CatalogView):
        self.stock = dict(zip(view.sku_id.tolist(), view.stock.tolist()))
        self.price = dict(zip(view.sku_id.tolist(), view.price_fen.tolist()))
        self.merchant = dict(zip(view.sku_id.tolist(), view.merchant.tolist()))
        self.checkouts: dict[int, dict] = {}
        self.orders: dict[int, str] = {}
        self.keys: dict[str, dict] = {}
        self.ops = Counter()
        # the clock starts a festival minute before midnight, on first look: at 5,000x
        # that is 12 real ms for the client to get going (a second, 0.2 ms, was too
        # little on a busy machine, and the first checkout came due before it started)
        self.t0: float | None = None

    def at(self) -> int:
        now = asyncio.get_running_loop().time()
        self.t0 = now if self.t0 is None else self.t0
        return START - PREROLL_MS + int((now - self.t0) * 1000 * SPEEDUP)

    def apply(self, c: dict) -> dict:
        if c["idempotency_key"] in self.keys:
            return self.keys[c["idempotency_key"]]
        self.ops[c["op"]] += 1
        res = getattr(self, c["op"])(c)
        self.keys[c["idempotency_key"]] = res
        return res

    def checkout(self, c):
        lines = c["lines"]
        if any(self.stock[line["sku"]] < line["qty"] for line in lines):
            return {"status": 409, "body": {"error": {"code": "out_of_stock"}}}
        for line in lines:
            self.stock[line["sku"]] -= line["qty"]
        by_merchant = Counter()
        for line in lines:
            by_merchant[self.merchant[line["sku"]]] += self.price[line["sku"]] * line["qty"]
        orders = []
        for m in sorted(by_merchant):
            oid = len(self.orders) + 1
            self.orders[oid] = "reserved"
            orders.append({"order": oid, "merchant": m, "amount_fen": by_merchant[m]})
        cid = len(self.checkouts) + 1
        self.checkouts[cid] = {"status": "reserved", "amount": sum(by_merchant.values()), "orders": orders}
        return {"status": 201, "body": {"checkout": cid, "amount_fen": sum(by_merchant.values()),
                                        "orders": orders, "status": "reserved"}}

    def pay(self, c):
        ck = self.checkouts[c["checkout"]]
        assert ck["status"] == "reserved" and c["amount_fen"] == ck["amount"]
        ck["status"] = "paid"
        for o in ck["orders"]:
            self.orders[o["order"]] = "paid"
        return {"status": 200, "body": {"checkout": c["checkout"], "status": "paid", "amount_fen": ck["amount"]}}

    def cancel(self, c):
        self.checkouts[c["checkout"]]["status"] = "cancelled"
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


def _small_view(n: int = 400) -> plans.CatalogView:
    rng = np.random.default_rng(0)
    return plans.CatalogView(sku_id=np.arange(1, n + 1), price_fen=rng.integers(1000, 30000, n),
                             merchant=rng.integers(1, 40, n), stock=np.full(n, 10_000))


def _run_in_thread(coro):
    # a thread of its own: the browser tests' Playwright keeps an event loop on this one
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


class SlowFake(FakeServer):
    """The fake at 60x (a festival minute a real second), noting every clock read."""

    def __init__(self, view: plans.CatalogView, fail_stats_after_reads: int | None = None):
        super().__init__(view)
        self.reads: list[int] = []
        self.fail_stats_after_reads = fail_stats_after_reads

    def at(self) -> int:
        now = asyncio.get_running_loop().time()
        self.t0 = now if self.t0 is None else self.t0
        return START - 2_000 + int((now - self.t0) * 1000 * 60)

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/stats":
            if self.fail_stats_after_reads is not None and len(self.reads) >= self.fail_stats_after_reads:
                raise httpx.ConnectError("connection refused", request=request)
            self.reads.append(self.at())
        return super().handle(request)


def test_a_partial_day_ends_with_its_hours_not_with_the_last_payment_due_after_them():
    view = _small_view()
    plan = plans.build(profile(2017), 2e-6, 1, view)
    hours = 0.01  # 36 festival seconds: its buyers' payments fall due minutes later
    end_ms = START + int(hours * 3_600_000)
    fake = SlowFake(view)

    async def run():
        async with httpx.AsyncClient(base_url="http://fake", transport=httpx.MockTransport(fake.handle)) as http:
            return await Simulation(plan, view, http, 60.0, hours=hours).run(asyncio.Event())

    tally = _run_in_thread(run())
    assert tally.checkouts > 0 and tally.sent["checkout"] == int((plan.at_ms < hours * 3_600_000).sum())
    assert tally.sent["pay"] == tally.payments  # a payment due after the hours is never counted as sent
    # it stopped once the hours were sent: not a clock read a minute of festival time
    # past their end, where waiting for the dropped payments kept it reading for minutes
    assert [at for at in fake.reads if at > end_ms + 60_000] == []


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
