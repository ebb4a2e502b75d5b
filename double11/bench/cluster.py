"""`double11 bench --cluster`: the festival's batch load on a local cluster
(3 NATS nodes, units with their standbys, the rebalancer; all on this
machine with the load client), then each kind of SIGKILL under load, the
checks after, and the single machine's figure of the same run beside it.

1. The cluster: LocalCluster with the rebalancer, and the batch load through
   the cluster's client (cluster_load.py): orders and payments a second, the
   batches' p50/p99, the hot SKUs' stranded refusals.
2. Faults, under a lighter load: SIGKILL of unit u0's primary, then of the
   NATS node leading u0's stream; a probe says how long u0 was away.
3. After: every unit recovered from its last snapshot and checked (no
   oversell, ledger at zero, GMV = paid checkouts), the quotas summed against
   the stock; the state's bytes per order, and how many 24 GB units a
   full-size 2017 day (812 million orders) needs.
4. One machine: `double11 serve` and the same batch load (run.batch_load)
   for --seconds, as the plain bench runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import nats.errors
import numpy as np

from double11.bench import run as bench
from double11.bench.cluster_load import PROBE_EVERY_S, load
from double11.bench.workload import Workload
from double11.catalog.files import save_catalog
from double11.catalog.generate import popularity_weights
from double11.cluster.buckets import BucketUnavailable
from double11.cluster.cli import rebalancer_spec
from double11.cluster.client import ClusterClient
from double11.cluster.local_cluster import PRIMARY, LocalCluster
from double11.cluster.nats_local import LocalNats
from double11.cluster.rebalancer import Rebalancer
from double11.cluster.rebalancer_node import NatsUnits
from double11.cluster.stream_log import connect, stream_info
from double11.cluster.unit import open_unit
from double11.cluster.unit_requests import ask_stock
from double11.engine.wire import decode_results
from double11.errors import Result
from double11.lifecycle import CommandFailed
from double11.storage import snapshot as snapshots

FULL_DAY_ORDERS = 812_000_000  # 2017 (../shared/facts.md)
UNIT_MEMORY_BYTES = 24 * 2**30
UNIT_MEMORY_USABLE = 0.8  # the rest for the OS, the page cache of the log, a snapshot's copy
FAULT_LOAD_S = 25.0  # the lighter load the faults happen under
KILL_AFTER_S = 3.0
CLUSTER_ORDERS_PER_S = 150_000  # what the flash deals' stock is sized for
CLUSTER_SIZED_FOR_ORDERS_PER_S = 450_000  # and the units' tables (more fills the 24 GB: four engines)
FAULTS_SIZED_FOR_ORDERS = 4_000_000  # the lighter load under the faults, in each unit
FINISH_TRANSFERS_S_MAX = 60.0  # what the flash deals' stock is sized for


def unit_sizing(seconds: float, units: int) -> int:
    """The checkouts each unit's tables are sized for: the cluster's most over
    the run, shared.  Not the one machine's (900,000/s): four engines (the
    primaries and their standbys) prefault their tables on this 24 GB machine."""
    return int(CLUSTER_SIZED_FOR_ORDERS_PER_S * seconds / units) + FAULTS_SIZED_FOR_ORDERS


def say(text: str) -> None:
    bench.say(text)


def cluster_bench(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="double11-bench-cluster-"))
    kept = False  # the folder, after a failure (its logs, the units' snapshots and streams)
    cluster = LocalCluster(extra=[rebalancer_spec(workdir / "catalog")],
        new_unit_args=["--expected-checkouts", str(unit_sizing(args.seconds, args.units))])
    try:
        say(f"double11 bench --cluster: {args.skus:,} skus of {args.merchants:,} merchants, {os.cpu_count()} cores, "
            f"3 NATS nodes, {args.units} units with standbys")
        catalog = bench.bench_catalog(args)
        # the flash deals sell out about halfway at the cluster's rate (the plain bench's stock is for 1M/s)
        demand = popularity_weights(args.skus)[:bench.FLASH_DEALS] * CLUSTER_ORDERS_PER_S * 1.5 * args.seconds
        catalog.sku_stock[:bench.FLASH_DEALS] = np.ceil(demand * 0.5).astype(np.int64)
        save_catalog(catalog, workdir / "catalog", fmt="parquet")
        result: dict = {"units": args.units, "nats_nodes": 3, "offered_per_s": args.batch_orders_per_s}
        say("starting the cluster ...")
        urls, slot_map = cluster.start(workdir / "cluster", nodes=3, units=args.units, catalog=workdir / "catalog",
                                       clock_start_ms=bench.FESTIVAL_START_MS)
        offered = args.batch_orders_per_s  # None: as fast as the cluster answers
        say(f"cluster load, {args.seconds:.0f} s, {args.connections} clients, "
            + (f"{offered:,} checkouts/s offered:" if offered else "each as fast as it is answered:"))
        figures, watch = asyncio.run(load(urls, catalog.sku_id, args.seconds, args.batch, args.connections,
                                          bench.FLASH_DEALS, offered_per_s=offered))
        summary = figures.summary()
        stranded = watch.stranded(figures.hot_refusals)
        hot_sold = int(asyncio.run(_hot_sold(urls, slot_map.units, bench.FLASH_DEALS)))
        summary.update(stranded_refusals=stranded, hot_sku_sales=hot_sold,
                       stranded_share=stranded / hot_sold if hot_sold else 0.0,
                       hot_refusals=len(figures.hot_refusals))
        result["cluster"] = summary
        say(f"  orders/s {summary['orders_per_s']:,.0f}  payments/s {summary['payments_per_s']:,.0f}  "
            f"p50 {summary['batch_p50_ms']:.1f} ms  p99 {summary['batch_p99_ms']:.1f} ms  "
            f"parts sent again {figures.retries}")
        say(f"  slowest batches: {figures.slowest()}")
        result["failover"] = asyncio.run(faults(cluster, urls, catalog.sku_id, args))
        finished = finish_transfers(cluster, urls, catalog.sku_id)
        cluster.stop()
        result["after"] = after_the_run(workdir / "cluster", slot_map.units, catalog, finished)
        # one machine last: its tens of gigabytes, freed, slowed what ran after them on this VM
        # (docs/performance.md, "The bench's own order")
        if args.single:
            say(f"one machine (double11 serve), {args.seconds:.0f} s of batches:")
            if args.batch_orders_per_s is None:
                args.batch_orders_per_s = bench.BATCH_LOAD_SIZED_FOR_ORDERS_PER_S
            server = bench.Server(workdir / "catalog", workdir / "single-data", args.port,
                                  expected_checkouts=bench.batch_load_sizing(args.batch_orders_per_s, args.seconds))
            try:
                one = bench.batch_load(server, catalog, args)
            finally:
                server.stop()
            shutil.rmtree(workdir / "single-data", ignore_errors=True)
            result["single"] = {k: one[k] for k in ("orders_per_s", "payments_per_s", "batch_p50_ms", "batch_p99_ms")}
        _print(result)
        if args.json:
            print(json.dumps(result))
        return 0
    except CommandFailed as exc:
        say(f"double11 bench --cluster: {exc}")
        return exc.status if hasattr(exc, "status") else 1
    except BaseException:
        say(f"double11 bench --cluster: its folder is kept for a look: {workdir}")
        kept = True
        raise
    finally:
        cluster.stop()
        if not kept:
            shutil.rmtree(workdir, ignore_errors=True)


async def _hot_sold(urls: list[str], units: tuple[str, ...], rows: int) -> int:
    nc = await connect(urls)
    try:
        reports = [await ask_stock(nc, unit) for unit in units]
        return sum(int(r.sold[:rows].sum()) for r in reports)
    finally:
        await nc.close()


def finish_transfers(cluster: LocalCluster, urls: list[str], sku_ids: np.ndarray) -> int:
    """The rebalancer stopped, and the transfers its journal holds finished
    (a stop may cut one between its release and its restock, as a crash
    would): then no quota is in flight.  How many it finished."""
    rebalancer = next(p for p in cluster.processes if p.name == "rebalancer")
    if rebalancer.process is not None and rebalancer.running():
        rebalancer.process.send_signal(signal.SIGTERM)
        rebalancer.process.wait(timeout=30)
    deadline = time.monotonic() + FINISH_TRANSFERS_S_MAX
    while True:  # the journal's bucket may still be electing a leader after the faults
        try:
            units = NatsUnits(urls)
            try:
                left = sum(len(transfers) for transfers in units.unfinished())
                Rebalancer(units, units, sku_ids, epoch="bench-end")  # finishes what its journal holds
                if still := units.unfinished():
                    raise CommandFailed(f"the rebalancer's journal still holds {len(still)} round(s) after they "
                                        f"were finished (first: {still[0][:3]})", 1)
                return left
            finally:
                units.close()
        except (nats.errors.Error, TimeoutError, BucketUnavailable) as exc:
            if time.monotonic() > deadline:
                raise CommandFailed(f"the rebalancer's journal could not be read: {type(exc).__name__} {exc}",
                                    1) from exc
            time.sleep(1.0)


def after_the_run(data: Path, units: tuple[str, ...], catalog, finished: int) -> dict:
    """The cluster's NATS nodes started again from their stores, each unit
    recovered from its latest snapshot and its stream (as a machine that
    takes the unit over would) and checked as the plain bench checks its
    server's folder; the quotas summed against the stock; the state's bytes
    per order, and the 24 GB units a full 2017 day needs."""
    checks: dict[str, bool] = {}
    stocked = np.zeros(len(catalog.sku_id), dtype=np.int64)
    state_bytes = orders = 0
    nats = LocalNats(data / "nats", nodes=3).start()
    try:
        for unit in units:
            folders = [data / "units" / unit / role for role in ("primary", "standby")]
            newest = max((snapshots.latest(f) or (-1, f), f) for f in folders)[1]
            festival = open_unit(nats.urls, unit, newest)
            try:
                found = bench.festival_invariants(festival, 0)
            finally:
                festival.close()
            checks.update({f"{unit}: {name}": ok for name, ok in found["checks"].items()
                           if name != "client_saw_every_payment"})
            stocked += found["sku_stocked"]
            state_bytes += found["state_bytes"]
            orders += found["orders"]
    finally:
        nats.stop()
    checks["the units' quotas sum to the stock"] = bool(np.array_equal(stocked, catalog.sku_stock))
    per_order = state_bytes / max(1, orders)
    fits = UNIT_MEMORY_BYTES * UNIT_MEMORY_USABLE / per_order
    return {"checks": checks, "transfers_finished_at_the_end": finished, "bytes_per_order": round(per_order),
            "orders_per_24gb_unit": int(fits), "units_for_full_day": math.ceil(FULL_DAY_ORDERS / fits)}


async def faults(cluster: LocalCluster, urls: list[str], sku_ids: np.ndarray, args: argparse.Namespace) -> dict:
    """u0 away after a SIGKILL of its primary, then of its stream's leader node (s)."""
    out = {}
    for kind in ("primary", "stream_leader"):
        say(f"SIGKILL of u0's {kind.replace('_', ' ')} under load:")
        away = await _probe_through(cluster, urls, sku_ids, kind, args.batch // 4)
        out[f"resume_after_{kind}_kill_s"] = away
        say(f"  u0 answered again after {away:.2f} s")
    return out


async def _probe_through(cluster: LocalCluster, urls: list[str], sku_ids: np.ndarray, kind: str,
                         batch: int) -> float:
    nc = await connect(urls)
    try:
        client = await ClusterClient.connect(nc)
        u0_buyers = np.arange(1, 200_000, dtype=np.int64)
        u0_buyers = u0_buyers[client.slot_map.unit_of_buyer(u0_buyers) == 0]
        work = Workload(sku_ids[bench.FLASH_DEALS:], seed=900 + len(kind), key_space=900 + len(kind))
        answered: list[float] = []
        stop_at = time.perf_counter() + FAULT_LOAD_S

        async def probe() -> None:
            k = 0
            while time.perf_counter() < stop_at:
                one = work.checkouts(1)
                one.target[:] = u0_buyers[k % len(u0_buyers)]
                k += 1
                res = await client.submit(one.to_bytes())
                if int(decode_results(res)["code"][0]) in (Result.ok, Result.out_of_stock):
                    answered.append(time.perf_counter())
                await asyncio.sleep(PROBE_EVERY_S)

        async def background() -> None:  # the load the fault happens under
            while time.perf_counter() < stop_at:
                await client.submit(work.checkouts(batch).to_bytes())

        async def kill() -> None:
            await asyncio.sleep(KILL_AFTER_S)
            await asyncio.to_thread(_kill, cluster, urls, kind)

        await asyncio.gather(probe(), background(), kill())
        gaps = np.diff(np.array(answered)) if len(answered) > 1 else np.array([FAULT_LOAD_S])
        return float(gaps.max())
    finally:
        await nc.close()


def _kill(cluster: LocalCluster, urls: list[str], kind: str) -> None:
    if kind == "primary":
        victim = next(p for p in cluster.processes if p.unit == "u0" and p.role_now() == PRIMARY and p.running())
        assert victim.pid is not None
        os.kill(victim.pid, signal.SIGKILL)
        return
    assert cluster.nats is not None
    placed = stream_info(urls, "u0").cluster
    leader = placed.leader if placed is not None else None
    if leader is None:
        raise CommandFailed("u0's stream has no leader to kill", 1)
    k = cluster.nats.node_named(str(leader))
    cluster.nats.kill(k)
    time.sleep(FAULT_LOAD_S / 2)
    cluster.nats.restart(k)


def _print(result: dict) -> None:
    c, m, f = result["cluster"], result["after"], result["failover"]
    say("")
    say(f"{'':28}{'orders/s':>12}{'payments/s':>12}{'p50 ms':>9}{'p99 ms':>9}")
    if "single" in result:
        s = result["single"]
        say(f"{'one machine':28}{s['orders_per_s']:>12,.0f}{s['payments_per_s']:>12,.0f}"
            f"{s['batch_p50_ms']:>9.1f}{s['batch_p99_ms']:>9.1f}")
    say(f"{'cluster, ' + str(result['units']) + ' units + standbys':28}{c['orders_per_s']:>12,.0f}"
        f"{c['payments_per_s']:>12,.0f}{c['batch_p50_ms']:>9.1f}{c['batch_p99_ms']:>9.1f}")
    say(f"stranded refusals: {c['stranded_refusals']} of {c['hot_sku_sales']:,} hot-SKU sales "
        f"({100 * c['stranded_share']:.2f}%), {c['hot_refusals']:,} hot-SKU refusals in all")
    say(f"u0 resumed {f['resume_after_primary_kill_s']:.2f} s after its primary's SIGKILL, "
        f"{f['resume_after_stream_leader_kill_s']:.2f} s after its stream leader's")
    failed = [name for name, ok in m["checks"].items() if not ok]
    say("after the run, each unit recovered from its snapshot and stream: "
        + ("every check holds" if not failed else "FAILED: " + "; ".join(failed))
        + f" ({len(m['checks'])} checks; {m['transfers_finished_at_the_end']} transfer(s) the stopped rebalancer "
          "left half done, finished)")
    say(f"memory: {m['bytes_per_order']:,} bytes of state per order; a 24 GB unit holds "
        f"{m['orders_per_24gb_unit']:,}; a full 2017 day needs {m['units_for_full_day']} units "
        f"(each a primary and a standby)")
