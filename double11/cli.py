"""The `double11` command line: one entry point, one subcommand per job.

A mistake (a bad option, a file that cannot be read, a port in use, a server
that is not running) is answered with one line on stderr and a non-zero exit
status, never a traceback; an unexpected exception still shows its traceback.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable
from datetime import datetime
from fractions import Fraction

from double11 import limits
from double11.errors import Double11Error
from double11.lifecycle import CommandFailed, follow_parent, interrupt_on_stop_signals

INTERRUPTED_STATUS = 130  # a shell's status for a command stopped by SIGINT


# ------------------------------------------------- option types: argparse says what is wrong
def int_in(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number from low to high (no upper bound if None)."""
    def parse(text: str) -> int:
        try:
            value = int(text.replace("_", ""))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            bound = f"{low:,} to {high:,}" if high is not None else f"at least {low:,}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value
    parse.__name__ = "whole number"
    return parse


positive_int = int_in(1)
non_negative_int = int_in(0)
port_number = int_in(1, 65_535)


def float_in(low: float, high: float | None = None, low_allowed: bool = False) -> Callable[[str], float]:
    """An argparse type: a number above low (or from low, if low_allowed), at most high."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        above = value >= low if low_allowed else value > low
        if not above or value == float("inf") or (high is not None and value > high):
            bound = f"{'at least' if low_allowed else 'more than'} {low:g}"
            raise argparse.ArgumentTypeError(f"must be {bound}{f' and at most {high:g}' if high is not None else ''}, "
                                             f"got {text}")
        return value
    parse.__name__ = "number"
    return parse


positive_float = float_in(0.0)
non_negative_float = float_in(0.0, low_allowed=True)


def positive_fraction(text: str) -> str:
    """--scale: a positive fraction (0.001, 1/1000), kept as written."""
    try:
        value = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or a fraction like 1/1000") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return text


def clock_start(text: str) -> int:
    """--clock-start takes epoch milliseconds or an ISO 8601 time with its offset."""
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        return int(datetime.fromisoformat(text).timestamp() * 1000)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither epoch milliseconds nor an ISO 8601 time "
                                         f"(like 2017-11-11T00:00:00+08:00)") from None


def existing_folder(text: str) -> str:
    if not os.path.isdir(text):
        problem = "is not a folder" if os.path.exists(text) else "does not exist"
        raise argparse.ArgumentTypeError(f"{text} {problem}")
    return text


def _serve(args: argparse.Namespace) -> int:
    from double11.http.server import serve_main

    if args.config:  # a bad file is said now, not after the engine's start
        from double11.config import load_config

        load_config(args.config)
    return serve_main(args.catalog, args.data, args.port, args.speedup, args.clock_start,
                      host=args.host, empty=args.empty, expected_checkouts=args.expected_checkouts,
                      expected_discounted_checkouts=args.expected_discounted_checkouts, scale=args.scale,
                      config_path=args.config, open_access=args.open, token_key=args.token_key,
                      buyer_commands_per_s=args.buyer_commands_per_s, buyer_burst=args.buyer_burst)


def _catalog_generate(args: argparse.Namespace) -> int:
    import time

    from double11.catalog.files import save_catalog
    from double11.catalog.generate import generate_catalog

    started = time.perf_counter()
    catalog = generate_catalog(merchants=args.merchants, skus=args.skus, seed=args.seed,
                               returning_buyers=args.returning_buyers)
    save_catalog(catalog, args.out, fmt=args.format)
    print(f"wrote {catalog.merchants:,} merchants, {catalog.brands:,} brands "
          f"({int(catalog.brand_international.sum()):,} international), {catalog.skus:,} skus "
          f"to {args.out} in {time.perf_counter() - started:.1f} s")
    return 0


def _bench(args: argparse.Namespace) -> int:
    if args.cluster:
        from double11.bench.cluster import cluster_bench

        return cluster_bench(args)
    from double11.bench.run import bench_main

    return bench_main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="double11", description="A Singles' Day-scale shopping festival platform.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the transaction core over HTTP (embedded: an HTTP process and an "
                                         "engine process, local data)")
    serve.add_argument("--catalog", type=existing_folder,
                       help="catalog folder (CSV or Parquet); default: a generated demo catalog, "
                            "written to DATA/catalog")
    serve.add_argument("--data", default="./data", help="data folder: command log and snapshots (default ./data)")
    serve.add_argument("--port", type=port_number, default=1111)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--speedup", type=non_negative_float, default=1.0,
                       help="festival clock runs this many times real time (0: it stands still)")
    serve.add_argument("--clock-start", type=clock_start,
                       help="festival clock start: epoch ms or ISO time (default: now)")
    serve.add_argument("--config", help="festival configuration, TOML or JSON (see double11/config.py)")
    serve.add_argument("--scale", type=positive_fraction,
                       help="a simulated festival at this fraction of real size (merchant clubs scale)")
    serve.add_argument("--expected-checkouts", type=positive_int,
                       help="size the tables for this many checkouts up front")
    serve.add_argument("--expected-discounted-checkouts", type=positive_int,
                       help="size the promotions' tables for this many checkouts with discounts or coupons "
                            "(and as many coupons) up front")
    serve.add_argument("--token-key", help="the file of the festival's token key (default: DATA/access.key, "
                                           "made on the first start)")
    serve.add_argument("--open", action="store_true",
                       help="take no tokens: every route open to whoever reaches the port (a trial on your own "
                            "machine; never on a network)")
    serve.add_argument("--buyer-commands-per-s", type=float_in(0, limits.buyer_commands_per_s_max),
                       default=limits.buyer_commands_per_s_default,
                       help="a buyer token's commands a second, refilled up to --buyer-burst; past them, 429 "
                            f"rate_limited with Retry-After (default {limits.buyer_commands_per_s_default})")
    serve.add_argument("--buyer-burst", type=int_in(1, limits.buyer_commands_per_s_max),
                       default=limits.buyer_burst_commands_default,
                       help=f"a buyer token's commands at once (default {limits.buyer_burst_commands_default})")
    serve.add_argument("--empty", action="store_true", help=argparse.SUPPRESS)  # bench: empty handler
    serve.set_defaults(run=_serve)

    catalog = sub.add_parser("catalog", help="catalog tools").add_subparsers(dest="catalog_command", required=True)
    gen = catalog.add_parser("generate", help="write a realistic generated catalog")
    gen.add_argument("out")
    gen.add_argument("--merchants", type=int_in(1, limits.catalog_merchants_max), default=100_000)
    gen.add_argument("--skus", type=int_in(1, limits.catalog_skus_max), default=1_000_000)
    gen.add_argument("--seed", type=non_negative_int, default=11)
    gen.add_argument("--returning-buyers", type=non_negative_int, default=0)
    gen.add_argument("--format", choices=("csv", "parquet"), default="csv")
    gen.set_defaults(run=_catalog_generate)

    from double11.access.cli import add_commands as add_token_commands

    add_token_commands(sub)
    from double11.storage.cli import add_commands as add_log_commands

    add_log_commands(sub)
    from double11.cluster.cli import add_commands as add_cluster_commands

    add_cluster_commands(sub)

    bench = sub.add_parser("bench", help="festival-peak benchmark: server + load client on this machine")
    bench.add_argument("--seconds", type=positive_float, default=60.0, help="how long the batch load runs")
    bench.add_argument("--single-seconds", type=positive_float, default=10.0,
                       help="how long each single-request load runs")
    bench.add_argument("--single-connections", type=positive_int,
                       help="wrk connections of the single-request loads (default: bench.run.SINGLE_CONNECTIONS, 2048)")
    bench.add_argument("--skus", type=int_in(1, limits.catalog_skus_max), default=1_000_000)
    bench.add_argument("--merchants", type=int_in(1, limits.catalog_merchants_max), default=100_000)
    # batch size and connections trade throughput against latency: a bigger batch gained
    # little throughput for a worse p99 (docs/performance.md, "Measurements behind the constants")
    bench.add_argument("--batch", type=int_in(1, limits.batch_commands_max), default=20_480,
                       help="commands per batch request")
    bench.add_argument("--connections", type=positive_int, default=2,
                       help="batch client connections (a gateway pipelining its batches)")
    bench.add_argument("--batch-orders-per-s", type=positive_int,
                       help="the most checkouts a second the batch load offers, and what its server is sized for: "
                            "it holds every order in memory (default: bench.run.BATCH_LOAD_SIZED_FOR_ORDERS_PER_S, "
                            "900,000; with --cluster, the cluster's load is then offered at this rate too, and "
                            "without it, as fast as the cluster answers)")
    bench.add_argument("--no-promotions", dest="promotions", action="store_false",
                       help="skip the promotions mix (coupons, threshold, flash deals) for a quicker run")
    bench.add_argument("--promo-seconds", type=positive_float,
                       help="how long the promotions mix's batch load runs (default: --seconds, at most "
                            "bench.run.PROMO_LOAD_S_MAX: its coupons are granted over HTTP before it)")
    bench.add_argument("--overload-seconds", type=positive_float, default=30.0,
                       help="how long the overload phase offers single checkouts at twice single_orders_per_s")
    bench.add_argument("--no-overload", dest="overload", action="store_false",
                       help="skip the overload phase")
    bench.add_argument("--no-tokens", dest="tokens", action="store_false",
                       help="skip the single-request loads with tokens (what verifying them costs)")
    bench.add_argument("--port", type=int_in(1, 65_533), default=1199, help="the first of three ports it takes")
    bench.add_argument("--json", action="store_true", help="print the final figures as one JSON object")
    bench.add_argument("--cluster", action="store_true",
                       help="the batch load on a local cluster (3 NATS nodes, --units units with standbys, the "
                            "rebalancer) beside one machine's, then SIGKILLs under load (docs/cluster.md)")
    bench.add_argument("--units", type=int_in(1, 8), default=2, help="the cluster's units (with --cluster)")
    bench.add_argument("--no-single", dest="single", action="store_false",
                       help="with --cluster: skip the one-machine load run beside it")
    bench.set_defaults(run=_bench)

    # listed here for --help; `main` hands their arguments to them untouched
    for name, text in (
        ("festival", "replay a festival day live: server, simulator, big screen"),
        ("simulate", "send a simulated festival day to a running server"),
        ("report", "write the end-of-day report"),
    ):
        sub.add_parser(name, help=text, add_help=False)
    return parser


_DELEGATED = {
    "festival": ("double11.festival_cmd", "festival_main"),
    "simulate": ("double11.simulator.cli", "simulate_main"),
    "report": ("double11.report.cli", "report_main"),
}


def _run(argv: list[str]) -> int:
    if argv and argv[0] in _DELEGATED:
        # these parse their own options (argparse's REMAINDER would not pass them on)
        import importlib

        module, function = _DELEGATED[argv[0]]
        return int(getattr(importlib.import_module(module), function)(argv[1:]) or 0)
    args = build_parser().parse_args(argv)
    return int(args.run(args) or 0)


def _command(argv: list[str]) -> str:
    words = argv[:2] if argv[:1] in (["catalog"], ["log"], ["cluster"]) else argv[:1]
    return " ".join(["double11", *(w for w in words if not w.startswith("-"))])


def _os_error(e: OSError) -> str:
    if e.filename is not None and e.strerror:
        return f"{e.filename}: {e.strerror}"
    return e.strerror or str(e)


def _transport_error(e: BaseException) -> str | None:
    """What a failed HTTP call says, if it is one (httpx is loaded only by the commands that call)."""
    httpx = sys.modules.get("httpx")
    if httpx is None or not isinstance(e, httpx.TransportError):
        return None
    try:
        where = f"{e.request.url.scheme}://{e.request.url.netloc.decode()}"
    except RuntimeError:  # no request attached
        where = "the server"
    return f"cannot reach {where} ({e or type(e).__name__}): is the server running there?"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    follow_parent(signal.SIGTERM)  # started by festival or bench: stop with them
    interrupt_on_stop_signals()  # SIGTERM and SIGHUP stop a command the way Ctrl-C does
    command = _command(argv)
    try:
        return _run(argv)
    except CommandFailed as e:
        status, message = e.status, str(e)
    except Double11Error as e:  # a bad catalog or configuration file: its detail says what and where
        status, message = 2, e.detail or str(e)
    except OSError as e:
        status, message = 1, _os_error(e)
    except KeyboardInterrupt:
        status, message = INTERRUPTED_STATUS, "stopped"
    except Exception as e:
        transport = _transport_error(e)
        if transport is None:
            raise  # a bug: its traceback is what it needs
        status, message = 1, transport
    print(f"{command}: {message}", file=sys.stderr, flush=True)
    return status
