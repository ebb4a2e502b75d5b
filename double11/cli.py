"""The `double11` command line: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime


def _clock_start(text: str | None) -> int | None:
    """--clock-start takes epoch milliseconds or an ISO 8601 time with its offset."""
    if text is None:
        return None
    if text.lstrip("-").isdigit():
        return int(text)
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def _serve(args: argparse.Namespace) -> int:
    from double11.http.server import serve_main

    return serve_main(args.catalog, args.data, args.port, args.speedup, _clock_start(args.clock_start),
                      host=args.host, empty=args.empty, expected_checkouts=args.expected_checkouts,
                      scale=args.scale, config_path=args.config)


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
    from double11.bench.run import bench_main

    return bench_main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="double11", description="A Singles' Day-scale shopping festival platform.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the transaction core over HTTP (embedded: an HTTP process and an engine process, local data)")
    serve.add_argument("--catalog", help="catalog folder (CSV or Parquet); default: a generated demo catalog")
    serve.add_argument("--data", default="./data", help="data folder: command log and snapshots (default ./data)")
    serve.add_argument("--port", type=int, default=1111)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--speedup", type=float, default=1.0, help="festival clock runs this many times real time")
    serve.add_argument("--clock-start", help="festival clock start: epoch ms or ISO time (default: now)")
    serve.add_argument("--config", help="festival configuration, TOML or JSON (see double11/config.py)")
    serve.add_argument("--scale", help="a simulated festival at this fraction of real size (merchant clubs scale)")
    serve.add_argument("--expected-checkouts", type=int, help="size the tables for this many checkouts up front")
    serve.add_argument("--empty", action="store_true", help=argparse.SUPPRESS)  # bench: empty handler
    serve.set_defaults(run=_serve)

    catalog = sub.add_parser("catalog", help="catalog tools").add_subparsers(dest="catalog_command", required=True)
    gen = catalog.add_parser("generate", help="write a realistic generated catalog")
    gen.add_argument("out")
    gen.add_argument("--merchants", type=int, default=100_000)
    gen.add_argument("--skus", type=int, default=1_000_000)
    gen.add_argument("--seed", type=int, default=11)
    gen.add_argument("--returning-buyers", type=int, default=0)
    gen.add_argument("--format", choices=("csv", "parquet"), default="csv")
    gen.set_defaults(run=_catalog_generate)

    bench = sub.add_parser("bench", help="festival-peak benchmark: server + load client on this machine")
    bench.add_argument("--seconds", type=float, default=60.0, help="how long the batch load runs")
    bench.add_argument("--single-seconds", type=float, default=10.0, help="how long each single-request load runs")
    bench.add_argument("--single-connections", type=int,
                       help="wrk connections of the single-request loads (default: bench.run.SINGLE_CONNECTIONS, 2048)")
    bench.add_argument("--skus", type=int, default=1_000_000)
    bench.add_argument("--merchants", type=int, default=100_000)
    # batch size and connections trade throughput against latency: a bigger batch gained
    # little throughput for a worse p99 (docs/performance.md, "Measurements behind the constants")
    bench.add_argument("--batch", type=int, default=20_480, help="commands per batch request")
    bench.add_argument("--connections", type=int, default=2, help="batch client connections (a gateway pipelining its batches)")
    bench.add_argument("--batch-orders-per-s", type=int,
                       help="the most checkouts a second the batch load offers, and what its server is sized for: "
                            "it holds every order in memory (default: bench.run.BATCH_LOAD_SIZED_FOR_ORDERS_PER_S, "
                            "900,000)")
    bench.add_argument("--port", type=int, default=1199)
    bench.add_argument("--json", action="store_true", help="print the final figures as one JSON object")
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in _DELEGATED:
        # these parse their own options (argparse's REMAINDER would not pass them on)
        import importlib

        module, function = _DELEGATED[argv[0]]
        return int(getattr(importlib.import_module(module), function)(argv[1:]) or 0)
    args = build_parser().parse_args(argv)
    return int(args.run(args) or 0)
