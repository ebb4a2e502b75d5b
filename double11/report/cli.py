"""`double11 report --url URL --out FILE.html`: the festival's results, in the form of
the press release, next to the imitated year's figures."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import httpx

from double11.cli import float_in
from double11.lifecycle import CommandFailed
from double11.report.render import html_report, text_report
from double11.simulator.years import YEARS


def write_report(stats: dict, summary: dict | None, scale: float | None, year: int, out: Path,
                 hours: float | None = None) -> None:
    """Print the report and write its HTML page."""
    print(text_report(stats, year, scale, summary, hours))
    out.write_text(html_report(stats, year, scale, summary, hours), encoding="utf-8")
    print(f"\nreport written to {out}")


def _read_summary(path: str) -> dict:
    """The simulator's summary, or one line saying why it cannot be used (a missing
    file is the caller's OSError, said in one line by double11.cli)."""
    try:
        summary = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CommandFailed(f"--summary {path} is not the simulator's JSON summary ({e})") from None
    if not isinstance(summary, dict):
        raise CommandFailed(f"--summary {path} is not the simulator's JSON summary (not an object)")
    return summary


def report_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="double11 report", description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:1111", help="the server (default http://127.0.0.1:1111)")
    parser.add_argument("--out", default="report.html", help="the HTML file to write (default report.html)")
    parser.add_argument("--scale", type=float_in(0.0, 1.0),
                        help="the simulation's scale, if the server's stats do not say (default 1)")
    parser.add_argument("--year", type=int, default=2017, choices=sorted(YEARS), help="the year to compare with")
    parser.add_argument("--summary", help="the simulator's summary JSON (simulate --summary), "
                                          "for merchant clubs at scaled thresholds, the hours it replayed "
                                          "and whether it kept to its schedule")
    parser.add_argument("--hours", type=float_in(0.0, 24.0),
                        help="compare with the first HOURS of the year's day (default: the simulator's "
                             "--hours, else the server's day so far)")
    args = parser.parse_args(argv)
    summary = _read_summary(args.summary) if args.summary else None  # a bad file: said before the server is asked
    try:
        stats = httpx.get(args.url.rstrip("/") + "/v1/stats", timeout=10.0).raise_for_status().json()
    except httpx.HTTPError as e:
        print(f"double11 report: cannot read {args.url}/v1/stats: {e}", file=sys.stderr)
        return 1
    write_report(stats, summary, args.scale, args.year, Path(args.out), args.hours)
    return 0
