"""`double11 simulate --url URL`: send a simulated festival day to a running server."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable

import httpx
import numpy as np

from double11.cli import float_in, non_negative_int, positive_float
from double11.lifecycle import interrupt_on_stop_signals, on_stop_signals
from double11.simulator import plan as plans
from double11.simulator.client import Simulation, measure_speedup, read_stats
from double11.simulator.progress import ProgressBar
from double11.simulator.schedule import ReplayRefused, ServerDay, lag_warning, refusal, start_line
from double11.simulator.tally import Tally
from double11.simulator.years import YEARS, profile

# At 1/10,000 of 2017 the day is ~190,000 checkouts, ~150,000 payments and a peak of
# ~25 payments per festival second: 24 hours in 24 minutes (speed-up 60) keeps a
# 2-core laptop running the server, the simulator and a browser comfortably busy.
DEFAULT_SCALE = 1e-4
DEFAULT_SEED = 11
DEFAULT_YEAR = 2017
# `double11 serve` without --catalog generates this demo catalog (http/server.py)
SERVER_DEMO_CATALOG = {"merchants": 2000, "skus": 20000, "seed": 11}


def add_traffic_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scale", type=float_in(0.0, 1.0), default=DEFAULT_SCALE,
                        help=f"share of the real festival's traffic to simulate (default {DEFAULT_SCALE:g})")
    parser.add_argument("--seed", type=non_negative_int, default=DEFAULT_SEED, help="the same seed gives the same day")
    parser.add_argument("--year", type=int, default=DEFAULT_YEAR, choices=sorted(YEARS),
                        help="the festival to imitate (default 2017)")
    parser.add_argument("--catalog", help="the catalog folder the server was started with")
    parser.add_argument("--hours", type=float_in(0.0, 24.0), default=24.0,
                        help="replay only the first HOURS of the day (default 24)")


def load_view(catalog_dir: str | None) -> plans.CatalogView:
    if catalog_dir:
        from double11.catalog.files import load_catalog

        return plans.CatalogView.of(load_catalog(catalog_dir))
    from double11.catalog.generate import generate_catalog

    return plans.CatalogView.of(generate_catalog(**SERVER_DEMO_CATALOG))


def bearer(token: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"} if token else {}


async def check_same_catalog(http: httpx.AsyncClient, view: plans.CatalogView,
                             headers: dict[str, str] | None = None) -> None:
    """The plan names SKUs by id and expects the server's prices: refuse a mismatch early."""
    sku = int(view.sku_id[0])
    r = await http.get(f"/v1/skus/{sku}", headers=headers)
    if r.status_code in (401, 403):
        raise SystemExit(f"the server refused the simulator's token ({r.json()['error']['message']}): pass "
                         "--operator-token (an operator's: double11 tokens issue --role operator)")
    if r.status_code != 200 or r.json().get("price_fen") != int(view.price_fen[0]):
        raise SystemExit("the server's catalog is not the one given to the simulator: pass the same --catalog")


async def simulate(url: str, view: plans.CatalogView, plan: plans.Plan, speedup: float | None,
                   on_progress=None, stop: asyncio.Event | None = None,
                   hours: float = 24.0,
                   on_start: Callable[[ServerDay, float], None] | None = None,
                   token: str | None = None, operator_token: str | None = None) -> tuple[Tally, dict]:
    """Replay the plan against the server at url; (tally, the server's last stats).
    `token`: a gateway's, for the buyers' commands; `operator_token`: for the
    operators' (the promotions, the catalog check); none for a server --open.
    Raises ReplayRefused, having sent nothing, when the server's day is too far on
    (schedule.refusal).  `on_start(day, speedup)` is called before anything is sent.
    SIGINT, SIGTERM or SIGHUP sets `stop`: nothing new is sent, and what is in
    flight is answered (off the main thread, the caller stops us)."""
    stop = stop or asyncio.Event()
    with on_stop_signals(asyncio.get_running_loop(), stop.set):
        return await _replay(url, view, plan, speedup, on_progress, stop, hours, on_start, token, operator_token)


async def _replay(url: str, view: plans.CatalogView, plan: plans.Plan, speedup: float | None, on_progress,
                  stop: asyncio.Event, hours: float,
                  on_start: Callable[[ServerDay, float], None] | None, token: str | None,
                  operator_token: str | None) -> tuple[Tally, dict]:
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
    async with httpx.AsyncClient(base_url=url, timeout=60.0, limits=limits, headers=bearer(token)) as http:
        await check_same_catalog(http, view, bearer(operator_token or token))
        day = ServerDay.of((await read_stats(http))[0])
        why = refusal(day, hours, plan)
        if why is not None:
            raise ReplayRefused(why)
        # the server's word on its pace first: a measured pace is only as good as the wait
        speedup = day.speedup or speedup or await measure_speedup(http)
        if on_start is not None:
            on_start(day, speedup)
        sim = Simulation(plan, view, http, speedup, on_progress, hours, bearer(operator_token))
        tally = await sim.run(stop)
        return tally, sim.stats


def simulate_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="double11 simulate", description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:1111", help="the server (default http://127.0.0.1:1111)")
    parser.add_argument("--speedup", type=positive_float,
                        help="the server's --speedup, for a server whose stats do not say it "
                             "(default: its stats' word, else measured from its clock)")
    parser.add_argument("--summary", help="write what the server acknowledged to this JSON file")
    parser.add_argument("--token", default=os.environ.get("DOUBLE11_TOKEN"),
                        help="a gateway's token, for the buyers' commands (default: $DOUBLE11_TOKEN)")
    parser.add_argument("--operator-token", default=os.environ.get("DOUBLE11_OPERATOR_TOKEN"),
                        help="an operator's token, for the promotions and the catalog check "
                             "(default: $DOUBLE11_OPERATOR_TOKEN)")
    add_traffic_options(parser)
    args = parser.parse_args(argv)
    interrupt_on_stop_signals()  # SIGTERM and SIGHUP: as Ctrl-C
    started = time.monotonic()
    view = load_view(args.catalog)
    plan = plans.build(profile(args.year), args.scale, args.seed, view)

    def announce(day: ServerDay, speedup: float) -> None:
        print(start_line(args.year, args.scale, plan, args.hours, speedup, day), file=sys.stderr, flush=True)

    bar = ProgressBar(args.scale, hours=args.hours)
    try:
        tally, stats = asyncio.run(simulate(args.url.rstrip("/"), view, plan, args.speedup, bar,
                                            hours=args.hours, on_start=announce, token=args.token,
                                            operator_token=args.operator_token))
    except ReplayRefused as refused:
        print(f"double11 simulate: {refused}", file=sys.stderr)
        return 2
    bar.finish()
    warning = lag_warning(tally.max_lag_ms, tally.speedup)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    summary = tally.summary(args.scale)
    summary["real_seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(summary, indent=2))
    if args.summary:
        with open(args.summary, "w") as f:
            json.dump(summary, f, indent=2)
    return 0


def expected_main(argv: list[str]) -> int:
    """The plan's figures without a server (python -m double11.simulator.cli)."""
    parser = argparse.ArgumentParser(prog="double11.simulator.cli")
    add_traffic_options(parser)
    args = parser.parse_args(argv)
    view = load_view(args.catalog)
    plan = plans.build(profile(args.year), args.scale, args.seed, view)
    figures = plans.expected_figures(plan, view)
    print(json.dumps(figures, indent=2, default=lambda x: x.item() if isinstance(x, np.generic) else str(x)))
    return 0


if __name__ == "__main__":
    sys.exit(expected_main(sys.argv[1:]))
