"""Replays a Plan against a running server over POST /v1/batch (JSON).

Paced to the server's festival clock (`at` from GET /v1/stats): each command goes
out when the festival clock reaches its moment, so the server stamps it in the
right second and its per-second peaks mean something.  Checkouts come from the
plan; pay / cancel / confirm / refund follow only for what the server accepted.
Every command has a deterministic idempotency key, so anything sent again (after
an overload or a broken connection) is applied once.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
import numpy as np

from double11 import limits
from double11.gc_tuning import freeze_what_exists
from double11.lifecycle import CommandFailed
from double11.simulator import mixes
from double11.simulator.plan import CatalogView, Plan
from double11.simulator.promotions import Coupon, Deal, choose_coupons
from double11.simulator.schedule import HOUR_MS, stopped_hours, window_ms
from double11.simulator.tally import Tally

BATCH_COMMANDS_MAX = 4096  # well under limits.batch_commands_max: keeps each request short
IN_FLIGHT_MAX = 8
RESYNC_S = 1.0  # how often the festival clock is read back from the server
SUBSTITUTIONS_MAX = 2  # a buyer who finds an item sold out tries this many other ones
RETRIES_MAX = 20
RETRY_BACKOFF_S = 0.05
# a checkout refused for one of these is sent again at once without its coupons
COUPON_REFUSALS = frozenset(("unknown_coupon", "not_your_coupon", "coupon_not_held", "not_in_window", "coupon_expired",
                             "coupon_merchant_not_in_checkout", "two_store_coupons", "min_spend_not_met"))
# refusals that send the buyer to another item: sold out, or a deal's units or per-buyer limit gone
SOLD_OUT_REFUSALS = frozenset(("out_of_stock", "deal_sold_out", "deal_buyer_limit"))
# a server that has not answered a clock read for this long is gone: say so and stop,
# rather than wait out the day for commands that can no longer be sent
SERVER_LOST_S = 10.0
SPARE_ROWS = 65_536
SPARE_LOOKS = 8  # candidates compared by price for one substitute
assert limits.batch_commands_max >= BATCH_COMMANDS_MAX

_ENC = msgspec.json.Encoder()
_DEC = msgspec.json.Decoder()


class ServerClock:
    """The server's festival clock as seen from here: read `at` now and then and run
    it forward at the speed-up in between."""

    def __init__(self, at_ms: int, real_s: float, speedup: float):
        self.speedup = speedup
        self.set(at_ms, real_s)

    def set(self, at_ms: int, real_s: float) -> None:
        self.at_ms, self.real_s = at_ms, real_s

    def now_ms(self) -> int:
        return self.at_ms + int((time.monotonic() - self.real_s) * 1000 * self.speedup)

    def real_seconds_until(self, at_ms: int) -> float:
        return max(0.0, (at_ms - self.now_ms()) / 1000 / self.speedup)


async def read_stats(http: httpx.AsyncClient) -> tuple[dict, float]:
    """(stats, the monotonic instant they describe: the middle of the request)."""
    t0 = time.monotonic()
    r = await http.get("/v1/stats")
    r.raise_for_status()
    return r.json(), (t0 + time.monotonic()) / 2


async def measure_speedup(http: httpx.AsyncClient, wait_s: float = 0.5) -> float:
    a, ta = await read_stats(http)
    await asyncio.sleep(wait_s)
    b, tb = await read_stats(http)
    raw = (b["at"] - a["at"]) / 1000 / (tb - ta)
    return float(f"{raw:.2g}") if raw > 0 else 1.0  # the server's speed-up is a round number


@dataclass
class Pending:
    """A command waiting for its moment, with what we need to handle its answer."""

    due_ms: int
    kind: str  # checkout, pay, cancel, confirm, refund, grant
    index: int  # checkout index in the plan (a grant's index in the plan's grants)
    command: dict
    extra: Any = None  # (substitution round, SKU rows or None) of a checkout; the order of a confirm/refund
    tries: int = 0
    coupons: list[Coupon] | None = None  # those a checkout spends, out of its buyer's wallet meanwhile


class Simulation:
    def __init__(self, plan: Plan, view: CatalogView, http: httpx.AsyncClient, speedup: float,
                 on_progress: Callable[[dict, Tally], None] | None = None, hours: float = 24.0,
                 operator_headers: dict[str, str] | None = None):
        """`http` carries the buyers' commands (with a gateway's token, where
        the server takes tokens); `operator_headers`, the operators' (the
        promotions made before midnight)."""
        self.plan, self.view, self.http = plan, view, http
        self.operator_headers = operator_headers or {}
        self.length_ms = window_ms(hours)  # replay only the day's first hours
        self.speedup = speedup
        self.on_progress = on_progress
        self.tally = Tally(hours=min(hours, 24.0), speedup=speedup)
        self.run_id = f"sim{plan.profile.year}-{plan.seed}-{plan.scale:g}"
        self.heap: list[tuple[int, int, Pending]] = []
        # the pacing loop's wake-up: set when a command comes due sooner than the loop
        # planned to wake (a checkout's answer schedules its payment, perhaps due at once)
        self._sooner = asyncio.Event()
        self._wake_at_ms = 0
        self.seq = itertools.count()
        self.accepted: dict[int, dict] = {}  # plan index -> checkout answer body
        self.spending: dict[int, list[Coupon]] = {}  # plan index -> the coupons its accepted checkout holds
        self.sold_out: set[int] = set()  # SKU rows seen sold out
        spare_rng = np.random.default_rng([plan.seed, 11])
        self.spare_rows = mixes.draw_rows(plan.weights, SPARE_ROWS, spare_rng)
        self.in_flight: set[asyncio.Task] = set()
        self.slots = asyncio.Semaphore(IN_FLIGHT_MAX)
        self.stats: dict = {}
        # promotions: each buyer's held coupons (from the grants' answers), the deals by SKU row,
        # the templates' ids on the server, and the SKU rows whose deal sold out (until when)
        self.wallets: dict[int, list[Coupon]] = {}
        self.deals: dict[int, list[Deal]] = plan.promotions.deal_rows() if plan.promotions else {}
        self.deal_row_of = {int(view.sku_id[r]): r for r in self.deals}
        self.template_ids: list[int | None] = []
        self.deal_gone_until: dict[int, int] = {}
        self.unreachable_since = 0.0  # monotonic time of the first clock read that failed in a row
        self.failure: BaseException | None = None

    # -------------------------------------------------------------- commands

    def _deal_open(self, row: int, due_ms: int) -> Deal | None:
        at = due_ms - self.start_ms
        return next((d for d in self.deals.get(row, ()) if d.from_ms <= at < d.until_ms), None)

    def _lines(self, i: int, due_ms: int, rows: np.ndarray | None = None) -> list[dict]:
        a, b = self.plan.line_offsets[i], self.plan.line_offsets[i + 1]
        rows = self.plan.line_rows[a:b] if rows is None else rows
        sku = self.view.sku_id
        qty = self.plan.line_qty[a:b]
        lines = [{"sku": int(sku[r]), "qty": int(qty[j]) if j < len(qty) else 1} for j, r in enumerate(rows)]
        if self.deals:  # a deal's page says how many a buyer may take: nobody asks for more
            for line, r in zip(lines, rows):
                deal = self._deal_open(int(r), due_ms)
                if deal is not None:
                    line["qty"] = min(line["qty"], deal.per_buyer_max)
        return lines

    def _checkout(self, i: int, due_ms: int, round_: int = 0, rows: np.ndarray | None = None,
                  with_coupons: bool = True) -> Pending:
        p = self.plan
        lines = self._lines(i, due_ms, rows)
        cmd = {
            "op": "checkout", "idempotency_key": f"{self.run_id}-c{i}.{round_}" + ("" if with_coupons else "n"),
            "buyer": int(p.buyer[i]), "country": p.countries[p.country[i]],
            "channel": "mobile" if p.mobile[i] else "pc", "lines": lines,
        }
        pending = Pending(due_ms, "checkout", i, cmd, (round_, rows))
        if with_coupons and p.promotions is not None and p.promotions.spends_coupons[i]:
            pending.coupons = self._take_coupons(int(p.buyer[i]), lines, rows if rows is not None
                                                 else p.line_rows[p.line_offsets[i]:p.line_offsets[i + 1]])
            if pending.coupons:
                cmd["coupons"] = [c.coupon for c in pending.coupons]
        return pending

    def _take_coupons(self, buyer: int, lines: list[dict], rows: np.ndarray) -> list[Coupon]:
        """The buyer's coupons this checkout spends, out of the wallet until its fate is
        known.  A store coupon's minimum spend is checked against the merchant's lines
        at the lowest price any deal gives them: what they cost after deals, or less."""
        wallet = self.wallets.get(buyer)
        if not wallet:
            return []
        amounts: dict[int, int] = {}
        for line, r in zip(lines, rows):
            price = min([int(self.view.price_fen[r])] + [d.price_fen for d in self.deals.get(int(r), ())])
            m = int(self.view.merchant[r])
            amounts[m] = amounts.get(m, 0) + price * line["qty"]
        chosen = choose_coupons(wallet, amounts)
        if chosen:
            self.wallets[buyer] = [c for c in wallet if c not in chosen]
        return chosen

    def _give_back(self, p: Pending) -> None:
        """The coupons of a checkout refused, cancelled or not paid are held again."""
        if p.coupons:
            self.wallets.setdefault(int(self.plan.buyer[p.index]), []).extend(p.coupons)
            p.coupons = None

    def _substitute(self, i: int, pending: Pending, code: str = "out_of_stock") -> Pending | None:
        """The same buyer tries again with another item in place of the sold-out one."""
        round_, rows = pending.extra
        a, b = self.plan.line_offsets[i], self.plan.line_offsets[i + 1]
        rows = np.array(self.plan.line_rows[a:b] if rows is None else rows)
        if len(rows) == 1 and code == "out_of_stock":  # one line: that item is what ran out
            self.sold_out.add(int(rows[0]))
        if round_ >= SUBSTITUTIONS_MAX:
            return None
        # With several lines the answer does not say which one ran out: replace those
        # known to be sold out, else the most popular one (rows are popularity ranks,
        # and the hottest items are the flash deals that run out); a deal's refusal
        # is about the items on a deal.
        known = [j for j, r in enumerate(rows) if int(r) in self.sold_out or self._deal_gone(int(r), pending.due_ms)
                 or (code != "out_of_stock" and self._deal_open(int(r), pending.due_ms) is not None)]
        for j in known or [int(np.argmin(rows))]:
            rows[j] = self._spare(i * 31 + round_ * 7 + j, int(rows[j]))
        rows = self._dedupe(rows)
        return self._checkout(i, pending.due_ms, round_ + 1, rows)

    def _in_stock_rows(self, i: int) -> np.ndarray | None:
        """The plan's items, with those already seen sold out swapped for others: the
        buyer sees "sold out" on the item's page and never checks it out."""
        if not self.sold_out and not self.deal_gone_until:
            return None
        rows = self.plan.line_rows[self.plan.line_offsets[i]:self.plan.line_offsets[i + 1]]
        due = self.start_ms + int(self.plan.at_ms[i])
        gone = [j for j, r in enumerate(rows) if int(r) in self.sold_out or self._deal_gone(int(r), due)]
        if not gone:
            return None
        rows = rows.copy()
        for j in gone:
            rows[j] = self._spare(i * 31 + j, int(rows[j]))
        self.tally.sold_out_avoided += 1
        return self._dedupe(rows)

    def _deal_gone(self, row: int, due_ms: int) -> bool:
        """Whether the item's deal was seen sold out, its window still open: while a
        deal is open the item sells only at its price, so it is not to be had."""
        return due_ms < self.deal_gone_until.get(row, 0)

    def _spare(self, k: int, instead_of: int) -> int:
        """Another popular item still on sale, as close in price as a few looks find:
        a buyer who misses a deal takes a similar one, so the day's GMV holds."""
        price = self.view.price_fen
        best, best_gap = None, None
        for step in range(64):
            r = int(self.spare_rows[(k * 2654435761 + step) % SPARE_ROWS])
            if r in self.sold_out or r in self.deal_gone_until:
                continue
            gap = abs(int(price[r]) - int(price[instead_of]))
            if best is None or best_gap is None or gap < best_gap:
                best, best_gap = r, gap
            if step >= SPARE_LOOKS:
                break
        return best if best is not None else int(self.spare_rows[k % SPARE_ROWS])

    @staticmethod
    def _dedupe(rows: np.ndarray) -> np.ndarray:
        # a checkout lists each SKU once; a substitute equal to another line is dropped
        return np.array(list(dict.fromkeys(int(r) for r in rows)))

    def _push(self, p: Pending) -> None:
        heapq.heappush(self.heap, (p.due_ms, next(self.seq), p))
        if p.due_ms < self._wake_at_ms:
            self._sooner.set()

    def _push_new(self, p: Pending) -> None:
        if p.due_ms >= self.end_ms:  # due after the replayed hours: never sent
            return
        self.tally.sent[p.kind] += 1
        self._push(p)

    # -------------------------------------------------------------- answers

    def _on_answer(self, p: Pending, res: dict, now_ms: int) -> None:
        status, body = res["status"], res["body"]
        t = self.tally
        t.answer(p.kind, status, body)
        code = body.get("error", {}).get("code") if status >= 400 else None
        if code == "overloaded" and p.tries < RETRIES_MAX:
            t.retries += 1
            p.tries += 1
            p.due_ms = now_ms + int(RETRY_BACKOFF_S * p.tries * 1000 * self.speedup)
            self._push(p)
            return
        i, plan = p.index, self.plan
        if p.kind == "grant":
            if status == 201:
                t.coupons_granted += 1
                self.wallets.setdefault(int(body["buyer"]), []).append(
                    Coupon(int(body["coupon"]), body["kind"], body["merchant"], int(body["discount_fen"]),
                           int(body["min_spend_fen"])))
        elif p.kind == "checkout":
            if status == 201:
                t.checkouts += 1
                t.coupon_checkouts += 1 if p.coupons else 0
                if plan.fate[i] == mixes.PAY:
                    self.accepted[i] = body
                    if p.coupons:
                        self.spending[i] = p.coupons
                    cmd = {"op": "pay", "idempotency_key": f"{self.run_id}-p{i}",
                           "checkout": body["checkout"], "amount_fen": body["amount_fen"]}
                    self._push_new(Pending(self.start_ms + int(plan.next_at_ms[i]), "pay", i, cmd))
                elif plan.fate[i] == mixes.CANCEL:
                    cmd = {"op": "cancel", "idempotency_key": f"{self.run_id}-x{i}",
                           "checkout": body["checkout"]}
                    self._push_new(Pending(self.start_ms + int(plan.next_at_ms[i]), "cancel", i, cmd,
                                           coupons=p.coupons))
                # an abandoned checkout's coupons come back only when it expires: the buyer has gone
            elif code in COUPON_REFUSALS and p.coupons:
                # the wallet was wrong about them (none should be): the buyer pays without them
                t.coupons_dropped += len(p.coupons)
                round_, rows = p.extra
                again = self._checkout(i, p.due_ms, round_, rows, with_coupons=False)
                again.due_ms = now_ms
                self._push_new(again)
            elif code in SOLD_OUT_REFUSALS:
                self._give_back(p)
                if code == "deal_sold_out":  # its item is not to be had until its window closes
                    for line in p.command["lines"]:
                        row = self.deal_row_of.get(line["sku"], -1)
                        deal = self._deal_open(row, p.due_ms)
                        if deal is not None:
                            self.deal_gone_until[row] = self.start_ms + deal.until_ms
                retry = self._substitute(i, p, code)
                if retry is None:
                    t.lost_checkouts += 1
                else:
                    t.substitutions += 1
                    retry.due_ms = now_ms
                    self._push_new(retry)
            else:
                self._give_back(p)
        elif p.kind == "cancel":
            self._give_back(p)
        elif p.kind == "pay":
            checkout = self.accepted.pop(i)
            spent = self.spending.pop(i, None)
            if status != 200:  # not paid: the checkout expires, and its coupons are held again
                if spent:
                    self.wallets.setdefault(int(plan.buyer[i]), []).extend(spent)
                return
            hour = (now_ms - self.start_ms) // HOUR_MS
            t.paid(int(body["amount_fen"]), bool(plan.mobile[i]), plan.countries[plan.country[i]],
                   int(plan.buyer[i]), hour, checkout["orders"])
            t.discounted(checkout.get("discounts"), len(spent or ()))
            for j, order in enumerate(checkout["orders"]):
                what, delay_ms = mixes.order_fate(plan.seed, i, j)
                due = now_ms + delay_ms
                if what and due < self.end_ms:
                    tag = "f" if what == "confirm" else "r"
                    cmd = {"op": what, "idempotency_key": f"{self.run_id}-{tag}{i}.{j}", "order": order["order"]}
                    self._push_new(Pending(due, what, i, cmd, order))
        elif p.kind == "confirm" and status == 200:
            t.settled_orders += 1
        elif p.kind == "refund" and status == 200:
            t.refunded_fen += int(body["amount_fen"])

    # -------------------------------------------------------------- sending

    async def _post(self, commands: list[dict], as_operator: bool = False) -> list[dict]:
        """The results of a batch, sent again (same keys) after an overload or a broken connection."""
        body = _ENC.encode({"commands": commands})
        headers = {"content-type": "application/json", **(self.operator_headers if as_operator else {})}
        for attempt in range(RETRIES_MAX + 1):
            try:
                r = await self.http.post("/v1/batch", content=body, headers=headers)
                if r.status_code == 200:
                    return _DEC.decode(r.content)["results"]
                if r.status_code < 500 and r.status_code != 429:
                    raise CommandFailed(f"the server refused a batch: {r.status_code} {r.text[:300]}", 1)
            except httpx.TransportError:
                self.tally.transport_errors += 1
            self.tally.retries += 1
            await asyncio.sleep(RETRY_BACKOFF_S * (attempt + 1))
        raise CommandFailed(f"{self.http.base_url} did not answer a batch in {RETRIES_MAX + 1} tries: "
                            "is the server still running?", 1)

    async def _send(self, batch: list[Pending]) -> None:
        try:
            results = await self._post([p.command for p in batch])
            now_ms = self.clock.now_ms()
            for p, res in zip(batch, results):
                self._on_answer(p, res, now_ms)
        finally:
            self.slots.release()

    async def _open_promotions(self) -> None:
        """What the operators and the games did before midnight: the threshold, the
        coupon templates and the deals created, then the coupons won or claimed
        before the day granted (the buyers' wallets filled from the answers); the
        grants of the day are queued for their moments."""
        promos = self.plan.promotions
        if promos is None:
            return
        key = f"{self.run_id}-promo"
        commands = [promos.threshold_command(f"{key}-h", self.start_ms)]
        commands += [t.command(f"{key}-t{k}", self.start_ms) for k, t in enumerate(promos.templates)]
        commands += [d.command(f"{key}-d{k}", self.start_ms, int(self.view.sku_id[d.sku_row]))
                     for k, d in enumerate(promos.deals)]
        results = await self._post(commands, as_operator=True)
        for command, res in zip(commands, results):
            self.tally.answer(command["op"], res["status"], res["body"])
            self.tally.promotions_created += res["status"] == 201
        self.template_ids = [int(res["body"]["template"]) if res["status"] == 201 else None
                             for res in results[1:1 + len(promos.templates)]]
        before: list[Pending] = []
        for g in range(len(promos.grant_at_ms)):
            template = self.template_ids[int(promos.grant_template[g])]
            if template is None:  # refused (said in the answers): nothing to grant from
                continue
            source = promos.templates[int(promos.grant_template[g])].source
            cmd = {"op": "grant", "idempotency_key": f"{key}-g{g}", "template": template,
                   "buyer": int(promos.grant_buyer[g]), "source": source}
            due = self.start_ms + int(promos.grant_at_ms[g])
            if promos.grant_at_ms[g] < 0:
                self.tally.sent["grant"] += 1
                before.append(Pending(due, "grant", g, cmd))
            else:
                self._push_new(Pending(due, "grant", g, cmd))
        for k in range(0, len(before), BATCH_COMMANDS_MAX):
            chunk = before[k:k + BATCH_COMMANDS_MAX]
            for p, res in zip(chunk, await self._post([p.command for p in chunk])):
                self._on_answer(p, res, self.start_ms)

    async def _dispatch(self, due: list[Pending]) -> None:
        for k in range(0, len(due), BATCH_COMMANDS_MAX):
            await self.slots.acquire()
            task = asyncio.create_task(self._send(due[k:k + BATCH_COMMANDS_MAX]))
            self.in_flight.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self.in_flight.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.failure = task.exception()

    # -------------------------------------------------------------- the day

    async def _warm_up(self) -> None:
        """Open the connections and walk the batch path once before midnight: an empty
        batch changes nothing, and the first real one then does not stall the rush."""
        async def empty() -> None:
            await self.http.post("/v1/batch", content=b'{"commands":[]}',
                                 headers={"content-type": "application/json"})
        await asyncio.gather(*(empty() for _ in range(IN_FLIGHT_MAX)))

    async def run(self, stop: asyncio.Event) -> Tally:
        self.failure = None
        await self._warm_up()
        # the plan, the catalog and the modules out of the collector's sight: a full
        # pass over them stalls the pacing loop for tens of ms, festival seconds
        freeze_what_exists()
        stats, real_s = await read_stats(self.http)
        self.start_ms = int(stats["festival_start"])
        self.end_ms = self.start_ms + self.length_ms
        if self.plan.promotions is not None:
            await self._open_promotions()
            stats, real_s = await read_stats(self.http)
        self.stats = stats
        self.clock = ServerClock(int(stats["at"]), real_s, self.speedup)
        plan = self.plan
        at = plan.at_ms[: int(np.searchsorted(plan.at_ms, self.length_ms, side="left"))]
        # tick: often enough that every festival second gets its own requests
        tick_s = min(0.01, 0.5 / self.speedup)
        now = self.clock.now_ms()
        i = int(np.searchsorted(at, now - self.start_ms, side="left"))
        self.tally.skipped = i
        resync_at = time.monotonic() + RESYNC_S
        resync: asyncio.Task | None = None
        while not stop.is_set() and self.failure is None:
            now = self.clock.now_ms()
            due: list[Pending] = []
            while i < len(at) and self.start_ms + at[i] <= now:
                due.append(self._checkout(i, self.start_ms + int(at[i]), rows=self._in_stock_rows(i)))
                self.tally.sent["checkout"] += 1
                i += 1
            while self.heap and self.heap[0][0] <= now:
                p = heapq.heappop(self.heap)[2]
                if p.due_ms < self.end_ms:  # a pay or cancel due after the replayed hours is dropped
                    due.append(p)
            if due:
                self.tally.max_lag_ms = max(self.tally.max_lag_ms, now - min(p.due_ms for p in due))
                await self._dispatch(due)
            if time.monotonic() >= resync_at and (resync is None or resync.done()):
                # beside the sending, not in its way: awaited here, each read of the
                # stats (a round trip) held back every command due meanwhile
                resync = asyncio.create_task(self._resync())
                resync_at = time.monotonic() + RESYNC_S
            # what is left on the heap is due after the replayed hours (retries past the end)
            if i >= len(at) and not self.in_flight and (not self.heap or self.heap[0][0] >= self.end_ms):
                break
            nxt = min(self.start_ms + int(at[i]) if i < len(at) else 1 << 62,
                      self.heap[0][0] if self.heap else 1 << 62)
            # until the next command is due, or one is scheduled sooner: slept through, a
            # payment scheduled by an answer waited up to RESYNC_S once no checkout was left
            # to wake for (600 s of festival time at 600x, the end of festival --cluster's hour)
            self._wake_at_ms, delay_s = nxt, min(max(self.clock.real_seconds_until(nxt), tick_s), RESYNC_S)
            self._sooner.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sooner.wait(), delay_s)
            self._wake_at_ms = 0
        if self.in_flight:  # stop sending, but let what is on the wire be answered
            await asyncio.gather(*self.in_flight, return_exceptions=True)
        if resync is not None:
            await resync  # a read fails fast where the server is gone
        if self.failure is not None:
            raise self.failure
        await self._resync()
        if stop.is_set():  # stopped early: the figures cover the hours it got through, no more
            self.tally.hours = stopped_hours(int(self.stats["at"]) - self.start_ms, self.tally.hours)
        return self.tally

    async def _resync(self) -> None:
        try:
            stats, real_s = await read_stats(self.http)
        except httpx.HTTPError:
            self.tally.transport_errors += 1
            now = time.monotonic()
            self.unreachable_since = self.unreachable_since or now
            if now - self.unreachable_since >= SERVER_LOST_S and self.failure is None:
                self.failure = CommandFailed(f"lost {self.http.base_url}: no answer for {SERVER_LOST_S:g} s "
                                             "(what it acknowledged is durable there)", 1)
            return
        self.unreachable_since = 0.0
        self.stats = stats
        self.clock.set(int(stats["at"]), real_s)
        if self.on_progress:
            self.on_progress(stats, self.tally)
