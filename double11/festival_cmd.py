"""`double11 festival`: replay a festival day live on this machine.

Starts the server in a subprocess (its festival clock a few real seconds before
midnight, running --speedup times real time), prints the big screen's address,
sends the simulated day over HTTP with a progress bar, then prints the
end-of-day report.  Ctrl-C, SIGTERM or SIGHUP stops sending, waits for the
answers to what is in flight, and stops the server with SIGTERM, which makes
everything acknowledged durable before it exits.  The server stops when this
command ends, however it ends (lifecycle.follow_parent).
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

from double11.cli import port_number, positive_float
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


def _start_server(args, data: Path, catalog_dir: str) -> subprocess.Popen:
    start_ms = FestivalConfig().festival_start_ms - int(PREROLL_REAL_S * args.speedup * 1000)
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
    args = _parser().parse_args(argv)
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
    gateway, operator = _tokens(data / "log", args.hours / args.speedup)
    server = _start_server(args, data, catalog_dir)
    try:
        print("starting the server (the first start on a machine also compiles the engine: about half a "
              "minute)", file=sys.stderr, flush=True)
        _wait_ready(server, url, data)
        print(f"big screen: {url}/?scale={args.scale:g}&year={args.year}", flush=True)
        print(f"operator token (curl -H 'Authorization: Bearer <token>' {url}/v1/...): {operator}", flush=True)
        print(start_line(args.year, args.scale, plan, args.hours, args.speedup) + "; Ctrl-C stops cleanly",
              file=sys.stderr, flush=True)
        bar = ProgressBar(args.scale, hours=args.hours)
        try:
            tally, stats = asyncio.run(simulate(url, view, plan, args.speedup, bar, hours=args.hours,
                                                token=gateway, operator_token=operator))
        except ReplayRefused as refused:  # its own server's day: only if it started far too slowly
            print(f"double11 festival: {refused}", file=sys.stderr, flush=True)
            return 2
        bar.finish()
        warning = lag_warning(tally.max_lag_ms, tally.speedup)
        if warning:
            print(f"warning: {warning}", file=sys.stderr, flush=True)
        summary = tally.summary(args.scale)
        (data / "simulator.json").write_text(json.dumps(summary, indent=2))
        from double11.report.cli import write_report

        # tally.hours: those asked for, or those it got through when stopped early
        write_report(stats, summary, args.scale, args.year, Path(args.report or data / "report.html"), tally.hours)
        if args.linger:
            asyncio.run(_linger(url))
    finally:
        code = stop_server(server)
        print(f"server stopped ({code}); data in {data}{os.sep}", file=sys.stderr)
    return 0
