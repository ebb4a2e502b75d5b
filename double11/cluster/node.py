"""One engine of a unit, as a process: the unit's primary, or its hot standby
that becomes the primary when the lease lapses.

    python -m double11.cluster.node --urls nats://...,nats://... --unit east --data DIR --role primary
    python -m double11.cluster.node --urls ... --unit east --data DIR2 --role standby

A primary takes the unit's lease (it exits if another engine still holds it
after limits.unit_primary_lease_wait_s), opens the unit from DIR's snapshot and the stream (a new unit needs
--catalog), and serves.  A standby starts from the latest snapshot in DIR (a
copy of the primary's folder: the catalog, the config and the clock), follows
the stream, and when the lease lapses takes it and serves (standby.promote).

Serving is on NATS (unit_service.py; the subjects: unit_requests.py): the
unit's batches, stock report and state while the node is the primary, and
the cluster's status in any role, and the unit's figures published.  Unless
--no-stdin, requests come as JSON lines on stdin too, one request a line,
answered in order on stdout, one JSON line each (the failover tests drive a
node this way):
  {"id": 7, "commands": [...]}  ->  {"id": 7, "results": [{"status", "body"}, ...]}
  {"id": 8, "ask": "state"}     ->  {"id": 8, "seq": N, "state_hash": "..."}
A refusal is {"id": ..., "error": {"code", "message"}}.  Events are JSON
lines too: {"event": "serving", "role": ...} once the node serves in a role,
{"event": "stepped_down", "reason": ...} when a primary finds its lease gone
or its log failed (it unsubscribes first: another engine leads the unit, or
will once the lease it no longer renews lapses).  It then follows the unit as
its standby, {"event": "rejoining", "from": ...}: on its own engine when every
batch it applied is in the stream, else from the latest snapshot; with
--exit-on-step-down it exits with status 3 instead.
End of input, or SIGTERM, closes the unit (requests in flight answered, last
figures published) and gives the lease up, so a standby takes over at once;
with --no-stdin only SIGTERM does.  Started by a process that asked for it
(lifecycle.child_env: `double11 cluster up`'s supervisor), the node is
killed when that process dies.
"""

from __future__ import annotations

import argparse
import gc
import json
import queue
import signal
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from double11 import limits
from double11.catalog.files import load_catalog
from double11.cli import positive_float, positive_fraction
from double11.cluster.lease import LeaseHeld, LeaseUnavailable, UnitLease
from double11.cluster.nats_local import NatsUnavailable
from double11.cluster.snapshots import publish_snapshot
from double11.cluster.standby import Standby, state_hash
from double11.cluster.stream_log import StreamLogError, check_unit, stream_info
from double11.cluster.unit import UnitFestival, open_unit
from double11.cluster.unit_service import UnitService
from double11.cluster.urls import urls_arg
from double11.config import FestivalConfig
from double11.errors import Double11Error, Result, error_body
from double11.gc_tuning import freeze_what_exists
from double11.lifecycle import follow_parent

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


def _lines(stream: TextIO | None) -> queue.Queue[str | None]:
    """The lines of `stream` as they come (None at its end), read on a thread
    of its own so that the node notices a lost lease while no line comes.
    Without a stream: a queue nothing comes to."""
    lines: queue.Queue[str | None] = queue.Queue()
    if stream is not None:
        def read() -> None:
            for line in stream:
                lines.put(line)
            lines.put(None)
        threading.Thread(target=read, name="double11-node-stdin", daemon=True).start()
    return lines


def serve(festival: UnitFestival, lease: UnitLease, service: UnitService, lines: queue.Queue[str | None],
          out: TextIO, snapshots: Snapshots | None = None) -> int:
    """Answers requests (NATS, and the lines that come) until the lines end
    or SIGTERM (0, or SIGTERM's status) or the lease is gone (STEPPED_DOWN)."""
    number = 0
    try:
        while True:
            try:
                line = lines.get(timeout=limits.unit_lease_poll_s)
            except queue.Empty:
                line = ""  # nothing came: look at the lease
            if line is None:
                break
            if snapshots is not None:
                snapshots.when_due()
            if line.strip():
                number += 1
                _say(out, _answer(festival, line, number))
            elif line:
                number += 1
            failure = festival.log_failure
            if failure is None and not lease.held() and _took_back(festival, lease, out):
                continue
            if failure is not None or not lease.held():  # another engine leads the unit, or will once the lease lapses
                reason = lease.why_not_held() if not lease.held() else str(failure)
                service.stop_serving("stepping_down")
                if snapshots is not None:
                    snapshots.wait()
                _say(out, {"event": "stepped_down", "unit": festival.unit, "reason": reason})
                return STEPPED_DOWN  # (the caller lets go of the festival: _let_go)
    except SystemExit:  # SIGTERM: closed as at the end of input, then the status says the signal
        _close(festival, lease, service, snapshots)
        raise
    _close(festival, lease, service, snapshots)
    return 0


def _took_back(festival: UnitFestival, lease: UnitLease, out: TextIO) -> bool:
    """The lease lapsed unrenewed (its bucket electing a leader, or this
    process paused): taken back if no other engine took it meanwhile, and
    kept if the stream still ends at this festival's last record (batches
    are refused with 503 meanwhile, before they change anything: the log's
    `unwritable`).  Otherwise let go: the primary steps down."""
    reason = lease.why_not_held()
    if not lease.retake(wait_s=limits.unit_failover_s_max):
        return False
    through = festival.durability.written_through()  # the records on their way when it lapsed: in, or a fault
    try:
        last = stream_info(festival.urls, festival.unit).state.last_seq
    except Exception:  # noqa: BLE001 (the stream not answering: as any lost lease)
        last = -1
    if through is not None and last == through:
        _say(out, {"event": "lease_taken_back", "unit": festival.unit, "seq": last, "reason": reason})
        return True
    lease.release()  # another engine wrote after this one's last record: it leads the unit
    return False


def _let_go(festival: UnitFestival) -> int | None:
    """A festival that stepped down let go of: nothing more goes to the
    stream from it.  Returns the stream position its engine is exactly at
    when every batch it applied is in the stream (None after a storage
    fault: a batch applied and not written, or refused by the new primary's
    fence): its unit's standby may go on from there, instead of from the
    last snapshot and all the stream since (up to unit_snapshot_every_s of
    records, tens of seconds under load in which a second fault would find
    no standby ready)."""
    through = festival.durability.written_through()
    festival.abandon()
    festival.stream_log.cut_back()
    return through


def _close(festival: UnitFestival, lease: UnitLease, service: UnitService, snapshots: Snapshots | None) -> None:
    service.stop_serving("closing")
    if snapshots is not None:
        snapshots.wait()
        snapshots.publish()  # the next primary starts from here, and the stream is trimmed below it
    festival.close()
    lease.release()


class Snapshots:
    """The primary's snapshots to the object store (snapshots.publish_snapshot),
    every `every_s`, one at a time, from a thread of their own: writing one
    holds the festival's lock, uploading it does not."""

    def __init__(self, festival: UnitFestival, every_s: float) -> None:
        self.festival, self.every_s = festival, every_s
        self._due = time.monotonic() + every_s
        self._thread: threading.Thread | None = None

    def when_due(self) -> None:
        if time.monotonic() < self._due or (self._thread is not None and self._thread.is_alive()):
            return
        self._due = time.monotonic() + self.every_s
        self._thread = threading.Thread(target=self.publish, name="double11-unit-snapshot", daemon=True)
        self._thread.start()

    def publish(self) -> None:
        try:
            published = publish_snapshot(self.festival)
        except (OSError, Double11Error) as exc:  # said; the stream keeps everything until the next one
            print(f"double11 node {self.festival.unit}: snapshot not published ({exc})", file=sys.stderr, flush=True)
            return
        _say(sys.stdout, {"event": "snapshot", "unit": self.festival.unit, "seq": published.seq,
                          "bytes": published.size_bytes, "stream_first_seq": published.stream_first_seq})

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()


def _primary(args: argparse.Namespace, lease: UnitLease, service: UnitService) -> UnitFestival:
    lease.acquire(wait_s=limits.unit_primary_lease_wait_s)
    catalog = load_catalog(args.catalog) if args.catalog else None
    # as serve's engine: every page of the tables written at the start, not on the first batches
    overrides: dict[str, Any] = _scaled(args.scale)
    if args.expected_checkouts:
        overrides["expected_checkouts"] = args.expected_checkouts
    config = FestivalConfig(prefault_memory=True, **overrides)
    festival = open_unit(args.urls, args.unit, Path(args.data), catalog=catalog, config=config,
                         speedup=args.speedup, clock_start_ms=args.clock_start_ms, lease=lease)
    if args.clock_start_ms is not None and args.clock_real_start_ms is not None:
        anchor_clock(festival, args.clock_real_start_ms)
    freeze_what_exists()  # as the engine process: the collector's full passes off the request path
    service.serve(festival)
    _say(sys.stdout, {"event": "serving", "role": "primary", "unit": args.unit,
                      "seq": festival.stream_log.next_seq - 1})
    return festival


def _scaled(scale: str | None) -> dict[str, int]:
    """A new unit's config fields for --scale (its figures count merchant clubs at that fraction)."""
    if scale is None:
        return {}
    fraction = Fraction(scale).limit_denominator(10**12)
    return {"scale_num": fraction.numerator, "scale_den": fraction.denominator}


def _promoted(args: argparse.Namespace, lease: UnitLease, service: UnitService,
              standby: Standby | None = None) -> UnitFestival:
    """A standby (given, or from the latest snapshot) that follows the stream
    until the lease lapses, then the primary."""
    standby = standby or Standby.from_snapshot(args.urls, args.unit, Path(args.data))
    service.follow(standby)
    freeze_what_exists()
    _say(sys.stdout, {"event": "serving", "role": "standby", "unit": args.unit, "seq": standby.seq})
    waited = time.monotonic()
    festival = standby.promote(lease, Path(args.data), speedup=args.speedup)
    gc.freeze()  # the festival made at promotion: frozen too, without a full pass while its unit waits
    service.serve(festival)
    # when (time.time()) it took the lease, had read the stream to its end and fenced it, and
    # served: what a failover's time is made of, beside the moment the old primary stopped
    _say(sys.stdout, {"event": "serving", "role": "primary", "unit": args.unit, "promoted": True,
                      "seq": festival.stream_log.next_seq - 1, "waited_s": round(time.monotonic() - waited, 3),
                      "lease_taken_at": round(standby.lease_taken_at, 3), "fenced_at": round(standby.fenced_at, 3),
                      "serving_at": round(time.time(), 3)})
    return festival


def _following_on(args: argparse.Namespace, festival: UnitFestival, through: int | None) -> Standby | None:
    """The unit's standby on the engine that stepped down, from the stream
    position it is exactly at; None (the latest snapshot, then) when its state
    may hold a batch the stream does not, or the stream was trimmed past it
    (a snapshot of the new primary's) or not read."""
    if through is None:
        return None
    try:
        return Standby(args.urls, festival.unit, festival.engine, through, snapshot_seq=festival.snapshot_seq)
    except Exception as exc:  # noqa: BLE001 (said; the snapshot's way is always there)
        print(f"double11 node {festival.unit}: following on from record {through} failed ({exc}); "
              "from the latest snapshot instead", file=sys.stderr, flush=True)
        return None


def anchor_clock(festival: UnitFestival, real_start_ms: int) -> None:
    """The new unit's clock reads its start at the real instant real_start_ms
    rather than at its opening: units opened one after another, or before the
    rest of their cluster serves, then run one clock (nothing was stamped by it
    yet: the unit serves nothing before this).  Kept in the folder's clock.json,
    which its standby copies."""
    festival.clock.real_start_ms = real_start_ms  # the object the festival's parts share
    assert festival.data_dir is not None
    (festival.data_dir / "clock.json").write_text(json.dumps(festival.clock.to_dict()))


def run(args: argparse.Namespace) -> int:
    unit, data = check_unit(args.unit), Path(args.data)
    lease = UnitLease(args.urls, unit)
    service: UnitService | None = None
    try:
        service = UnitService(args.urls, unit, data)
        role = args.role
        lines = _lines(sys.stdin if args.stdin else None)  # one reader for every role it serves in
        standby: Standby | None = None
        while True:
            festival = _primary(args, lease, service) if role == "primary" else \
                _promoted(args, lease, service, standby)
            status = serve(festival, lease, service, lines, sys.stdout, Snapshots(festival, args.snapshot_every_s))
            if status != STEPPED_DOWN:
                return status
            through = _let_go(festival)
            if args.exit_on_step_down:
                return status
            # its lease lapsed (the lease bucket electing a leader outlasts the lease; a pause): it
            # is its unit's standby now, so a unit never goes dark because its only engine stepped down
            standby = _following_on(args, festival, through)
            del festival
            gc.unfreeze()  # the old festival's objects were frozen with the rest: freed now
            gc.collect()
            _say(sys.stdout, {"event": "rejoining", "unit": unit, "role": "standby",
                              "from": "the latest snapshot" if standby is None else f"its engine at record {through}"})
            role = "standby"
    finally:
        if service is not None:
            service.close()
        lease.close()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m double11.cluster.node", description=__doc__.split("\n\n")[0])
    p.add_argument("--urls", type=urls_arg, required=True, help="the NATS cluster's client URLs, comma separated")
    p.add_argument("--unit", required=True, help="the unit's name (letters, digits, - and _)")
    p.add_argument("--data", required=True, help="the unit's snapshot folder (a standby's: a copy of the primary's)")
    p.add_argument("--role", choices=("primary", "standby"), required=True)
    p.add_argument("--catalog", help="catalog folder, for a unit that has no snapshot yet (a primary's)")
    p.add_argument("--clock-start-ms", type=int, help="the festival clock's start, for a new unit")
    p.add_argument("--clock-real-start-ms", type=int,
                   help="with --clock-start-ms: the real instant (ms since the Unix epoch) at which the clock reads "
                        "it (default: when the unit opens)")
    p.add_argument("--speedup", type=positive_float, default=1.0,
                   help="festival seconds per real second, for a new unit's clock (a unit keeps its clock's)")
    p.add_argument("--exit-on-step-down", action="store_true",
                   help="a primary that lost its lease exits (status 3) rather than follow the unit as its standby")
    p.add_argument("--expected-checkouts", type=int,
                   help="checkouts a new unit's tables are sized for (a table that grows pauses the unit)")
    p.add_argument("--scale", type=positive_fraction,
                   help="a new unit's festival at this fraction of real size (as serve --scale)")
    p.add_argument("--snapshot-every-s", type=float, default=limits.unit_snapshot_every_s,
                   help="between the primary's snapshots to the object store (the stream is trimmed below them)")
    p.add_argument("--no-stdin", dest="stdin", action="store_false",
                   help="take no requests on stdin (serve on NATS only, until SIGTERM)")
    return p


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally clauses: the lease and the stream closed


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # a supervisor that dies takes its NATS nodes with it: nothing a node could close would reach them
    follow_parent(signal.SIGKILL)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return run(args)
    except (LeaseHeld, LeaseUnavailable, StreamLogError, NatsUnavailable, Double11Error, ValueError, OSError) as exc:
        print(f"double11 node {args.unit}: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, LeaseHeld) else 1


if __name__ == "__main__":
    raise SystemExit(main())
