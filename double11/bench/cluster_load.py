"""The cluster benchmark's load (`double11 bench --cluster`): gateway-like
clients sending binary batches of checkouts, then the payments of the ones
made, through the cluster's client (router + NATS), each batch split by
unit and answered in order.

Besides the rates and latencies it measures:
- stranded refusals: a hot SKU's out_of_stock answered by a buyer's unit
  while, at the watcher's next read of every unit's stock, another unit
  still held some of it (the quotas' cost: issue 25 wants under 1% of the
  hot SKUs' sales).  Once no unit holds a hot SKU the clients stop ordering
  it, as the plain bench's do (the app greys it out);
- a unit's resume time after a fault: a probe sends one checkout of a buyer
  of that unit every PROBE_EVERY_S and the longest gap between two answers
  is the time the unit was away.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np
from nats.aio.client import Client

from double11.bench.run import OfferSchedule
from double11.bench.workload import Workload
from double11.cluster.client import ClusterClient
from double11.cluster.quotas import StockReport
from double11.cluster.stream_log import connect
from double11.cluster.unit_requests import ask_stock
from double11.engine.batch import CommandBatch
from double11.engine.refusals import short_line
from double11.engine.wire import decode_results
from double11.errors import Result

PROBE_EVERY_S = 0.05
STOCK_WATCH_EVERY_S = 0.1
_OK, _OUT_OF_STOCK = int(Result.ok), int(Result.out_of_stock)


@dataclass
class LoadFigures:
    checkouts: int = 0
    orders: int = 0  # the checkouts' orders (one per merchant in a checkout)
    payments: int = 0
    paid_fen: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    sent_at_s: list[float] = field(default_factory=list)  # each batch's start, s into the load
    started: float = 0.0
    seconds: float = 0.0
    hot_refusals: list[tuple[float, int, int]] = field(default_factory=list)  # (time, unit, sku row)
    hot_sold: int = 0
    retries: int = 0

    def summary(self) -> dict:
        lat = np.array(self.latencies_ms) if self.latencies_ms else np.zeros(1)
        return {"orders_per_s": self.checkouts / self.seconds, "payments_per_s": self.payments / self.seconds,
                "batch_p50_ms": float(np.percentile(lat, 50)), "batch_p99_ms": float(np.percentile(lat, 99)),
                "checkouts": self.checkouts, "orders": self.orders, "payments": self.payments,
                "paid_fen": self.paid_fen,
                "seconds": self.seconds, "retried_parts": self.retries}

    def slowest(self, n: int = 5) -> str:
        lat = np.array(self.latencies_ms)
        return ", ".join(f"{lat[k]:.0f} ms at {self.sent_at_s[k]:.1f} s" for k in np.argsort(-lat)[:n])


class StockWatch:
    """Every unit's available stock of the hot SKUs, read every STOCK_WATCH_EVERY_S."""

    def __init__(self, nc: Client, units: tuple[str, ...], hot_rows: int) -> None:
        self.nc, self.units, self.hot_rows = nc, units, hot_rows
        self.reads: list[tuple[float, np.ndarray]] = []  # (time, (units, hot_rows) available)
        self.sold_out = np.zeros(0, dtype=np.int64)  # hot rows no unit holds any more
        self.last: list[StockReport | None] = [None] * len(units)  # each unit's last report (read: its changes)

    async def run(self, until: float) -> None:
        while time.perf_counter() < until:
            t = time.perf_counter()
            reports = await asyncio.gather(*(ask_stock(self.nc, u, since=last)
                                             for u, last in zip(self.units, self.last)))
            self.last = list(reports)
            held = np.stack([r.available[:self.hot_rows] for r in reports])
            self.reads.append((t, held))
            self.sold_out = np.flatnonzero(held.sum(axis=0) == 0)  # greyed out in the app: no more orders
            await asyncio.sleep(STOCK_WATCH_EVERY_S)

    def stranded(self, refusals: list[tuple[float, int, int]]) -> int:
        """Refusals after which the next read still found the SKU in another unit."""
        times = np.array([t for t, _ in self.reads])
        count = 0
        for t, unit, row in refusals:
            k = int(np.searchsorted(times, t))
            if k < len(self.reads):
                held = self.reads[k][1][:, row].copy()
                held[unit] = 0
                count += int(held.sum() > 0)
        return count


async def load(urls: list[str], sku_ids: np.ndarray, seconds: float, batch: int, clients: int,
               hot_rows: int, seed: int = 500, offered_per_s: float | None = None) -> tuple[LoadFigures, StockWatch]:
    """Each client sends a batch of checkouts, then their payments, again and
    again: as fast as the cluster answers (its most), or, given
    offered_per_s, with its checkouts offered at that rate over all the
    clients (the latency at that rate, as a gateway pacing its traffic sees it)."""
    figures = LoadFigures()
    nc = await connect(urls)
    try:
        cluster = await ClusterClient.connect(nc)
        watch = StockWatch(nc, cluster.slot_map.units, hot_rows)
        # made before the clock starts: each draws its SKU pool, which the first batches would wait for
        works = [Workload(sku_ids, seed=seed + k, key_space=seed + k + 1) for k in range(clients)]
        started = figures.started = time.perf_counter()
        stop_at = started + seconds
        schedule = OfferSchedule(started, stop_at, offered_per_s) if offered_per_s else None

        async def one_client(k: int) -> None:
            work = works[k]
            dropped = 0
            while time.perf_counter() < stop_at:
                if len(watch.sold_out) > dropped:  # as the plain bench's clients: sold out, no longer ordered
                    dropped = len(watch.sold_out)
                    work.drop_skus(sku_ids[watch.sold_out])
                if schedule is not None:  # its moment to go (a batch late goes at once)
                    slot = schedule.take(batch)
                    if slot is None:
                        break
                    await asyncio.sleep(max(0.0, slot - time.perf_counter()))
                checkouts = work.checkouts(batch)
                res = await timed(cluster, checkouts, figures)
                ok = res["code"] == _OK
                note_hot_refusals(checkouts, res, cluster, figures, time.perf_counter(), sku_ids[:hot_rows])
                paid = await timed(cluster, work.pays(res["ref"][ok], res["amount_fen"][ok]), figures)
                paid_ok = paid["code"] == _OK
                figures.checkouts += int(ok.sum())
                figures.orders += int(res["orders"][ok].sum())
                figures.payments += int(paid_ok.sum())
                figures.paid_fen += int(paid["amount_fen"][paid_ok].sum())

        await asyncio.gather(watch.run(stop_at + 2 * STOCK_WATCH_EVERY_S),
                             *(one_client(k) for k in range(clients)))
        figures.seconds = time.perf_counter() - started
        figures.retries = cluster.retries
        return figures, watch
    finally:
        await nc.close()


async def timed(cluster: ClusterClient, batch: CommandBatch, figures: LoadFigures) -> dict[str, np.ndarray]:
    t = time.perf_counter()
    res = decode_results(await cluster.submit(batch.to_bytes()))
    figures.latencies_ms.append((time.perf_counter() - t) * 1000)
    figures.sent_at_s.append(t - figures.started)
    return res


def note_hot_refusals(checkouts: CommandBatch, res: dict[str, np.ndarray], cluster: ClusterClient,
                      figures: LoadFigures, at: float, hot_ids: np.ndarray) -> None:
    refused = np.flatnonzero(res["code"] == _OUT_OF_STOCK)
    if len(refused) == 0:
        return
    first_line = np.cumsum(checkouts.lines.astype(np.int64)) - checkouts.lines
    units = cluster.slot_map.unit_of_buyer(checkouts.target[refused])
    for i, unit in zip(refused.tolist(), units.tolist()):
        short = short_line(int(res["ref"][i]))
        if short is None:
            continue
        sku = int(checkouts.sku[first_line[i] + short[0]])
        hit = np.flatnonzero(hot_ids == sku)
        if len(hit):
            figures.hot_refusals.append((at, unit, int(hit[0])))
