"""`double11 log check` and `double11 log repair`: a data folder's command log
looked at, and damage in it accepted, without a running server.

`check` reads the log as recovery would and says what it holds: its
segments and records, the snapshot recovery starts from, and a torn tail
(cut off at the next start) or damage (which stops the next start: see
storage/damage.py).  `repair` cuts the log at the damage (`--at-damage`) or at
a record boundary the operator names (`--truncate-at SEGMENT:OFFSET`): the
segment is cut there and the later segments removed.  Without `--yes` it
only says what it would drop; it refuses a folder an engine holds.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from double11.cli import existing_folder
from double11.engine.batch import CommandBatch
from double11.errors import Double11Error
from double11.lifecycle import LOCK_FILE, CommandFailed, data_dir_user
from double11.storage import fsync_dir
from double11.storage import log as command_log
from double11.storage import snapshot as snapshots
from double11.storage.damage import Damage, LogDamaged, TornTail

DAMAGE_FOUND_STATUS = 1  # `check`: the log holds damage the next start refuses


def add_commands(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("log", help="check a data folder's command log; repair damage in it")
    commands = group.add_subparsers(dest="log_command", required=True)
    check = commands.add_parser("check", help="say what the log holds and where it is damaged, if it is "
                                              f"(exit status {DAMAGE_FOUND_STATUS} when it is)")
    check.add_argument("--data", type=existing_folder, default="./data",
                       help="the festival's data folder (default ./data, as for serve)")
    check.set_defaults(run=_check)
    repair = commands.add_parser("repair", help="cut the log at its damage, dropping what follows; without "
                                                "--yes only say what that drops")
    repair.add_argument("--data", type=existing_folder, default="./data",
                        help="the festival's data folder (default ./data); no server may hold it")
    where = repair.add_mutually_exclusive_group(required=True)
    where.add_argument("--at-damage", action="store_true", help="cut where the next start would stop")
    where.add_argument("--truncate-at", type=cut_point, metavar="SEGMENT:OFFSET",
                       help="cut at this record boundary of this segment file (as the damage's line names them)")
    repair.add_argument("--yes", action="store_true", help="do it (without: only say what it would drop)")
    repair.set_defaults(run=_repair)


def cut_point(text: str) -> tuple[str, int]:
    """--truncate-at: a segment file's name (or path) and a byte offset in it."""
    segment, colon, offset = text.rpartition(":")
    digits = offset.replace(",", "").replace("_", "")
    if not colon or not segment or not digits.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not SEGMENT:OFFSET (like log-0000000000000001.d11:4096)")
    return segment, int(digits)


# ------------------------------------------------------------------ check
def _check(args: argparse.Namespace) -> int:
    directory = Path(args.data)
    after_seq = _snapshot_seq(directory)
    found = _segments_of(directory)
    user = data_dir_user(directory)
    if user is not None:
        print(f"{directory} is held by {user}: its last records may still be on their way to disk")
    snapshot = f"snapshot at record {after_seq:,}" if snapshots.latest(directory) else "no snapshot"
    print(f"{directory}: {snapshot}; {len(found)} log segment"
          f"{'s' if len(found) != 1 else ''}, {sum(p.stat().st_size for _, p in found):,} bytes")
    tails: list[TornTail] = []
    read: dict[Path, list[int]] = {}
    damage: Damage | None = None
    try:
        for path, _, seq, _, _ in command_log.records(directory, after_seq, tails.append):
            read.setdefault(path, []).append(seq)
    except LogDamaged as e:
        damage = e.damage
    for k, (_, path) in enumerate(found):
        seqs = read.get(path)
        if seqs:
            held = f"records {seqs[0]:,} to {seqs[-1]:,}" if len(seqs) > 1 else f"record {seqs[0]:,}"
        elif k + 1 < len(found) and found[k + 1][0] <= after_seq + 1:
            held = "all in the snapshot (not read)"
        elif damage is not None and found[k][0] > _first_seq_of(found, damage.segment):
            held = "after the damage (not read)"
        else:
            held = "no record"
        if damage is not None and path == damage.segment:
            held += f", damaged at byte {damage.offset:,}"
        print(f"  {path.name}: {held}, {path.stat().st_size:,} bytes")
    if damage is not None:
        print(damage)
        return DAMAGE_FOUND_STATUS
    for tail in tails:
        print(f"a torn tail of {tail.cut_bytes:,} bytes at byte {tail.offset:,} of {tail.segment.name} (a crash "
              f"while it was written: never acknowledged): the next start cuts it off")
    if not tails:
        print("no damage: the next start reads every record")
    return 0


# ----------------------------------------------------------------- repair
@dataclass(frozen=True)
class Dropped:
    """What cutting the log at a point drops."""

    from_seq: int  # the record at the cut, readable or not
    last_seq: int  # the last intact record dropped (from_seq - 1: none)
    records: int  # intact records dropped
    commands: int  # in them
    bytes: int
    segments_removed: int
    snapshot_seq: int

    def __str__(self) -> str:
        if self.records:
            held = (f"records {self.from_seq:,} to {self.last_seq:,}: {self.records:,} intact, holding "
                    f"{self.commands:,} commands")
            unreadable = self.last_seq - self.from_seq + 1 - self.records
            if unreadable:
                held += f", {unreadable:,} unreadable or missing"
        else:
            held = f"no intact record (from record {self.from_seq:,} on)"
        removed = (f", {self.segments_removed} later segment{'s' if self.segments_removed != 1 else ''} removed"
                   if self.segments_removed else "")
        kept = (f" (all in the snapshot at record {self.snapshot_seq:,}: the festival loses none of them)"
                if self.records and self.last_seq <= self.snapshot_seq else "")
        return f"{held}; {self.bytes:,} bytes{removed}{kept}"


def _repair(args: argparse.Namespace) -> int:
    directory = Path(args.data)
    _segments_of(directory)  # not a festival's folder: said before the lock file is made there
    with _held(directory):
        after_seq = _snapshot_seq(directory)
        found = _segments_of(directory)
        if args.at_damage:
            damage = _first_damage(directory, after_seq)
            if damage is None:
                print(f"{directory}: the log holds no damage: nothing to repair (double11 log check says more)")
                return 0
            segment, offset, from_seq = damage.segment, damage.offset, damage.expected_seq
        else:
            segment = _named_segment(directory, found, args.truncate_at[0])
            offset = args.truncate_at[1]
            from_seq = _seq_at_boundary(segment, _first_seq_of(found, segment), offset)
        later = [path for first_seq, path in found if first_seq > _first_seq_of(found, segment)]
        dropped = _what_is_dropped(segment, offset, from_seq, later, after_seq)
        where = f"{segment} from byte {offset:,} on"
        if not args.yes:
            print(f"would drop {where}: {dropped}; nothing was changed (add --yes to drop it)")
            return 0
        for path in reversed(later):  # the last first: stopped midway, the damage is still there to repair
            path.unlink()
        fsync_dir(directory)
        if offset == command_log.records_start_of(segment):
            segment.unlink()  # nothing left in it: the next start begins a segment where it needs one
            fsync_dir(directory)
        else:
            with open(segment, "r+b") as f:
                f.truncate(offset)
                os.fsync(f.fileno())
        print(f"dropped {where}: {dropped}; the festival opens with the records before it")
    return 0


@contextlib.contextmanager
def _held(directory: Path) -> Iterator[None]:
    """The data folder's lock (lifecycle.lock_data_dir's), held for the
    repair: no engine opens the folder meanwhile, and none may hold it now."""
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CommandFailed(f"{directory} is in use by {data_dir_user(directory) or 'an engine that is closing'}"
                                f": stop the server first") from None
        yield
    finally:
        os.close(fd)


def _snapshot_seq(directory: Path) -> int:
    found = snapshots.latest(directory)
    return found[0] if found else 0


def _segments_of(directory: Path) -> list[tuple[int, Path]]:
    found = command_log.segments(directory)
    if not found:
        raise CommandFailed(f"{directory} holds no command log (no log-*.d11 file): is it a festival's data folder?")
    return found


def _first_seq_of(found: list[tuple[int, Path]], segment: Path) -> int:
    return next(first_seq for first_seq, path in found if path == segment)


def _first_damage(directory: Path, after_seq: int) -> Damage | None:
    try:
        for _ in command_log.records(directory, after_seq, lambda tail: None):
            pass
    except LogDamaged as e:
        return e.damage
    return None


def _named_segment(directory: Path, found: list[tuple[int, Path]], name: str) -> Path:
    path = Path(name)
    if path.parent != Path(".") and path.parent.resolve() != directory.resolve():
        raise CommandFailed(f"{name} is not in the data folder {directory}")
    for _, segment in found:
        if segment.name == path.name:
            return segment
    held = ", ".join(p.name for _, p in found)
    raise CommandFailed(f"{directory} holds no log segment {path.name} (it holds {held})")


def _seq_at_boundary(segment: Path, first_seq: int, offset: int) -> int:
    """The sequence number of the record that starts at `offset` of the
    segment (whose records start at `first_seq`); refuses an offset where
    none of its readable run starts (nor where that run ends: the damage,
    or the segment's end)."""
    data = segment.read_bytes()
    at = command_log.records_start(segment, data)
    seq = first_seq
    boundaries = {at: seq}
    while (found := command_log.record_at(data, at)) is not None:
        seq, at = found[0] + 1, found[2]
        boundaries[at] = seq
    if offset in boundaries:
        return boundaries[offset]
    before = max((b for b in boundaries if b < offset), default=None)
    after = min((b for b in boundaries if b > offset), default=None)
    nearest = " and ".join(f"{b:,}" for b in (before, after) if b is not None)
    raise CommandFailed(f"byte {offset:,} of {segment.name} is not where a record starts (the nearest that are: "
                        f"{nearest}; its readable records end at byte {at:,} of {len(data):,})")


def _what_is_dropped(segment: Path, offset: int, from_seq: int, later: list[Path], snapshot_seq: int) -> Dropped:
    records = commands = 0
    last_seq = from_seq - 1
    total = 0
    for path, start in [(segment, offset), *((p, None) for p in later)]:
        data = path.read_bytes()
        at = command_log.records_start(path, data) if start is None else start
        total += len(data) - (start or 0)
        for _, seq, _, payload in command_log.intact_records(data, at, last_seq + 1):
            records += 1
            commands += _commands_in(payload)
            last_seq = seq
    return Dropped(from_seq, last_seq, records, commands, total, len(later), snapshot_seq)


def _commands_in(payload: memoryview) -> int:
    try:
        return len(CommandBatch.from_bytes(payload, trusted=True))
    except Double11Error:  # intact but not a batch this code reads: counted as a record only
        return 0
