"""A one-line progress bar for the terminal, redrawn in place."""

from __future__ import annotations

import sys
from typing import TextIO

from double11.simulator.curve import format_clock
from double11.simulator.tally import Tally

BAR_CELLS = 24


def progress_line(stats: dict, tally: Tally, scale: float, hours: float = 24.0) -> str:
    """The bar spans the hours replayed, not the whole day."""
    start = int(stats.get("festival_start", 0))
    elapsed_s = (int(stats.get("at", start)) - start) / 1000
    done = min(max(elapsed_s / (min(hours, 24.0) * 3600), 0.0), 1.0)
    cells = int(done * BAR_CELLS)
    bar = "#" * cells + "-" * (BAR_CELLS - cells)
    clock = format_clock(elapsed_s) if elapsed_s >= 0 else "-" + format_clock(-elapsed_s)
    gmv = int(stats.get("gmv_fen", 0)) / 100
    full = gmv / scale / 1e9
    end = format_clock(min(hours, 24.0) * 3600)
    return (f"[{bar}] {clock} of {end}  GMV ¥{gmv:,.0f} (≈ ¥{full:,.1f}bn at full scale)  "
            f"pay/s {stats.get('payments_per_s', 0):,}  acked: {tally.checkouts:,} checkouts "
            f"{tally.payments:,} payments")


class ProgressBar:
    def __init__(self, scale: float, stream: TextIO | None = None, hours: float = 24.0):
        self.scale = scale
        self.hours = hours
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.last_minute = -1

    def __call__(self, stats: dict, tally: Tally) -> None:
        line = progress_line(stats, tally, self.scale, self.hours)
        if self.tty:
            self.stream.write("\r\x1b[2K" + line)
            self.stream.flush()
            return
        # not a terminal (a log file, a test): a line per ten festival minutes is plenty
        # (or per a tenth of a shorter replay)
        step_ms = min(600_000, max(1, int(self.hours * 360_000)))
        minute = int((int(stats.get("at", 0)) - int(stats.get("festival_start", 0))) / step_ms)
        if minute != self.last_minute:
            self.last_minute = minute
            print(line, file=self.stream, flush=True)

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
