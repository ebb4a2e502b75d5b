"""One engine of a unit, as a process: the unit's primary, or its hot standby
that becomes the primary when the lease lapses.

    python -m double11.cluster.node --urls nats://...,nats://... --unit east --data DIR --role primary
    python -m double11.cluster.node --urls ... --unit east --data DIR2 --role standby

A primary takes the unit's lease (it exits at once if another engine holds
it), opens the unit from DIR's snapshot and the stream (a new unit needs
--catalog), and serves.  A standby starts from the latest snapshot in DIR (a
copy of the primary's folder: the catalog, the config and the clock), follows
the stream, and when the lease lapses takes it and serves (standby.promote).

Commands come as JSON lines on stdin, one request a line, answered in order
on stdout, one JSON line each (a stand-in for the front, which does not route
to units yet; it keeps the process small enough to kill in a test):
  {"id": 7, "commands": [...]}  ->  {"id": 7, "results": [{"status", "body"}, ...]}
  {"id": 8, "ask": "state"}     ->  {"id": 8, "seq": N, "state_hash": "..."}
A refusal is {"id": ..., "error": {"code", "message"}}.  Events are JSON
lines too: {"event": "serving", "role": ...} once the node serves in a role,
{"event": "stepped_down", "reason": ...} when a primary finds its lease gone
or its log failed (it then exits with status 3: another engine leads the
unit, or will once the lease it no longer renews lapses).  End of input
closes the unit and gives the lease up, so a standby takes over at once.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from double11.catalog.files import load_catalog
from double11.cluster.lease import LeaseHeld, LeaseUnavailable, UnitLease
from double11.cluster.nats_local import NatsUnavailable
from double11.cluster.standby import Standby, state_hash
from double11.cluster.stream_log import StreamLogError, check_unit
from double11.cluster.unit import UnitFestival, open_unit
from double11.errors import Double11Error, Result, error_body

STEPPED_DOWN = 3  # the exit status of a primary that lost its lease


def _say(out: TextIO, message: dict[str, Any]) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()


def _answer(festival: UnitFestival, line: str, number: int) -> dict[str, Any]:
    try:
        request = json.loads(line)
    except ValueError as exc:
        return {"id": None, "error": error_body(Result.invalid_request, message=f"line {number}: not JSON ({exc})")
                ["error"]}
    if not isinstance(request, dict):
        return {"id": None, "error": error_body(Result.invalid_request,
                                                message=f"line {number}: a request is a JSON object")["error"]}
    ident = request.get("id")
    try:
        if request.get("ask") == "state":
            festival.durability.written()
            return {"id": ident, "seq": festival.stream_log.next_seq - 1, "state_hash": state_hash(festival.engine)}
        commands = request.get("commands")
        if not isinstance(commands, list):
            raise Double11Error(Result.invalid_request, message=f"line {number}: 'commands' must be a list of "
                                                                "commands, or 'ask' must be \"state\"")
        return {"id": ident, "results": festival.execute(commands)}
    except Double11Error as exc:
        return {"id": ident, "error": exc.body()["error"]}


def serve(festival: UnitFestival, lease: UnitLease, lines: TextIO, out: TextIO) -> int:
    """Answers requests until the input ends (0) or the lease is gone (STEPPED_DOWN)."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        _say(out, _answer(festival, line, number))
        failure = festival.log_failure
        if failure is not None or not lease.held():  # another engine leads the unit, or will once the lease lapses
            reason = lease.why_not_held() if not lease.held() else str(failure)
            _say(out, {"event": "stepped_down", "unit": festival.unit, "reason": reason})
            festival.abandon()
            return STEPPED_DOWN
    festival.close()
    lease.release()
    return 0


def run(args: argparse.Namespace) -> int:
    unit, data = check_unit(args.unit), Path(args.data)
    lease = UnitLease(args.urls, unit)
    try:
        if args.role == "primary":
            lease.acquire()
            catalog = load_catalog(args.catalog) if args.catalog else None
            festival = open_unit(args.urls, unit, data, catalog=catalog, clock_start_ms=args.clock_start_ms,
                                 lease=lease)
            _say(sys.stdout, {"event": "serving", "role": "primary", "unit": unit,
                              "seq": festival.stream_log.next_seq - 1})
        else:
            standby = Standby.from_snapshot(args.urls, unit, data)
            _say(sys.stdout, {"event": "serving", "role": "standby", "unit": unit, "seq": standby.seq})
            waited = time.monotonic()
            festival = standby.promote(lease, data)
            _say(sys.stdout, {"event": "serving", "role": "primary", "unit": unit, "promoted": True,
                              "seq": festival.stream_log.next_seq - 1,
                              "waited_s": round(time.monotonic() - waited, 3)})
        return serve(festival, lease, sys.stdin, sys.stdout)
    finally:
        lease.close()


def _urls(text: str) -> list[str]:
    urls = [url.strip() for url in text.split(",") if url.strip()]
    if not urls or not all(url.startswith(("nats://", "tls://")) for url in urls):
        raise argparse.ArgumentTypeError(f"--urls must be nats:// URLs separated by commas, got {text!r}")
    return urls


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m double11.cluster.node", description=__doc__.split("\n\n")[0])
    p.add_argument("--urls", type=_urls, required=True, help="the NATS cluster's client URLs, comma separated")
    p.add_argument("--unit", required=True, help="the unit's name (letters, digits, - and _)")
    p.add_argument("--data", required=True, help="the unit's snapshot folder (a standby's: a copy of the primary's)")
    p.add_argument("--role", choices=("primary", "standby"), required=True)
    p.add_argument("--catalog", help="catalog folder, for a unit that has no snapshot yet (a primary's)")
    p.add_argument("--clock-start-ms", type=int, help="the festival clock's start, for a new unit")
    return p


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally clauses: the lease and the stream closed


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return run(args)
    except (LeaseHeld, LeaseUnavailable, StreamLogError, NatsUnavailable, Double11Error, ValueError, OSError) as exc:
        print(f"double11 node {args.unit}: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, LeaseHeld) else 1


if __name__ == "__main__":
    raise SystemExit(main())
