"""`double11 report --url URL --out FILE.html`: the festival's results, in the form of
the press release, next to the imitated year's figures."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import httpx

from double11.report.render import html_report, text_report
from double11.simulator.years import YEARS


def write_report(stats: dict, summary: dict | None, scale: float | None, year: int, out: Path,
                 hours: float | None = None) -> None:
    """Print the report and write its HTML page."""
    print(text_report(stats, year, scale, summary, hours))
    out.write_text(html_report(stats, year, scale, summary, hours), encoding="utf-8")
    print(f"\nreport written to {out}")


def report_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="double11 report", description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:1111", help="the server (default http://127.0.0.1:1111)")
    parser.add_argument("--out", default="report.html", help="the HTML file to write (default report.html)")
    parser.add_argument("--scale", type=float,
                        help="the simulation's scale, if the server's stats do not say (default 1)")
    parser.add_argument("--year", type=int, default=2017, choices=sorted(YEARS), help="the year to compare with")
    parser.add_argument("--summary", help="the simulator's summary JSON (simulate --summary), "
                                          "for merchant clubs at scaled thresholds, the hours it replayed "
                                          "and whether it kept to its schedule")
    parser.add_argument("--hours", type=float,
                        help="compare with the first HOURS of the year's day (default: the simulator's "
                             "--hours, else the server's day so far)")
    args = parser.parse_args(argv)
    if args.hours is not None and not 0 < args.hours <= 24:
        parser.error(f"--hours must be more than 0 and at most 24, got {args.hours:g}")
    try:
        stats = httpx.get(args.url.rstrip("/") + "/v1/stats", timeout=10.0).raise_for_status().json()
    except httpx.HTTPError as e:
        print(f"double11 report: cannot read {args.url}/v1/stats: {e}", file=sys.stderr)
        return 1
    summary = json.loads(Path(args.summary).read_text()) if args.summary else None
    write_report(stats, summary, args.scale, args.year, Path(args.out), args.hours)
    return 0
