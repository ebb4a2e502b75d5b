"""`double11 bench`: the transaction core at festival peak, measured end to end.

1. single requests: one checkout per HTTP request (JSON, as a phone sends it)
   from wrk, against the real server (durability on: fsync before every
   answer), and against the same server answering from an empty handler, in
   turn, four pairs, every other one empty first (single_orders_per_s and
   empty_handler_per_s are the means), after a short load on each that is
   not counted; in the same rounds, between the two, the same load against
   a server that takes tokens, each request with its buyer's token
   (single_orders_per_s_tokens, and tokens_cost_share: what verifying them
   costs that path; --no-tokens skips it);
2. engine: batches applied in-process through Engine.apply_all, no HTTP
   (engine_commands_per_s);
3. batch load: the real server and a gateway-like client posting binary
   batches of checkouts, then paying for the accepted ones, over loopback
   HTTP (orders_per_s, payments_per_s, batch_p99_ms), at most
   --batch-orders-per-s checkouts a second (BATCH_LOAD_SIZED_FOR_ORDERS_PER_S
   unless told), the rate its server is sized for.  The flash deals sell
   out mid-run; like the app, which greys out an item whose product page
   reads zero stock, the clients stop ordering a hot item once a poll of its
   stock reads zero;
4. the server is stopped and its data folder recovered in-process: the
   invariants are checked on the recovered state (invariants_ok).

Between 1 and 2, the overload phase (bench/overload.py; --no-overload skips
it): single checkouts offered to the single-request server at twice the
single_orders_per_s just measured, for --overload-seconds, by an open-loop
client of its own; its goodput against that figure, the p99 of the accepted,
the server's memory growth, and how much of the machine the client took.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import http.client
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from double11 import limits
from double11.access import tokens as access_tokens
from double11.access.roles import Role
from double11.bench import promotions as promo
from double11.bench.workload import Workload
from double11.catalog.files import save_catalog
from double11.catalog.generate import generate_catalog, popularity_weights
from double11.config import FestivalConfig
from double11.engine.batch import CommandBatch
from double11.engine.machine import Engine, Status
from double11.engine.warm_up import compile_kernels
from double11.engine.wire import decode_results
from double11.errors import Result
from double11.gc_tuning import freeze_what_exists
from double11.lifecycle import CommandFailed, check_ports_free, child_env

BINARY = "application/x-double11-batch"
FESTIVAL_START_MS = FestivalConfig().festival_start_ms
FLASH_DEALS = 10  # the hottest SKUs get too little stock on purpose: they sell out mid-run
# Phones: many connections, one checkout each.  A group commit answers a
# request once its batch is on disk, so a server's single-request rate is at
# most connections / latency (Little's law); at festival scale the phones are
# millions.  Fewer connections leave the CPU idle between waves of requests;
# past 2048 the share of the empty handler no longer rises with them
# (docs/performance.md, "Measurements behind the constants").
SINGLE_CONNECTIONS = 2048
# single and empty loads, in turn: four pairs, the second and fourth with the
# empty handler first (a drift of the host's speed over the phase then weighs
# on both alike).  One 10 s pair varies widely on a shared VM, so two pairs
# were too few to tell 0.80 apart (docs/performance.md, "Measurements behind
# the constants")
SINGLE_ROUNDS = 4
# before them, a load on each fresh server that is not counted: a fresh
# server's first pair read lower than its second every time; a sale runs for
# a day, not 10 s
SINGLE_WARM_UP_S = 3
# wrk's script picks each checkout's SKU uniformly from this many draws of the
# popularity: enough that a draw carries about one request of a load, so the
# load follows the Zipf popularity down the long tail (with a few thousand
# draws, a tail SKU drawn once got a share of the load dozens of times its
# stock, and a few percent of the checkouts came back sold out)
SINGLE_SKU_DRAWS = 100_000
# the single-request server's tables, and the stock, are sized for this rate over the whole phase,
# well above what a single load reaches on the development machine (a table that grows pauses
# every request)
SINGLE_LOAD_SIZED_FOR_ORDERS_PER_S = 50_000
# The tokens load's buyers, each with a buyer token, a request picking a buyer and its
# token together (the server takes a checkout only from the buyer it names).  A phone
# reuses its token (it lives an hour) and the front remembers a verified token
# (access/tokens.py Verifier), so a pool of N buyers costs N verifications, all in
# the load that is not counted (it walks the pool: each buyer once before any
# twice), and every counted request a lookup in a cache of N: a festival's front
# that has been up.  Enough buyers that their tokens do not all sit in the CPU's
# cache (a festival's phones are millions), and that none sends more than a few
# checkouts a second even on a fast host (the per-buyer rate limit,
# limits.buyer_commands_per_s_default, must not be what this load measures); few
# enough that the load not counted walks them all on a slow host
TOKEN_BUYERS = 10_000
TOKEN_TTL_S = 86_400  # longer than any single phase: a token expiring mid-load would read as refusals
OPEN_FILES_BESIDE_CONNECTIONS = 512  # a server's or wrk's own files: modules, logs, the link, epoll
# The batch load's server is sized for this many checkouts a second over the
# run (55 million in 60 s: most of a 24 GB machine's memory from its start),
# and the load offers no more: every order is held in memory, and a host fast
# enough to outrun the sizing made the tables double and the bench's recovery
# of the data folder run out of memory (docs/performance.md, "Measurements
# behind the constants").  A slower host gets what it can take; the limit is
# said when the load met it.
BATCH_LOAD_SIZED_FOR_ORDERS_PER_S = 900_000  # the default; --batch-orders-per-s sets another
# what a checkout sized for costs the engine process in memory, up front, and
# what the rest of a run needs beside it (the front, the clients, the page
# cache), both from the bench's own runs (docs/performance.md, "Measurements
# behind the constants")
SIZED_BYTES_PER_CHECKOUT = 336
BESIDE_THE_ENGINE_BYTES = 5 * 2**29  # 2.5 GiB
# The promotions mix's batch load runs at most this long unless told
# (--promo-seconds): before it, its coupons (0.7 a checkout) are granted over
# HTTP, off the clock, and a grant's args are checked in Python at the edge,
# far slower than the engine applies it
PROMO_LOAD_S_MAX = 10.0
# it plans its work ahead from the plain load's rate, with this much room:
# clients that run out of it stop early, and the rate is taken over their time
PROMO_WORK_OVER_PLAIN = 1.25
# the promotions mix sizes its server's tables for this many times its
# checkouts: its coupons, granted ahead, take idempotency keys and buyer rows too
PROMO_SIZING_FACTOR = 2
# The overload phase offers this many times single_orders_per_s, on this many
# connections: at twice a 20k/s server, 100 ms of requests in flight; more
# than the admission bound's floor (limits.admission_calls_in_flight_min), so
# that the front's admission is what holds the line, not the client's
# connections (with fewer, a closed loop in disguise, latency would stay
# connections / rate and nothing would ever be refused)
OVERLOAD_FACTOR = 2
OVERLOAD_CONNECTIONS = 4096
OVERLOAD_RSS_SAMPLE_S = 0.25
SLOWEST_SAID = 5  # the batch loads name their slowest requests and when they came
HOT_ITEMS_WATCHED = 50  # the batch clients stop ordering these once they read zero stock
HOT_ITEMS_POLL_S = 0.5


def _children_cpu_s() -> float:
    """CPU seconds of this process's ended children (wrk's loads)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def bench_catalog(args: argparse.Namespace):
    """The generated catalog, stocked for the run: the flash deals sell out
    about halfway, everything else lasts."""
    catalog = generate_catalog(merchants=args.merchants, skus=args.skus, seed=11)
    # demand at 1M checkouts/s of 1.5 lines each, and the single loads' of one line
    # (the single loads run in turn on one server: the first must not sell out the second's items)
    expected_lines = 1_000_000 * 1.5 * args.seconds + SINGLE_LOAD_SIZED_FOR_ORDERS_PER_S * single_phase_s(args)
    demand_units = popularity_weights(args.skus) * expected_lines * 1.6
    stock = np.ceil(demand_units * 2).astype(np.int64) + 10
    stock[:FLASH_DEALS] = np.ceil(demand_units[:FLASH_DEALS] * 0.5).astype(np.int64)
    catalog.sku_stock = stock
    return catalog


def single_phase_s(args: argparse.Namespace, overload: bool = True) -> float:
    """Seconds of single checkouts the single-request server takes in all
    (the overload phase's too: it runs on that server; not on the tokens
    load's server, overload=False)."""
    overload_s = (getattr(args, "overload_seconds", 0)
                  if overload and getattr(args, "overload", False) else 0)
    return SINGLE_ROUNDS * getattr(args, "single_seconds", 0) + SINGLE_WARM_UP_S + overload_s


def tokens_figures(without: list[float], with_tokens: list[float], cpu_without: list[float],
                   cpu_with: list[float]) -> dict:
    """What verifying tokens costs the single-request path: the mean rate
    with tokens, and its share below the mean without, both loaded in the
    same rounds (a drift of the host's speed weighs on both alike); each
    round's share too.  Beside them, from the servers' CPU time per accepted
    order (`cpu_` lists), the same share of the servers' own work: wrk
    shares the machine, and a token's header costs it too."""
    def mean(values: list[float]) -> float:
        return sum(values) / len(values) if values else 0.0

    mean_without, mean_with = mean(without), mean(with_tokens)
    cpu_mean_without, cpu_mean_with = mean(cpu_without), mean(cpu_with)
    return {
        "single_orders_per_s_tokens": round(mean_with),
        "tokens_cost_share": round(1 - mean_with / mean_without, 3) if mean_without else 0.0,
        "tokens_cost_pairs": [round(1 - w / o, 3) if o else 0.0 for o, w in zip(without, with_tokens)],
        "server_cpu_us_per_order": round(cpu_mean_without, 1),
        "server_cpu_us_per_order_tokens": round(cpu_mean_with, 1),
        "tokens_server_cpu_share": round(1 - cpu_mean_without / cpu_mean_with, 3) if cpu_mean_with else 0.0,
    }


def _process_tree(pid: int) -> Iterator[int]:
    """A process and its children, and theirs (the front and its engine), from /proc."""
    pids, seen = [pid], set()
    while pids:
        p = pids.pop()
        if p in seen:
            continue
        seen.add(p)
        yield p
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    pids.extend(int(c) for c in f.read().split())
        except (OSError, ValueError):
            continue


def process_tree_rss_bytes(pid: int) -> int:
    """The resident memory of a process and its children (the front and its
    engine), from /proc; 0 where the OS does not say."""
    total = 0
    for p in _process_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                total += next((int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:")), 0)
        except (OSError, ValueError):
            continue
    return total


def process_tree_cpu_s(pid: int) -> float:
    """The CPU seconds (user and system) a process and its children (the
    front and its engine) have used so far, from /proc; 0 where the OS does
    not say."""
    ticks = 0
    for p in _process_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()  # after the command's name, which may hold spaces
            ticks += int(fields[11]) + int(fields[12])
        except (OSError, ValueError, IndexError):
            continue
    return ticks / os.sysconf("SC_CLK_TCK")


def overload_phase(server: Server, catalog, args: argparse.Namespace, single_per_s: float) -> dict:
    """Single checkouts offered at OVERLOAD_FACTOR times `single_per_s` for
    args.overload_seconds by bench/overload.py's open-loop client (a process
    of its own), while the server's memory is sampled: the overload_ figures."""
    per_s = OVERLOAD_FACTOR * single_per_s
    say(f"overload: single checkouts offered at {per_s:,.0f}/s ({OVERLOAD_FACTOR} x {single_per_s:,.0f}) for "
        f"{args.overload_seconds:g} s on {OVERLOAD_CONNECTIONS} connections (an open loop):")
    request = json.dumps({"port": int(server.url.rsplit(":", 1)[1]), "per_s": per_s,
                          "seconds": args.overload_seconds, "connections": OVERLOAD_CONNECTIONS,
                          "skus": overload_skus(catalog), "run": 99})
    rss_start = process_tree_rss_bytes(server.proc.pid)
    rss_most = [rss_start]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(OVERLOAD_RSS_SAMPLE_S):
            rss_most[0] = max(rss_most[0], process_tree_rss_bytes(server.proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    busy_start = StolenTime.busy_ticks()
    try:
        done = subprocess.run([sys.executable, "-m", "double11.bench.overload"], input=request, capture_output=True,
                              text=True, env=child_env(), timeout=args.overload_seconds + 120)
    finally:
        sampling.set()
        sampler.join()
    busy_end = StolenTime.busy_ticks()
    if done.returncode != 0 or not done.stdout.strip():
        lines = done.stderr.strip().splitlines()
        raise RuntimeError(f"the overload client failed: {lines[-1] if lines else f'exit status {done.returncode}'}")
    got = json.loads(done.stdout)
    seconds = got["seconds"]
    accepted_per_s = got["accepted"] / seconds
    statuses = {int(k): v for k, v in got["statuses"].items()}
    # the client's share of the machine, and the whole machine's busy share over the phase
    machine_cpu_s = seconds * (os.cpu_count() or 1)
    busy_share = (round((busy_end[0] - busy_start[0]) / (busy_end[1] - busy_start[1]), 3)
                  if busy_start and busy_end and busy_end[1] > busy_start[1] else None)
    result = {
        "overload_offered_per_s": round(got["sent"] / seconds),
        "overload_goodput_share": round(accepted_per_s / single_per_s, 3) if single_per_s else 0.0,
        "overload_accepted_per_s": round(accepted_per_s),
        "overload_refused_per_s": round(got["refused"] / seconds),
        "overload_p99_ms": round(got["p99_ms"], 1),
        "overload_p50_ms": round(got["p50_ms"], 1),
        "overload_rss_growth_mb": round(max(0, rss_most[0] - rss_start) / 2**20, 1),
        "overload_5xx": sum(v for k, v in statuses.items() if k >= 500),
        "overload_statuses": got["statuses"],
        "overload_429_without_retry_after": got["retry_after_missing"],
        "overload_not_offered": got["not_offered"],
        "overload_cut": got["cut"] + got["unanswered"],
        "overload_client_cpu_share": round(got["cpu_s"] / machine_cpu_s, 3),
        "overload_machine_busy_share": busy_share,
        "overload_seconds": round(seconds, 1),
    }
    say(f"  offered {result['overload_offered_per_s']:,}/s ({got['not_offered']:,} moments found every connection "
        f"busy), accepted {result['overload_accepted_per_s']:,}/s ({result['overload_goodput_share']:.2f} of "
        f"{single_per_s:,.0f}), refused {result['overload_refused_per_s']:,}/s, statuses {got['statuses']}")
    say(f"  accepted p50 {result['overload_p50_ms']} ms, p99 {result['overload_p99_ms']} ms; server memory grew "
        f"{result['overload_rss_growth_mb']} MB; the client took {result['overload_client_cpu_share']:.0%} of the "
        f"machine's CPU" + (f", the machine was busy {busy_share:.0%} of the time" if busy_share is not None else ""))
    return result


def overload_skus(catalog) -> list[int]:
    """The overload client's SKU draws, by popularity (the single loads' Zipf)."""
    rng = np.random.default_rng(99)
    rows = rng.choice(len(catalog.sku_id), size=SINGLE_SKU_DRAWS, p=popularity_weights(len(catalog.sku_id)))
    return [int(s) for s in catalog.sku_id[rows]]


def engine_rate(catalog, seconds: float, batch: int, promotions: bool = False) -> float:
    """Commands a second through Engine.apply_all: the plain mix, or the
    promotions mix (its setup and its coupons' grants applied first, off the
    clock)."""
    compile_kernels()  # compiled, if not cached yet
    checkouts = int(1_500_000 * seconds)  # the work made ready: as many as the tables are sized for
    sized = checkouts + 1_000_000
    # the coupons granted ahead take idempotency keys and buyer rows too, about
    # 0.7 a checkout: sized for them, or the key index grows mid-run (a rehash
    # of tens of millions of keys: seconds, in the timed loop)
    engine = Engine(catalog, FestivalConfig(expected_checkouts=sized * PROMO_SIZING_FACTOR if promotions else sized,
                                            prefault_memory=True,
                                            expected_discounted_checkouts=sized if promotions else 0))
    # the clock times the engine alone: checkout batches are made ahead, and
    # each payment batch (it needs its checkouts' ids) off the clock; each
    # round gets fresh keys and buyers, so it is new work (not retries, not
    # known buyers); it ends after `seconds` of applying or when the work runs
    # out.  Batches go through Engine.apply_all, each one's lookups beside the
    # main loop of the one before, so a checkout batch's payments come a batch
    # later (checkouts 1, checkouts 2, payments 1, checkouts 3, payments 2...)
    rounds = max(8, checkouts // batch)
    if promotions:
        for setup in promo.setup_batches(catalog):
            promo.check_setup(setup, engine.apply(setup, FESTIVAL_START_MS)[0])
        mix = promo.PromoMix(catalog, seed=5)
        work = mix.work
        batches = promo.grant_ahead([mix.round(batch) for _ in range(rounds)],
                                    lambda grants: engine.apply(grants, FESTIVAL_START_MS))
    else:
        work = Workload(catalog.sku_id, seed=5)
        batches = [work.checkouts(batch) for _ in range(rounds)]
    is_checkout = [promo.checkouts_of(b) for b in batches]  # the promotions mix has grants beside them
    # of each batch fed, in order: which of its commands are checkouts (None: a payment batch)
    checkouts_fed: collections.deque[np.ndarray | None] = collections.deque()
    # (code, ref, which are checkouts) of each checkout batch applied, until its payments are made
    applied: collections.deque[tuple[np.ndarray, np.ndarray, np.ndarray]] = collections.deque()
    off_clock = 0.0
    started = time.perf_counter()

    def feed():
        nonlocal off_clock
        for k, checkout_batch in enumerate(batches):
            if time.perf_counter() - started - off_clock >= seconds:
                return
            checkouts_fed.append(is_checkout[k])
            yield checkout_batch, FESTIVAL_START_MS + 10 * k
            if k:  # the payments of the checkouts before (apply_all has answered those by now)
                paying = time.perf_counter()
                code, ref, of_checkouts = applied.popleft()
                ok = (code == Result.ok) & of_checkouts
                pays = work.pays(ref[ok], promo.payable_fen(engine, ref[ok] - 1))
                off_clock += time.perf_counter() - paying
                checkouts_fed.append(None)
                yield pays, FESTIVAL_START_MS + 10 * k

    commands = 0
    for code, ref in engine.apply_all(feed()):
        commands += len(code)
        fed = checkouts_fed.popleft()
        if fed is not None:
            applied.append((code, ref, fed))
    return commands / (time.perf_counter() - started - off_clock)


class Server:
    """`double11 serve` on the bench's catalog: open (the transaction core's
    figures), or, with tokens=True, taking tokens signed by the key it makes
    in its data folder (the tokens load); the bench's own calls to it then
    carry an operator's token."""

    def __init__(self, catalog_dir: Path, data_dir: Path, port: int, empty: bool = False,
                 expected_checkouts: int = 1 << 20, expected_discounted_checkouts: int = 0, tokens: bool = False):
        cmd = [sys.executable, "-m", "double11", "serve", "--catalog", str(catalog_dir), "--data", str(data_dir),
               "--port", str(port), "--clock-start", str(FESTIVAL_START_MS),
               "--expected-checkouts", str(expected_checkouts)]
        if not tokens:
            cmd.append("--open")
        if expected_discounted_checkouts:
            cmd += ["--expected-discounted-checkouts", str(expected_discounted_checkouts)]
        if empty:
            cmd.append("--empty")
        self.url = f"http://127.0.0.1:{port}"
        self.key = b""  # the key its tokens are signed with (tokens=True)
        self.headers: dict[str, str] = {}  # what the bench's own calls carry
        # it stops by itself if the bench dies first (child_env)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=child_env())
        deadline = time.time() + 180
        while time.time() < deadline:
            if self.proc.poll() is not None:  # it said why in its last line
                assert self.proc.stderr is not None
                lines = self.proc.stderr.read().decode(errors="replace").strip().splitlines()
                raise CommandFailed(f"the server on port {port} did not start: "
                                    f"{lines[-1] if lines else f'exit status {self.proc.returncode}'}", 1)
            try:  # a public route, answered once the festival is open
                urllib.request.urlopen(self.url + "/healthz", timeout=1).read()
            except OSError:
                time.sleep(0.3)
                continue
            if tokens:  # made by the server on its first start, before it answered
                self.key = access_tokens.load_or_create_key(access_tokens.key_path(data_dir))
                operator = access_tokens.issue(self.key, Role.operator, ttl_s=TOKEN_TTL_S)
                self.headers = {"Authorization": f"Bearer {operator}"}
            return
        self.stop()
        raise CommandFailed(f"the server on port {port} did not answer within 180 s", 1)

    def get(self, path: str) -> dict:
        return json.loads(self._read(path))

    def _read(self, path: str) -> bytes:
        request = urllib.request.Request(self.url + path, headers=self.headers)
        return urllib.request.urlopen(request, timeout=30).read()

    def table_grows(self, load: str, sized_for_orders_per_s: int) -> int:
        """How many times the engine's tables grew to take a batch (each a
        pause), said when any did during `load`."""
        text = self._read("/metrics").decode()
        grows = next(int(float(line.split()[1])) for line in text.splitlines()
                     if line.startswith("double11_table_grows_total "))
        if grows:
            say(f"  the engine's tables grew {grows} time(s) during {load}: a pause at each "
                f"(more than {sized_for_orders_per_s:,} orders/s)")
        return grows

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class OfferSchedule:
    """At most `per_s` items a second, offered from `start` until `stop`
    (perf_counter seconds), shared by threads: each takes the moment its
    items may go, after everything taken before them."""

    def __init__(self, start: float, stop: float, per_s: float) -> None:
        self.start, self.stop, self.per_s = start, stop, per_s
        self.offered = 0
        self._lock = threading.Lock()

    def take(self, items: int) -> float | None:
        """When these items may go; None once that is past the stop."""
        with self._lock:
            slot = self.start + self.offered / self.per_s
            if slot >= self.stop:
                return None
            self.offered += items
            return slot


def batch_load_sizing(orders_per_s: int, seconds: float) -> int:
    """The checkouts the batch load's server is sized for: the load's most over
    the run, and room for the single loads' stock draws (a million)."""
    return int(orders_per_s * seconds) + 1_000_000


def memory_available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (None where the OS does not say)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_batch_load_fits(orders_per_s: int, seconds: float, available_bytes: int | None) -> None:
    """A clear error, before anything runs, when the batch load's server would
    not fit in this machine's memory (it holds every order of the run)."""
    if orders_per_s <= 0:
        raise ValueError(f"--batch-orders-per-s must be positive, not {orders_per_s}")
    checkouts = batch_load_sizing(orders_per_s, seconds)
    need = checkouts * SIZED_BYTES_PER_CHECKOUT
    if available_bytes is not None and need + BESIDE_THE_ENGINE_BYTES > available_bytes:
        raise ValueError(
            f"{orders_per_s:,} orders/s for {seconds:g} s sizes the server for "
            f"{checkouts:,} checkouts: about {need / 2**30:.1f} GiB, and this "
            f"machine has {available_bytes / 2**30:.1f} GiB available ({BESIDE_THE_ENGINE_BYTES / 2**30:.1f} kept "
            f"for the rest of the run): lower --batch-orders-per-s or --seconds")


def batch_load(server: Server, catalog, args: argparse.Namespace, seconds: float | None = None,
               ready: promo.MadeAhead | None = None) -> dict:
    """The gateway-like clients' load for `seconds` (args.seconds unless
    told): fresh checkouts of the plain mix, or the batches `ready` holds
    (the promotions mix, made ahead: its checkouts spend coupons granted
    before), until they run out."""
    seconds = args.seconds if seconds is None else seconds
    counts = {"checkouts": 0, "payments": 0, "paid_fen": 0, "commands": 0}
    latencies: list[float] = []
    sent_at: list[float] = []  # each request's start, s into the load (for the slowest few)
    lock = threading.Lock()
    started = time.perf_counter()
    stop_at = started + seconds
    schedule = OfferSchedule(started, stop_at, args.batch_orders_per_s)
    per_batch = args.batch if ready is None else ready.checkouts_per_batch
    waited_s = [0.0]  # the clients' time spent waiting for their slots
    port = int(server.url.rsplit(":", 1)[1])

    def post(conn, body: bytes) -> dict:
        t = time.perf_counter()
        conn.request("POST", "/v1/batch", body=body, headers={"Content-Type": BINARY})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"batch answered {resp.status}: {data[:300]!r}")
        with lock:
            latencies.append((time.perf_counter() - t) * 1000)
            sent_at.append(t - started)
        return decode_results(data)

    sold_out: list[int] = []  # hot SKUs seen at zero stock, shared by the clients
    read_ms: list[float] = []  # the watcher's reads, each from its request to its answer

    def watch_hot_items() -> None:
        # what a phone's product page shows: the hottest items' stock, polled
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        hot = [int(s) for s in catalog.sku_id[:HOT_ITEMS_WATCHED]]
        while time.perf_counter() < stop_at:
            for sku in hot:
                if sku not in sold_out:
                    t = time.perf_counter()
                    conn.request("GET", f"/v1/skus/{sku}")
                    resp = conn.getresponse()
                    read_ms.append((time.perf_counter() - t) * 1000)  # a read waits for what it saw to be durable
                    if resp.status == 200 and json.loads(resp.read())["stock"] == 0:
                        sold_out.append(sku)
                    else:
                        resp.read()
            time.sleep(HOT_ITEMS_POLL_S)
        conn.close()

    def client(k: int) -> None:
        work = Workload(catalog.sku_id, seed=100 + k, key_space=k + 1)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        known_sold_out = 0
        while time.perf_counter() < stop_at:
            slot = schedule.take(per_batch)
            if slot is None:
                break
            wait_s = slot - time.perf_counter()
            if wait_s > 0:
                time.sleep(wait_s)
                with lock:
                    waited_s[0] += wait_s
            if ready is None:
                if len(sold_out) > known_sold_out:
                    known_sold_out = len(sold_out)
                    work.drop_skus(np.array(sold_out[:known_sold_out], dtype=np.int64))
                checkouts = work.checkouts(args.batch)
                ok = np.ones(len(checkouts), dtype=bool)
            else:
                made = ready.take(sold_out[:])
                if made is None:  # the work made ahead ran out
                    break
                checkouts = made
                ok = promo.checkouts_of(checkouts)
            res = post(conn, checkouts.to_bytes())
            ok &= res["code"] == Result.ok
            pays = work.pays(res["ref"][ok], res["amount_fen"][ok])
            paid = post(conn, pays.to_bytes())
            paid_ok = paid["code"] == Result.ok
            with lock:
                counts["checkouts"] += int(ok.sum())
                counts["payments"] += int(paid_ok.sum())
                counts["paid_fen"] += int(paid["amount_fen"][paid_ok].sum())
                counts["commands"] += len(checkouts) + len(pays)
        conn.close()

    freeze_what_exists()  # a full collection here (the catalog's names...) would read as the server's latency
    clients = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(args.connections)]
    watcher = threading.Thread(target=watch_hot_items, daemon=True)
    for t in clients + [watcher]:
        t.start()
    last = (started, 0, 0)
    while any(t.is_alive() for t in clients):
        time.sleep(min(5.0, max(0.1, stop_at - time.perf_counter())))
        now = time.perf_counter()
        with lock:
            c, p = counts["checkouts"], counts["payments"]
        say(f"  {now - started:5.1f} s  orders/s {(c - last[1]) / (now - last[0]):>10,.0f}"
            f"  payments/s {(p - last[2]) / (now - last[0]):>10,.0f}")
        last = (now, c, p)
    for t in clients:
        t.join()
    elapsed = time.perf_counter() - started  # the clients' time, not the stock watcher's last poll
    watcher.join()
    lat = np.array(latencies) if latencies else np.zeros(1)
    # the p99 is the slowest 1% of some thousands of requests: say when the slowest came
    slowest: list[int] = np.argsort(-lat)[:SLOWEST_SAID].tolist() if latencies else []
    say("  slowest requests: " + ", ".join(f"{lat[k]:.1f} ms at {sent_at[k]:.1f} s" for k in slowest))
    return {
        "orders_per_s": counts["checkouts"] / elapsed,
        "payments_per_s": counts["payments"] / elapsed,
        "batch_p50_ms": float(np.percentile(lat, 50)),
        "batch_p99_ms": float(np.percentile(lat, 99)),
        "batch_commands": args.batch,
        "checkouts": counts["checkouts"],
        "payments": counts["payments"],
        "paid_fen": counts["paid_fen"],
        "seconds": elapsed,
        "held_share": waited_s[0] / (elapsed * args.connections),
        "read_p50_ms": float(np.percentile(read_ms, 50)) if read_ms else 0.0,
        "read_p99_ms": float(np.percentile(read_ms, 99)) if read_ms else 0.0,
    }


def _post_batch(conn: http.client.HTTPConnection, batch: CommandBatch) -> dict[str, np.ndarray]:
    conn.request("POST", "/v1/batch", body=batch.to_bytes(), headers={"Content-Type": BINARY})
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200:
        raise RuntimeError(f"batch answered {resp.status}: {data[:300]!r}")
    return decode_results(data)


def promotions_batch_load(server: Server, catalog, args: argparse.Namespace, plain_orders_per_s: float,
                          seconds: float) -> dict:
    """The promotions mix against a fresh server: its setup, the coupons its
    checkouts will spend granted over HTTP (off the clock), then the timed
    load as batch_load's (checkouts spending them, the game's grants beside
    them, the payments of the accepted ones)."""
    port = int(server.url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    for setup in promo.setup_batches(catalog):
        promo.check_setup(setup, _post_batch(conn, setup)["code"])
    conn.close()
    batch = min(args.batch, int(limits.batch_commands_max / (1 + promo.GAME_GRANT_SHARE)))
    offered = min(args.batch_orders_per_s, plain_orders_per_s * PROMO_WORK_OVER_PLAIN) * seconds
    mix = promo.PromoMix(catalog, seed=7, key_space=1 << 20)
    rounds = [mix.round(batch) for _ in range(max(2, int(np.ceil(offered / batch))))]
    started = time.perf_counter()
    spent: list[CommandBatch | None] = [None] * len(rounds)  # each round as it will be sent
    failures: list[BaseException] = []

    def grant(k: int) -> None:
        client = http.client.HTTPConnection("127.0.0.1", port, timeout=600)

        def apply(grants: CommandBatch) -> tuple[np.ndarray, np.ndarray]:
            res = _post_batch(client, grants)
            return res["code"], res["ref"]

        try:
            spent[k::args.connections] = promo.grant_ahead(rounds[k::args.connections], apply)
        except (OSError, RuntimeError) as e:  # said once, below, as the bench's one line
            failures.append(e)
        finally:
            client.close()

    granting = [threading.Thread(target=grant, args=(k,), daemon=True) for k in range(args.connections)]
    for t in granting:
        t.start()
    for t in granting:
        t.join()
    grants = sum(len(r.pre_grants) for r in rounds)
    granted_s = time.perf_counter() - started
    if failures or any(b is None for b in spent):
        raise RuntimeError(f"granting the promotions mix's coupons failed: {failures[0] if failures else 'no answer'}")
    ready = promo.MadeAhead([b for b in spent if b is not None], catalog, HOT_ITEMS_WATCHED)
    say(f"  {grants:,} coupons granted ahead for {len(rounds) * batch:,} checkouts in {granted_s:.1f} s "
        f"({grants / granted_s:,.0f}/s), off the clock")
    rounds.clear()  # their grants are spent into `ready`: the memory goes back before the load
    load = batch_load(server, catalog, args, seconds=seconds, ready=ready)
    if len(ready) == 0 and load["seconds"] < seconds * 0.95:
        say(f"  the work made ahead ran out after {load['seconds']:.1f} s")
    load.update(pre_grants=grants, pre_grant_s=granted_s, batch_checkouts=batch)
    return load


# A request is its line and headers, made once (per buyer, with a token), then
# its Content-Length and body: wrk.format's bytes, without building the headers
# again for every request (the client shares the machine with the server: building
# a token's header for every request took from the server the CPU time that the
# tokens load is there to measure)
WRK_SCRIPT = """
local skus = {%(skus)s}
local countries = {%(countries)s}
local n = 0
local body_format = '{"buyer":%%d,"country":"%%s","channel":"%%s","lines":[{"sku":%%d,"qty":1}],' ..
  '"idempotency_key":"wrk-%(run)d-%%d"}'
local head = "POST /v1/checkouts HTTP/1.1\\r\\nHost: %(host)s\\r\\nContent-Type: application/json\\r\\n"
-- each load its own buyers (LuaJIT's generator starts from the same seed in every process)
math.randomseed(%(run)d)
%(buyers)s
function request()
  n = n + 1
  local channel = "mobile"
  if math.random() < 0.1 then channel = "pc" end
  local buyer, heads = pick_buyer()
  local body = string.format(body_format,
    buyer, countries[math.random(#countries)], channel, skus[math.random(#skus)], n)
  return heads .. "Content-Length: " .. #body .. "\\r\\n\\r\\n" .. body
end
"""
# any buyer, no token (a server served --open)
ANY_BUYER = """
function pick_buyer()
  return math.random(1, 50000000), head
end
"""
# a buyer of the pool and its token, together, from a file of lines "<buyer> <token>"
BUYER_WITH_TOKEN = """
local buyers, with_tokens = {}, {}
local walk, k = %(walk)s, 0  -- walk: each buyer in turn
for line in io.lines("%(tokens_file)s") do
  local buyer, token = line:match("^(%%d+) (%%S+)$")
  buyers[#buyers + 1] = tonumber(buyer)
  with_tokens[#with_tokens + 1] = head .. "Authorization: Bearer " .. token .. "\\r\\n"
end
function pick_buyer()
  if walk then k = k %% #buyers + 1 else k = math.random(#buyers) end
  return buyers[k], with_tokens[k]
end
"""


def buyer_tokens_file(key: bytes, path: Path, buyers: int = TOKEN_BUYERS, seed: int = 23) -> Path:
    """A pool of `buyers` distinct buyers, each with a buyer token signed by
    `key` (a server's), written to `path` for wrk's script (lines
    "<buyer> <token>")."""
    rng = np.random.default_rng(seed)
    ids = rng.choice(50_000_000, size=buyers, replace=False) + 1
    with open(path, "w") as f:
        for buyer in ids.tolist():
            f.write(f"{buyer} {access_tokens.issue(key, Role.buyer, buyer, ttl_s=TOKEN_TTL_S)}\n")
    return path


def check_takes_tokens(server: Server, tokens_file: Path, sku: int) -> None:
    """The first buyer of `tokens_file` checks out `sku` with its token: a
    server that refuses the pool's tokens is said before the loads, not
    measured as a slow one (every refusal would count as not accepted)."""
    first_buyer, first_token = tokens_file.read_text().split("\n", 1)[0].split(" ")
    body = json.dumps({"buyer": int(first_buyer), "country": "CN", "channel": "mobile",
                       "lines": [{"sku": sku, "qty": 1}], "idempotency_key": "bench-tokens-check"}).encode()
    request = urllib.request.Request(server.url + "/v1/checkouts", data=body, method="POST", headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {first_token}"})
    try:
        urllib.request.urlopen(request, timeout=30).read()
    except urllib.error.HTTPError as e:
        raise CommandFailed(f"the server refused a buyer's own checkout with its token: {e.code} "
                            f"{e.read()[:300].decode(errors='replace')}", 1) from None


def _wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        say("  installing wrk (Debian package) for the single-request load ...")
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False, stdout=subprocess.DEVNULL)
        path = shutil.which("wrk")
    if path is None:
        raise RuntimeError("wrk is needed for the single-request load: apt-get install wrk")
    return path


def allow_open_files(connections: int) -> None:
    """wrk and the server each hold a socket per connection, beyond the
    files a process keeps open anyway: the soft limit on open files (often
    1,024) is raised, for this process and the ones it starts, up to the
    hard limit; past that, a clear error before any load starts."""
    want = connections + OPEN_FILES_BESIDE_CONNECTIONS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            raise RuntimeError(f"{connections} connections need {want} open files, and the hard limit is {hard}: "
                               "lower --single-connections or raise the limit (ulimit -Hn)")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def single_load(url: str, catalog, seconds: float, run: int, workdir: Path, connections: int,
                tokens_file: Path | None = None, walk: bool = False) -> float:
    """Accepted single checkouts a second from wrk for `seconds`: any buyers
    without a token, or the buyers of `tokens_file` (buyer_tokens_file),
    each request with its buyer's token, a buyer drawn at random (walk: each
    in turn, every one before any twice)."""
    script = workdir / f"single-{run}{'-tokens' if tokens_file is not None else ''}.lua"
    script.write_text(single_load_script(url, catalog, run, tokens_file, walk))
    out = subprocess.run([_wrk(), "-t1", f"-c{connections}", f"-d{max(1, int(seconds))}s", "-s", str(script),
                          url + "/v1/checkouts"],
                         capture_output=True, text=True, check=True).stdout
    rate = next(float(line.split()[1]) for line in out.splitlines() if line.startswith("Requests/sec"))
    errors = next((int(line.split()[-1]) for line in out.splitlines() if "Non-2xx" in line), 0)
    total = next(int(line.split()[0]) for line in out.splitlines() if "requests in" in line)
    # answers that were not 2xx (sold out items: 409) are real work too, but only accepted orders count
    return rate * (total - errors) / total if total else 0.0


def single_load_script(url: str, catalog, run: int, tokens_file: Path | None = None, walk: bool = False) -> str:
    """wrk's script for single_load: checkouts of SKUs drawn by popularity
    (seeded by `run`), by any buyers or by the buyers of `tokens_file` with
    their tokens."""
    rng = np.random.default_rng(run)
    rows = rng.choice(len(catalog.sku_id), size=SINGLE_SKU_DRAWS, p=popularity_weights(len(catalog.sku_id)))
    buyers = (ANY_BUYER if tokens_file is None
              else BUYER_WITH_TOKEN % {"tokens_file": tokens_file, "walk": "true" if walk else "false"})
    return WRK_SCRIPT % {
        "buyers": buyers,
        "host": url.split("://", 1)[1],
        "skus": ",".join(str(int(s)) for s in catalog.sku_id[rows]),
        "countries": ",".join(f'"{c}"' for c in
                              ["CN"] * 17 + ["US", "RU", "ES", "FR", "HK", "TW", "JP", "KR", "SG", "MY"]),
        "run": run,
    }


def check_invariants(data_dir: Path, paid_fen_seen: int,
                     more_checks: Callable[[Engine, dict], dict[str, bool]] | None = None) -> dict:
    """The data folder recovered and its invariants checked; `more_checks`
    (the engine, its ledger's view) adds an area's."""
    from double11.service import Festival

    started = time.perf_counter()
    festival = Festival.open(data_dir=data_dir)
    recovery_s = time.perf_counter() - started
    try:
        return {**festival_invariants(festival, paid_fen_seen, more_checks), "recovery_s": recovery_s}
    finally:
        festival.close()


def festival_invariants(festival, paid_fen_seen: int,
                        more_checks: Callable[[Engine, dict], dict[str, bool]] | None = None) -> dict:
    """A festival's invariants (its engine, ledger and figures) and its state's size."""
    e = festival.engine
    # reserved is recounted from the unpaid checkouts' lines, so the sum is a real check
    reserved = e.reserved_by_checkouts()
    stock_ok = bool((e.available >= 0).all() and (e.sku_sold >= 0).all()
                    and (e.available + reserved + e.sku_sold == e.sku_stocked).all())
    ledger = festival.ledger()
    paid = np.flatnonzero(e.c_status.data[:e.checkouts.size] == Status.paid)
    gmv_ok = e.stats.gmv_fen == int(promo.payable_fen(e, paid).sum())  # what the buyers paid
    checks = {
        "no_oversell_and_units_conserved": stock_ok,
        "ledger_sums_to_zero": ledger["sum"] == 0,
        "gmv_equals_paid_checkouts": gmv_ok,
        "client_saw_every_payment": e.stats.gmv_fen >= paid_fen_seen,
    }
    if more_checks is not None:
        checks.update(more_checks(e, ledger))
    state_bytes = festival.state_bytes()
    orders = max(1, e.stats.checkouts)
    return {"checks": checks, "bytes_per_order": state_bytes / orders,
            "recovered_checkouts": e.stats.checkouts, "state_bytes": state_bytes, "orders": e.stats.orders,
            "sku_stocked": e.sku_stocked.copy()}


def promotions_phase(catalog_dir: Path, workdir: Path, catalog, args: argparse.Namespace,
                     plain_orders_per_s: float, steal: dict[str, float | None]) -> dict:
    """The promotions mix's batch load on a fresh server of the same catalog
    (the plain one is stopped: its memory is back), then its data folder
    recovered and checked with the promotions' invariants: the promo_ figures."""
    seconds = getattr(args, "promo_seconds", None) or min(args.seconds, PROMO_LOAD_S_MAX)
    say(f"promotions mix over HTTP for {seconds:g} s (threshold, store coupons, red packets, flash deals, grants):")
    sizing = batch_load_sizing(args.batch_orders_per_s, seconds)
    server = Server(catalog_dir, workdir / "promo-data", args.port, expected_checkouts=sizing * PROMO_SIZING_FACTOR,
                    expected_discounted_checkouts=sizing)
    try:
        with _stolen_during("promo_batch_load", steal):
            load = promotions_batch_load(server, catalog, args, plain_orders_per_s, seconds)
        grows = server.table_grows("the promotions' setup, grants and load", args.batch_orders_per_s)
    finally:
        server.stop()
    say("recovering the promotions' data folder and checking invariants ...")
    audit = check_invariants(workdir / "promo-data", load["paid_fen"], more_checks=promo.promotion_checks)
    shutil.rmtree(workdir / "promo-data", ignore_errors=True)
    say(f"  recovered {audit['recovered_checkouts']:,} checkouts in {audit['recovery_s']:.1f} s: {audit['checks']}")
    return {
        "promo_orders_per_s": round(load["orders_per_s"]),
        "promo_payments_per_s": round(load["payments_per_s"]),
        "promo_batch_p99_ms": round(load["batch_p99_ms"], 1),
        "promo_batch_p50_ms": round(load["batch_p50_ms"], 1),
        "promo_invariants_ok": all(audit["checks"].values()),
        "promo_invariants": audit["checks"],
        "promo_checkouts": load["checkouts"],
        "promo_seconds": round(load["seconds"], 1),
        "promo_pre_grants": load["pre_grants"],
        "promo_pre_grant_s": round(load["pre_grant_s"], 1),
        "promo_table_grows": grows,
    }


class StolenTime:
    """The share of the machine's CPU time that its hypervisor gave to other
    guests (/proc/stat's steal) since this was made: on a shared VM, figures
    are comparable only at a like share (None where the OS does not say)."""

    def __init__(self) -> None:
        self._start = self._times()

    @staticmethod
    def _times() -> tuple[int, int] | None:
        try:
            with open("/proc/stat") as f:
                ticks = [int(t) for t in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        return sum(ticks[:8]), ticks[7] if len(ticks) > 7 else 0  # user..steal; guest time is inside user

    @staticmethod
    def busy_ticks() -> tuple[int, int] | None:
        """(busy, all) CPU ticks of the machine so far (/proc/stat: all but idle and iowait)."""
        try:
            with open("/proc/stat") as f:
                ticks = [int(t) for t in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        return sum(ticks[:8]) - ticks[3] - ticks[4], sum(ticks[:8])

    def share(self) -> float | None:
        end = self._times()
        if self._start is None or end is None or end[0] == self._start[0]:
            return None
        return round((end[1] - self._start[1]) / (end[0] - self._start[0]), 3)


@contextlib.contextmanager
def _stolen_during(phase: str, shares: dict[str, float | None]):
    """Records (and says) the host's steal share over the block, as shares[phase]."""
    stolen = StolenTime()
    yield
    share = shares[phase] = stolen.share()
    if share is not None:
        say(f"  the host took {share:.1%} of this machine's CPU time meanwhile (steal)")


def bench_main(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="double11-bench-"))
    if getattr(args, "single_connections", None) is None:
        args.single_connections = SINGLE_CONNECTIONS
    if getattr(args, "batch_orders_per_s", None) is None:
        args.batch_orders_per_s = BATCH_LOAD_SIZED_FOR_ORDERS_PER_S
    try:
        try:
            check_batch_load_fits(args.batch_orders_per_s, args.seconds, memory_available_bytes())
            allow_open_files(max(args.single_connections,
                                 OVERLOAD_CONNECTIONS if getattr(args, "overload", False) else 0))
            # its three servers' ports, said now rather than after the catalog is made
            check_ports_free("127.0.0.1", [args.port, args.port + 1, args.port + 2])
        except (ValueError, RuntimeError) as e:  # before anything runs: said, not a traceback
            say(f"double11 bench: {e}")
            return 2
        say(f"double11 bench: {args.skus:,} skus of {args.merchants:,} merchants, {os.cpu_count()} cores")
        catalog = bench_catalog(args)
        catalog_dir = workdir / "catalog"
        save_catalog(catalog, catalog_dir, fmt="parquet")
        steal: dict[str, float | None] = {}
        # single requests and the empty handler first: each on a fresh server of
        # the same catalog, both up at once, loaded in turn twice (single, empty,
        # single, empty), so that a drift of this shared machine's speed weighs on
        # both alike.  First, because the later phases free tens of gigabytes,
        # which this VM's balloon hands back to the host, and the host's faults
        # as pages came back into use slowed what ran next (more CPU time
        # stolen, a lower share of the empty handler: docs/performance.md,
        # "The bench's own order")
        single_server = Server(catalog_dir, workdir / "single-data", args.port + 2,
                               expected_checkouts=int(SINGLE_LOAD_SIZED_FOR_ORDERS_PER_S * single_phase_s(args)))
        empty_server = tokens_server = None
        singles: list[float] = []
        empties: list[float] = []
        with_tokens: list[float] = []
        # the servers' CPU time per accepted order (µs) in each counted load, with tokens and without
        cpu_per_order: dict[Server, list[float]] = {}
        tokens_file: Path | None = None
        try:
            empty_server = Server(catalog_dir, workdir / "empty-data", args.port + 1, empty=True)
            if getattr(args, "tokens", True):
                # on the batch load's port, free until that server starts
                tokens_server = Server(catalog_dir, workdir / "tokens-data", args.port, tokens=True,
                                       expected_checkouts=int(SINGLE_LOAD_SIZED_FOR_ORDERS_PER_S
                                                              * single_phase_s(args, overload=False)))
                tokens_file = buyer_tokens_file(tokens_server.key, workdir / "buyer-tokens.txt")
                check_takes_tokens(tokens_server, tokens_file, int(catalog.sku_id[-1]))
            say(f"single checkouts per HTTP request (wrk, {args.single_connections} connections, "
                f"{args.single_seconds:.0f} s) and the same on the empty handler, {SINGLE_ROUNDS} pairs, "
                f"every other one empty first" + (f"; between them, the same with {TOKEN_BUYERS:,} buyers' tokens "
                                                  f"on a server that takes tokens" if tokens_server else "") + ":")
            # (rates, server, its buyers' tokens), in the order of a round; the rounds alternate it
            servers: list[tuple[list[float], Server, Path | None]] = [(singles, single_server, None)]
            if tokens_server is not None:
                servers.append((with_tokens, tokens_server, tokens_file))
            servers.append((empties, empty_server, None))
            with _stolen_during("singles", steal):
                # the tokens load walks its buyers: each token verified before the counted loads
                warm = [single_load(server.url, catalog, SINGLE_WARM_UP_S, 0, workdir, args.single_connections,
                                    buyers, walk=True) for _, server, buyers in servers]
                say(f"  (first {SINGLE_WARM_UP_S} s each, not counted: {warm[0]:,.0f} accepted orders/s; "
                    + (f"with tokens {warm[1]:,.0f}; " if tokens_server else "")
                    + f"empty handler {warm[-1]:,.0f} requests/s)")
                if tokens_server is not None and warm[1] * SINGLE_WARM_UP_S < TOKEN_BUYERS:
                    say(f"  (that reached {warm[1] * SINGLE_WARM_UP_S:,.0f} of the {TOKEN_BUYERS:,} buyers: the first "
                        f"counted loads with tokens verify the others' tokens)")
                wrk_cpu_before, counted_from = _children_cpu_s(), time.perf_counter()
                for run in range(SINGLE_ROUNDS):
                    # a round's loads of checkouts draw the same SKUs (the same seed); the empty handler others
                    for rates, server, buyers in (servers if run % 2 == 0 else servers[::-1]):
                        seed = 2 + 2 * run if server is empty_server else 1 + 2 * run
                        cpu_s = process_tree_cpu_s(server.proc.pid)
                        rates.append(single_load(server.url, catalog, args.single_seconds, seed, workdir,
                                                 args.single_connections, buyers))
                        orders = rates[-1] * max(1, int(args.single_seconds))  # wrk's -d
                        if orders and server is not empty_server:
                            cpu_per_order.setdefault(server, []).append(
                                (process_tree_cpu_s(server.proc.pid) - cpu_s) / orders * 1e6)
                    say(f"  {singles[-1]:,.0f} accepted orders/s; "
                        + (f"with tokens {with_tokens[-1]:,.0f} (costs {1 - with_tokens[-1] / singles[-1]:+.3f}); "
                           if with_tokens else "")
                        + f"empty handler {empties[-1]:,.0f} requests/s ({singles[-1] / empties[-1]:.3f})")
                # wrk's share of the machine (the servers still run: only wrk's ended processes are counted)
                wrk_cpu_share = round((_children_cpu_s() - wrk_cpu_before)
                                      / ((time.perf_counter() - counted_from) * (os.cpu_count() or 1)), 3)
                say(f"  wrk took {wrk_cpu_share:.0%} of the machine's CPU")
                if tokens_server is not None:
                    cpu_without, cpu_with = (cpu_per_order.get(single_server, []),
                                             cpu_per_order.get(tokens_server, []))
                    if cpu_without and cpu_with:
                        say(f"  the servers' CPU time per accepted order: {sum(cpu_without) / len(cpu_without):.1f} µs "
                            f"without tokens, {sum(cpu_with) / len(cpu_with):.1f} µs with them")
            overload_result: dict = {}
            if getattr(args, "overload", False):
                with _stolen_during("overload", steal):
                    overload_result = overload_phase(single_server, catalog, args, sum(singles) / len(singles))
                overload_result["single_client_cpu_share"] = wrk_cpu_share
            single_table_grows = single_server.table_grows("the single loads", SINGLE_LOAD_SIZED_FOR_ORDERS_PER_S)
            tokens_table_grows = (tokens_server.table_grows("the loads with tokens", SINGLE_LOAD_SIZED_FOR_ORDERS_PER_S)
                                  if tokens_server is not None else 0)
        finally:
            single_server.stop()
            if empty_server is not None:
                empty_server.stop()
            if tokens_server is not None:
                tokens_server.stop()
        say("engine, in-process (no HTTP, no disk):")
        with _stolen_during("engine", steal):
            engine_cps = engine_rate(catalog, min(10.0, args.seconds), args.batch)
            say(f"  {engine_cps:,.0f} commands/s")
        promo_engine_cps = 0.0
        if getattr(args, "promotions", True):
            say("engine with the promotions mix, in-process (setup and coupons granted first, off the clock):")
            with _stolen_during("promo_engine", steal):
                promo_engine_cps = engine_rate(catalog, min(10.0, args.seconds), args.batch, promotions=True)
                say(f"  {promo_engine_cps:,.0f} commands/s")
        say(f"batch load over HTTP for {args.seconds:.0f} s (binary batches of {args.batch:,}, fsync on):")
        # sized for the run, so that no table grows mid-run (growing doubles a
        # table and copies it: a pause of seconds).  A faster engine outran
        # each smaller sizing by the end of a run, so the server is sized for
        # what the load may offer, and the load offers no more than that
        # (batch_load; docs/performance.md, "Measurements behind the constants")
        server = Server(catalog_dir, workdir / "data", args.port,
                        expected_checkouts=batch_load_sizing(args.batch_orders_per_s, args.seconds))
        try:
            with _stolen_during("batch_load", steal):
                load = batch_load(server, catalog, args)
            if load["held_share"] > 0.02:
                say(f"  the clients waited {load['held_share']:.0%} of their time for their slots: the load offers "
                    f"at most {args.batch_orders_per_s:,} checkouts/s (what the server's memory is sized for over "
                    f"the run)")
            table_grows = server.table_grows("the load", args.batch_orders_per_s)
        finally:
            server.stop()
        say("recovering the data folder and checking invariants ...")
        audit = check_invariants(workdir / "data", load["paid_fen"])
        say(f"  recovered {audit['recovered_checkouts']:,} checkouts in {audit['recovery_s']:.1f} s: {audit['checks']}")
        promo_result = {}
        if getattr(args, "promotions", True):
            shutil.rmtree(workdir / "data", ignore_errors=True)  # checked: its disk goes back before the next
            promo_result = promotions_phase(catalog_dir, workdir, catalog, args, load["orders_per_s"], steal)
            promo_result["promo_engine_commands_per_s"] = round(promo_engine_cps)
        single, empty = sum(singles) / len(singles), sum(empties) / len(empties)
        result = {
            "orders_per_s": round(load["orders_per_s"]),
            "payments_per_s": round(load["payments_per_s"]),
            "batch_p99_ms": round(load["batch_p99_ms"], 1),
            "batch_p50_ms": round(load["batch_p50_ms"], 1),
            "read_p99_ms": round(load["read_p99_ms"], 2),  # a hot SKU's view during the batch load
            "read_p50_ms": round(load["read_p50_ms"], 2),
            "single_orders_per_s": round(single),
            "empty_handler_per_s": round(empty),
            "single_vs_empty": round(single / empty, 3) if empty else 0.0,
            "single_vs_empty_pairs": [round(s / e, 3) if e else 0.0 for s, e in zip(singles, empties)],
            "single_connections": args.single_connections,
            "engine_commands_per_s": round(engine_cps),
            "bytes_per_order": round(audit["bytes_per_order"]),
            "orders_in_24_gb": int(24 * 2**30 / audit["bytes_per_order"]),
            "batch_load_held_share": round(load["held_share"], 3),
            "table_grows": table_grows,
            "single_table_grows": single_table_grows,
            "invariants_ok": all(audit["checks"].values()),
            "invariants": audit["checks"],
            "checkouts": load["checkouts"],
            "payments": load["payments"],
            "seconds": round(load["seconds"], 1),
            "recovery_s": round(audit["recovery_s"], 1),
            "cores": os.cpu_count(),
            "host_steal_share": steal,
        }
        if with_tokens and tokens_server is not None:
            result.update(tokens_figures(singles, with_tokens, cpu_per_order.get(single_server, []),
                                         cpu_per_order.get(tokens_server, [])), tokens_table_grows=tokens_table_grows)
        result.update(overload_result)
        if promo_result:
            result.update(promo_result)
            result["promo_vs_plain"] = (round(promo_result["promo_orders_per_s"] / result["orders_per_s"], 3)
                                        if result["orders_per_s"] else 0.0)
        if args.json:
            print(json.dumps(result))
        else:
            for k, v in result.items():
                print(f"{k:>24}: {v}")
        return 0 if result["invariants_ok"] and result.get("promo_invariants_ok", True) else 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
