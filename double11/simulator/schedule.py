"""Whether a replay fits a server's festival day, how long it takes, and whether its
timing can be trusted: pure functions of the server's stats and the plan.

A replay sends each checkout when the server's festival clock reaches its moment of
the day.  Against a server whose day is already well under way the plan's first
hours would be skipped without a word (the midnight rush first of all), so such a
replay is refused, saying where the server's day is and what to run instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from double11.config import OWN_DAY_LEAD_REAL_S
from double11.simulator import mixes
from double11.simulator.curve import format_clock
from double11.simulator.plan import Plan

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
# Festival time a replay may start late by: the checkouts planned before it are skipped.
# More than a minute would skip a visible part of the midnight rush.
LATE_START_TOLERANCE_MS = 60_000
# A command sent later than this after its moment lands in a later festival second:
# the per-second peaks then measure the simulator, not the day.
LAG_TOLERANCE_MS = 1_000
# what a refusal and the 1x hint suggest
SUGGESTED_SPEEDUP = 60


class ReplayRefused(Exception):
    """The replay does not fit the server's day; the message says where that day is
    and what to run instead."""


@dataclass(frozen=True)
class ServerDay:
    """Where a server's festival day stands (from GET /v1/stats)."""

    start_ms: int
    at_ms: int
    speedup: float | None  # None: a server that does not say (its clock is measured instead)
    scale: float

    @classmethod
    def of(cls, stats: dict) -> ServerDay:
        speedup = stats.get("speedup")
        return cls(int(stats["festival_start"]), int(stats["at"]),
                   None if speedup is None else float(speedup), float(stats.get("scale") or 1.0))

    @property
    def elapsed_ms(self) -> int:
        return self.at_ms - self.start_ms


def window_ms(hours: float) -> int:
    """The replayed part of the day, from midnight."""
    return int(min(max(hours, 0.0), 24.0) * HOUR_MS)


def hours_text(hours: float) -> str:
    """'the whole day', 'the first 2 h', 'the first 2 h 22 min', 'the first 18 min'."""
    if hours >= 24:
        return "the whole day"
    if hours < 1:
        return f"the first {hours * 60:.3g} min"
    whole, minutes = divmod(round(hours * 60), 60)
    return f"the first {whole} h" + (f" {minutes} min" if minutes else "")


def stopped_hours(elapsed_ms: int, hours: float) -> float:
    """The hours of the day a replay stopped after `elapsed_ms` of festival time
    covers: whole minutes, at least one (a report of nothing compares with nothing)."""
    minutes = max(1, min(round(elapsed_ms / 60_000), round(hours * 60)))
    return min(hours, minutes / 60)


def planned(plan: Plan, hours: float) -> tuple[int, int]:
    """(checkouts, payments) the replay of the first `hours` sends: a payment due
    after the window is not sent."""
    end = window_ms(hours)
    sent = plan.at_ms < end
    paid = sent & (plan.fate == mixes.PAY) & (plan.next_at_ms < end)
    return int(sent.sum()), int(paid.sum())


def real_duration(festival_ms: float, speedup: float) -> str:
    """Festival time in real time at the speed-up, in words."""
    seconds = festival_ms / 1000 / speedup if speedup > 0 else float("inf")
    if seconds == float("inf"):
        return "forever (the server's clock stands still)"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h".replace(".0 h", " h")


def _instead() -> str:
    return (f"run `double11 festival` (its own server, {SUGGESTED_SPEEDUP}x, with a big screen and a report), "
            f"or start a fresh `double11 serve --data NEWDIR --speedup {SUGGESTED_SPEEDUP}` and this command "
            f"within {OWN_DAY_LEAD_REAL_S} s")


def refusal(day: ServerDay, hours: float, plan: Plan | None = None) -> str | None:
    """Why the first `hours` of the plan cannot be replayed against this server's
    day (None: they can).  The day over, or so far in that more than
    LATE_START_TOLERANCE_MS of the replay (and whatever the plan had in it) is past."""
    end = window_ms(hours)
    where = format_clock(day.elapsed_ms / 1000) if day.elapsed_ms < DAY_MS else None
    if where is None:
        return f"the server's festival day is over (its clock is past 24:00:00): {_instead()}"
    if day.elapsed_ms <= LATE_START_TOLERANCE_MS:
        return None
    if day.elapsed_ms >= end:
        past = f"the replay's {hours_text(hours)} of the day are past"
    else:
        past = f"the replay of {hours_text(hours)} would skip the day's first {where}"
        if plan is not None:
            skipped = int(np.searchsorted(plan.at_ms, day.elapsed_ms))
            past += f" ({skipped:,} of its checkouts)"
    return f"the server's festival day is at {where}, and {past}: {_instead()}"


def start_line(year: int, scale: float, plan: Plan, hours: float, speedup: float,
               day: ServerDay | None = None) -> str:
    """What the replay will send and how long that takes in real time."""
    checkouts, payments = planned(plan, hours)
    parts = [f"replaying {hours_text(hours)} of {year} at scale {scale:g}: {checkouts:,} checkouts, "
             f"{payments:,} of them to be paid",
             f"at the server's {speedup:g}x that takes {real_duration(window_ms(hours), speedup)}"]
    if day is not None and day.elapsed_ms < 0:
        parts[-1] += f", from its midnight in {real_duration(-day.elapsed_ms, speedup)}"
    elif day is not None and day.elapsed_ms > 0:
        past = int(np.searchsorted(plan.at_ms, min(day.elapsed_ms, window_ms(hours))))
        parts.append(f"the server's day is at {format_clock(day.elapsed_ms / 1000)}: {past:,} checkouts are past")
    if speedup <= 1 and hours >= 1:
        parts.append(f"its clock runs in real time: for a quicker look start a server with --speedup "
                     f"{SUGGESTED_SPEEDUP}, or run `double11 festival --hours 1`")
    return "; ".join(parts)


def lag_warning(max_lag_ms: int, speedup: float | None = None) -> str | None:
    """A warning when the replay fell behind its schedule by more than
    LAG_TOLERANCE_MS of festival time (None: it kept up)."""
    if max_lag_ms <= LAG_TOLERANCE_MS:
        return None
    slower = f"--speedup {max(1.0, speedup / 2):g}" if speedup else "a lower --speedup"
    return (f"the simulator fell up to {max_lag_ms / 1000:,.1f} s of festival time behind its schedule, so its "
            f"commands landed in later seconds than planned: the per-second peaks are not reliable (GMV and "
            f"the counts are exact); run again with {slower} (or a lower --scale)")
