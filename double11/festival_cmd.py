"""`double11 festival`: replay a festival day live on this machine.

Starts the server in a subprocess (its festival clock a few real seconds before
midnight, running --speedup times real time), prints the big screen's address,
sends the simulated day over HTTP with a progress bar, then prints the
end-of-day report.  Ctrl-C, SIGTERM or SIGHUP stops sending, waits for the
answers to what is in flight, and stops the server with SIGTERM, which makes
everything acknowledged durable before it exits.  The server stops when this
command ends, however it ends (lifecycle.follow_parent).

With --cluster the day runs on a local cluster instead (festival_cluster.py):
NATS, --units units each with a primary and a standby, the quota rebalancer
and the cluster's HTTP front on the same port; the same replay, promotions,
big screen and report.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from double11 import limits
from double11.cli import int_in, port_number, positive_float
from double11.config import FestivalConfig
from double11.lifecycle import (
    CommandFailed,
    check_ports_free,
    child_env,
    data_dir_user,
    interrupt_on_stop_signals,
    on_stop_signals,
)
from double11.simulator import mixes
from double11.simulator import plan as plans
from double11.simulator.cli import add_traffic_options, load_view, simulate
from double11.simulator.progress import ProgressBar
from double11.simulator.schedule import ReplayRefused, lag_warning, start_line
from double11.simulator.years import profile

DEFAULT_SPEEDUP = 60.0  # 24 hours in 24 minutes
DEFAULT_PORT = 1111
# The generated catalog: enough merchants for the clubs of 2017 to form.
CATALOG_MERCHANTS, CATALOG_SKUS = 10_000, 100_000
# The server's clock starts this many real seconds before midnight, so it is
# listening before the midnight rush (which peaks 5 minutes 22 seconds in).
PREROLL_REAL_S = 5.0
# the first start on a machine compiles the engine (25-30 s here) before it answers
SERVER_READY_S = 180.0
SERVER_STOP_S = 30.0
# a local cluster starts in seconds on a quiet machine, in more than a minute on a busy one
CLUSTER_START_S = 60.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="double11 festival", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speedup", type=positive_float, default=DEFAULT_SPEEDUP,
                        help="festival seconds per real second (default 60: the day in 24 minutes)")
    parser.add_argument("--port", type=port_number, default=DEFAULT_PORT)
    parser.add_argument("--data", help="folder for the catalog, the command log and the report "
                                       "(default: a new folder under ./data)")
    parser.add_argument("--report", help="write the HTML report here (default DATA/report.html)")
    parser.add_argument("--linger", action="store_true",
                        help="keep the server and big screen up after the day, until Ctrl-C")
    parser.add_argument("--cluster", action="store_true",
                        help="run the day on a local cluster (NATS and units by buyer) rather than one server")
    parser.add_argument("--units", type=int_in(1, limits.local_cluster_units_max), default=None,
                        help="with --cluster: the cluster's units (default 2)")
    parser.add_argument("--cluster-start-s", type=positive_float, default=None,
                        help=f"with --cluster: real seconds its start may take; the festival's midnight comes "
                             f"that long plus {PREROLL_REAL_S:g} s after the command starts "
                             f"(default {CLUSTER_START_S:g})")
    add_traffic_options(parser)
    return parser


def _catalog(args, data: Path) -> tuple[plans.CatalogView, str]:
    if args.catalog:
        return load_view(args.catalog), args.catalog
    from double11.catalog.files import save_catalog
    from double11.catalog.generate import generate_catalog

    year = profile(args.year)
    # past buyers: about as many as the day's buyers, so most buyers return and some are new
    returning = int(year.payments * args.scale / year.conversion / mixes.CHECKOUTS_PER_BUYER)
    catalog = generate_catalog(merchants=CATALOG_MERCHANTS, skus=CATALOG_SKUS, seed=args.seed,
                               returning_buyers=returning)
    folder = data / "catalog"
    save_catalog(catalog, folder)
    return plans.CatalogView.of(catalog), str(folder)


def _tokens(log_dir: Path, real_hours: float) -> tuple[str, str]:
    """A gateway's token for the simulator and an operator's for the
    person at the keyboard, from the festival's key (made here, before the
    server's first start, which then takes it), valid for the run and a day."""
    from double11.access import tokens
    from double11.access.roles import Role

    ttl_s = int(real_hours * 3600) + 86_400
    return tokens.issue_in(log_dir, Role.gateway, ttl_s=ttl_s), tokens.issue_in(log_dir, Role.operator, ttl_s=ttl_s)


def _clock_start_ms(speedup: float) -> int:
    return FestivalConfig().festival_start_ms - int(PREROLL_REAL_S * speedup * 1000)


def _start_server(args, data: Path, catalog_dir: str) -> subprocess.Popen:
    start_ms = _clock_start_ms(args.speedup)
    cmd = [sys.executable, "-m", "double11", "serve", "--port", str(args.port),
           "--data", str(data / "log"), "--speedup", f"{args.speedup:g}",
           "--clock-start", str(start_ms), "--catalog", catalog_dir, "--scale", f"{args.scale:g}"]
    # its own session: Ctrl-C in the terminal reaches only us, and we stop the
    # server ourselves once the answers to everything in flight are in; it
    # stops by itself if we die first (child_env)
    with open(data / "server.log", "ab") as log:  # the server holds its own copy of the file
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env=child_env())


def _wait_ready(server: subprocess.Popen, url: str, data: Path) -> None:
    deadline = time.monotonic() + SERVER_READY_S
    while time.monotonic() < deadline:
        if server.poll() is not None:  # it said why in its last line
            lines = (data / "server.log").read_text(errors="replace").strip().splitlines()
            raise CommandFailed(f"the server did not start ({lines[-1] if lines else 'no word from it'}; "
                                f"its log: {data / 'server.log'})", 1)
        try:
            if httpx.get(url + "/v1/stats", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise CommandFailed(f"the server did not answer within {SERVER_READY_S:.0f} s "
                        f"(its log: {data / 'server.log'})", 1)


class _Server:
    """`double11 serve` in a subprocess, as the festival runs it on one machine."""

    def __init__(self, args, data: Path, catalog_dir: str) -> None:
        self.data = data
        self.process = _start_server(args, data, catalog_dir)

    def wait_ready(self, url: str) -> None:
        print("starting the server (the first start on a machine also compiles the engine: about half a "
              "minute)", file=sys.stderr, flush=True)
        _wait_ready(self.process, url, self.data)

    def settled_stats(self, stats: dict, summary: dict) -> dict:
        return stats  # one engine's stats hold every answer it gave

    def stop(self) -> str:
        return f"server stopped ({stop_server(self.process)})"


class _Cluster:
    """The day's local cluster (festival_cluster.py), started in this process."""

    def __init__(self, args, data: Path, catalog_dir: str, plan: plans.Plan) -> None:
        from double11.festival_cluster import FestivalCluster  # NATS's client only when asked for

        self.args, self.catalog_dir = args, catalog_dir
        self.midnight_real_ms = time.time_ns() // 1_000_000 + int((args.cluster_start_s + PREROLL_REAL_S) * 1000)
        # each unit's tables sized for twice its share of the day, so none grows mid-rush
        self.expected_checkouts = max(2 * len(plan) // args.units, 1 << 12)
        self.cluster = FestivalCluster(data / "cluster", args.units, args.port, args.speedup)

    def wait_ready(self, url: str) -> None:
        print(f"starting a local cluster ({self.args.units} units, 3 NATS nodes); the festival's midnight comes in "
              f"{self.args.cluster_start_s + PREROLL_REAL_S:g} s", file=sys.stderr, flush=True)
        self.cluster.start(self.catalog_dir, _clock_start_ms(self.args.speedup), self.midnight_real_ms,
                           self.expected_checkouts, self.args.scale)

    def settled_stats(self, stats: dict, summary: dict) -> dict:
        return self.cluster.settled_stats(stats, summary)

    def stop(self) -> str:
        return self.cluster.stop()


def stop_server(server: subprocess.Popen) -> int:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(SERVER_STOP_S)
        except subprocess.TimeoutExpired:
            # its session: the front and the engine (the log keeps what was acknowledged)
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    return server.returncode


async def _linger(url: str) -> None:
    stop = asyncio.Event()
    with on_stop_signals(asyncio.get_running_loop(), stop.set):
        print(f"the day is over; the big screen stays up at {url}/ until Ctrl-C", file=sys.stderr)
        await stop.wait()


def festival_main(argv: list[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.cluster:
        for flag, value in (("--units", args.units), ("--cluster-start-s", args.cluster_start_s)):
            if value is not None:
                parser.error(f"{flag} is for a day on a cluster: add --cluster")
    args.units = args.units or 2
    args.cluster_start_s = CLUSTER_START_S if args.cluster_start_s is None else args.cluster_start_s
    interrupt_on_stop_signals()  # SIGTERM and SIGHUP: as Ctrl-C
    check_ports_free("127.0.0.1", [args.port])  # said now, not after the catalog and the server's start
    data = Path(args.data or Path("data") / time.strftime("festival-%Y%m%d-%H%M%S"))
    try:
        data.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise CommandFailed(f"--data {data} is a file, not a folder") from None
    user = data_dir_user(data / "log")
    if user is not None:  # before its catalog is written over
        raise CommandFailed(f"--data {data} is in use by a running festival ({user}): stop it or pass another --data")
    year = profile(args.year)
    view, catalog_dir = _catalog(args, data)
    plan = plans.build(year, args.scale, args.seed, view)  # before the server's clock runs
    url = f"http://127.0.0.1:{args.port}"
    gateway, operator = _tokens(data / ("cluster" if args.cluster else "log"), args.hours / args.speedup)
    server: _Server | _Cluster = _Cluster(args, data, catalog_dir, plan) if args.cluster else \
        _Server(args, data, catalog_dir)
    try:
        server.wait_ready(url)
        print(f"big screen: {url}/?scale={args.scale:g}&year={args.year}", flush=True)
        print(f"operator token (curl -H 'Authorization: Bearer <token>' {url}/v1/...): {operator}", flush=True)
        print(start_line(args.year, args.scale, plan, args.hours, args.speedup) + "; Ctrl-C stops cleanly",
              file=sys.stderr, flush=True)
        bar = ProgressBar(args.scale, hours=args.hours)
        try:
            tally, stats = asyncio.run(simulate(url, view, plan, args.speedup, bar, hours=args.hours,
                                                token=gateway, operator_token=operator))
        except ReplayRefused as refused:  # its own server's day: only if it started far too slowly
            hint = f" (the cluster took more than --cluster-start-s {args.cluster_start_s:g} to start)" \
                if args.cluster else ""
            print(f"double11 festival: {refused}{hint}", file=sys.stderr, flush=True)
            return 2
        bar.finish()
        warning = lag_warning(tally.max_lag_ms, tally.speedup)
        if warning:
            print(f"warning: {warning}", file=sys.stderr, flush=True)
        summary = tally.summary(args.scale)
        (data / "simulator.json").write_text(json.dumps(summary, indent=2))
        from double11.report.cli import write_report

        stats = server.settled_stats(stats, summary)
        # tally.hours: those asked for, or those it got through when stopped early
        write_report(stats, summary, args.scale, args.year, Path(args.report or data / "report.html"), tally.hours)
        if args.linger:
            asyncio.run(_linger(url))
    finally:
        print(f"{server.stop()}; data in {data}{os.sep}", file=sys.stderr)
    return 0
