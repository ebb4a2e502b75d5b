"""The festival clock: real time, or real time sped up from a chosen start.

Only the service reads it; the time of each batch goes into the command log,
so the state machine itself never looks at a clock.
"""

from __future__ import annotations

import time


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
