"""Damage in the command log: what recovery refuses rather than cut off.

A crash can tear only the end of the log: records written since the last
fsync, none of them acknowledged, with nothing intact after them.  Recovery
cuts such a torn tail off (storage/log.py `replay`).  An unreadable record
with intact records after it, or one in a segment that is not the last, is
something else: a flipped bit, a bad sector, a copied file cut short.  The
records after it were acknowledged; cutting there would drop them without a
word, so recovery stops instead, changes nothing, and says where and what to
do (`LogDamaged`).  `double11 log repair` (storage/cli.py) is the way to
accept the loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from double11.storage import UnreadableData


@dataclass(frozen=True)
class TornTail:
    """The end of the last segment that a crash left half-written."""

    segment: Path
    offset: int
    cut_bytes: int

    def __str__(self) -> str:
        return (f"command log segment {self.segment}: cut off a torn tail of {self.cut_bytes:,} bytes at byte "
                f"{self.offset:,} (a crash while it was written: never acknowledged)")


@dataclass(frozen=True)
class Damage:
    """Where the log stops reading back, and what lies after it."""

    segment: Path
    offset: int
    expected_seq: int  # the sequence number of the record that should start at `offset`
    problem: str  # what is wrong at `offset`
    records_after: int  # intact records after `offset`, this segment's and the later ones'
    bytes_after: int  # from `offset` to the end of the log
    later_segments: int

    def __str__(self) -> str:
        later = f", {self.later_segments} later segment{'s' if self.later_segments != 1 else ''} included" \
            if self.later_segments else ""
        return (f"the command log is damaged: {self.segment} at byte {self.offset:,}: {self.problem}, and "
                f"{self.records_after:,} intact records ({self.bytes_after:,} bytes{later}) follow it; "
                f"nothing was changed. Restore the data folder from a backup, or accept losing everything from "
                f"record {self.expected_seq:,} on: double11 log repair --data {self.segment.parent} --at-damage "
                f"(says what it would drop; add --yes to drop it)")


class LogDamaged(UnreadableData):
    """The command log holds damage recovery will not cut off (`Damage`)."""

    def __init__(self, damage: Damage) -> None:
        super().__init__(str(damage))
        self.damage = damage
