"""The festival clock: real time, or real time sped up from a chosen start.

Only the service reads it; the time of each batch goes into the command log,
so the state machine itself never looks at a clock.  A new festival's day and
clock start are fixed here (config.own_day); a data folder keeps its clock
(clock.json), so a restarted festival goes on where its day was.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from double11.config import FestivalConfig, own_day


class FestivalClock:
    def __init__(self, start_ms: int | None = None, speedup: float = 1.0, real_start_ms: int | None = None):
        self.real_start_ms = real_start_ms if real_start_ms is not None else time.time_ns() // 1_000_000
        self.start_ms = start_ms if start_ms is not None else self.real_start_ms
        self.speedup = speedup

    def now_ms(self) -> int:
        real = time.time_ns() // 1_000_000
        return self.start_ms + int((real - self.real_start_ms) * self.speedup)

    def to_dict(self) -> dict:
        return {"start_ms": self.start_ms, "speedup": self.speedup, "real_start_ms": self.real_start_ms}


def first_day(config: FestivalConfig | None, clock_start_ms: int | None,
              speedup: float) -> tuple[FestivalConfig, int | None]:
    """A new festival's config and clock start, its day fixed (config.own_day)."""
    return own_day(config or FestivalConfig(), clock_start_ms, time.time_ns() // 1_000_000, speedup)


def kept_clock(directory: Path, speedup: float, clock_start_ms: int | None) -> FestivalClock:
    """A restarted festival keeps its clock unless told otherwise."""
    path = directory / "clock.json"
    if path.exists() and clock_start_ms is None:
        saved = json.loads(path.read_text())
        return FestivalClock(saved["start_ms"], saved["speedup"], saved["real_start_ms"])
    clock = FestivalClock(clock_start_ms, speedup)
    path.write_text(json.dumps(clock.to_dict()))
    return clock
