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
from double11.simulator.schedule import HOUR_MS, stopped_hours, window_ms
from double11.simulator.tally import Tally

BATCH_COMMANDS_MAX = 4096  # well under limits.batch_commands_max: keeps each request short
IN_FLIGHT_MAX = 8
RESYNC_S = 1.0  # how often the festival clock is read back from the server
SUBSTITUTIONS_MAX = 2  # a buyer who finds an item sold out tries this many other ones
RETRIES_MAX = 20
RETRY_BACKOFF_S = 0.05
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
    kind: str  # checkout, pay, cancel, confirm, refund
    index: int  # checkout index in the plan
    command: dict
    extra: Any = None  # (substitution round, SKU rows or None) of a checkout; the order of a confirm/refund
    tries: int = 0


class Simulation:
    def __init__(self, plan: Plan, view: CatalogView, http: httpx.AsyncClient, speedup: float,
                 on_progress: Callable[[dict, Tally], None] | None = None, hours: float = 24.0):
        self.plan, self.view, self.http = plan, view, http
        self.length_ms = window_ms(hours)  # replay only the day's first hours
        self.speedup = speedup
        self.on_progress = on_progress
        self.tally = Tally(hours=min(hours, 24.0), speedup=speedup)
        self.run_id = f"sim{plan.profile.year}-{plan.seed}-{plan.scale:g}"
        self.heap: list[tuple[int, int, Pending]] = []
        self.seq = itertools.count()
        self.accepted: dict[int, dict] = {}  # plan index -> checkout answer body
        self.sold_out: set[int] = set()  # SKU rows seen sold out
        spare_rng = np.random.default_rng([plan.seed, 11])
        self.spare_rows = mixes.draw_rows(plan.weights, SPARE_ROWS, spare_rng)
        self.in_flight: set[asyncio.Task] = set()
        self.slots = asyncio.Semaphore(IN_FLIGHT_MAX)
        self.stats: dict = {}
        self.unreachable_since = 0.0  # monotonic time of the first clock read that failed in a row
        self.failure: BaseException | None = None

    # -------------------------------------------------------------- commands

    def _lines(self, i: int, rows: np.ndarray | None = None) -> list[dict]:
        a, b = self.plan.line_offsets[i], self.plan.line_offsets[i + 1]
        rows = self.plan.line_rows[a:b] if rows is None else rows
        sku = self.view.sku_id
        qty = self.plan.line_qty[a:b]
        return [{"sku": int(sku[r]), "qty": int(qty[j]) if j < len(qty) else 1} for j, r in enumerate(rows)]

    def _checkout(self, i: int, due_ms: int, round_: int = 0, rows: np.ndarray | None = None) -> Pending:
        p = self.plan
        cmd = {
            "op": "checkout", "idempotency_key": f"{self.run_id}-c{i}.{round_}",
            "buyer": int(p.buyer[i]), "country": p.countries[p.country[i]],
            "channel": "mobile" if p.mobile[i] else "pc", "lines": self._lines(i, rows),
        }
        return Pending(due_ms, "checkout", i, cmd, (round_, rows))

    def _substitute(self, i: int, pending: Pending) -> Pending | None:
        """The same buyer tries again with another item in place of the sold-out one."""
        round_, rows = pending.extra
        a, b = self.plan.line_offsets[i], self.plan.line_offsets[i + 1]
        rows = np.array(self.plan.line_rows[a:b] if rows is None else rows)
        if len(rows) == 1:  # one line: that item is what ran out
            self.sold_out.add(int(rows[0]))
        if round_ >= SUBSTITUTIONS_MAX:
            return None
        # With several lines the answer does not say which one ran out: replace those
        # known to be sold out, else the most popular one (rows are popularity ranks,
        # and the hottest items are the flash deals that run out).
        known = [j for j, r in enumerate(rows) if int(r) in self.sold_out]
        for j in known or [int(np.argmin(rows))]:
            rows[j] = self._spare(i * 31 + round_ * 7 + j, int(rows[j]))
        rows = self._dedupe(rows)
        return self._checkout(i, pending.due_ms, round_ + 1, rows)

    def _in_stock_rows(self, i: int) -> np.ndarray | None:
        """The plan's items, with those already seen sold out swapped for others: the
        buyer sees "sold out" on the item's page and never checks it out."""
        if not self.sold_out:
            return None
        rows = self.plan.line_rows[self.plan.line_offsets[i]:self.plan.line_offsets[i + 1]]
        gone = [j for j, r in enumerate(rows) if int(r) in self.sold_out]
        if not gone:
            return None
        rows = rows.copy()
        for j in gone:
            rows[j] = self._spare(i * 31 + j, int(rows[j]))
        self.tally.sold_out_avoided += 1
        return self._dedupe(rows)

    def _spare(self, k: int, instead_of: int) -> int:
        """Another popular item still on sale, as close in price as a few looks find:
        a buyer who misses a deal takes a similar one, so the day's GMV holds."""
        price = self.view.price_fen
        best, best_gap = None, None
        for step in range(64):
            r = int(self.spare_rows[(k * 2654435761 + step) % SPARE_ROWS])
            if r in self.sold_out:
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
        if p.kind == "checkout":
            if status == 201:
                t.checkouts += 1
                if plan.fate[i] == mixes.PAY:
                    self.accepted[i] = body
                    cmd = {"op": "pay", "idempotency_key": f"{self.run_id}-p{i}",
                           "checkout": body["checkout"], "amount_fen": body["amount_fen"]}
                    self._push_new(Pending(self.start_ms + int(plan.next_at_ms[i]), "pay", i, cmd))
                elif plan.fate[i] == mixes.CANCEL:
                    cmd = {"op": "cancel", "idempotency_key": f"{self.run_id}-x{i}",
                           "checkout": body["checkout"]}
                    self._push_new(Pending(self.start_ms + int(plan.next_at_ms[i]), "cancel", i, cmd))
            elif code == "out_of_stock":
                retry = self._substitute(i, p)
                if retry is None:
                    t.lost_checkouts += 1
                else:
                    t.substitutions += 1
                    retry.due_ms = now_ms
                    self._push_new(retry)
        elif p.kind == "pay":
            checkout = self.accepted.pop(i)
            if status != 200:
                return
            hour = (now_ms - self.start_ms) // HOUR_MS
            t.paid(int(body["amount_fen"]), bool(plan.mobile[i]), plan.countries[plan.country[i]],
                   int(plan.buyer[i]), hour, checkout["orders"])
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

    async def _send(self, batch: list[Pending]) -> None:
        try:
            body = _ENC.encode({"commands": [p.command for p in batch]})
            for attempt in range(RETRIES_MAX + 1):
                try:
                    r = await self.http.post("/v1/batch", content=body,
                                             headers={"content-type": "application/json"})
                    if r.status_code == 200:
                        results = _DEC.decode(r.content)["results"]
                        break
                    if r.status_code < 500 and r.status_code != 429:
                        raise CommandFailed(f"the server refused a batch: {r.status_code} {r.text[:300]}", 1)
                except httpx.TransportError:
                    self.tally.transport_errors += 1
                self.tally.retries += 1
                await asyncio.sleep(RETRY_BACKOFF_S * (attempt + 1))
            else:
                raise CommandFailed(f"{self.http.base_url} did not answer a batch in {RETRIES_MAX + 1} tries: "
                                    "is the server still running?", 1)
            now_ms = self.clock.now_ms()
            for p, res in zip(batch, results):
                self._on_answer(p, res, now_ms)
        finally:
            self.slots.release()

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
        self.stats = stats
        self.start_ms = int(stats["festival_start"])
        self.end_ms = self.start_ms + self.length_ms
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
            await asyncio.sleep(min(max(self.clock.real_seconds_until(nxt), tick_s), RESYNC_S))
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
