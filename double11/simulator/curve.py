"""The day's traffic curve: the share of the day's payments in each second.

Pure functions of a YearProfile.  The hourly shares come from the profile; inside
the first hour the midnight rush is shaped so that its sharpest second falls on the
published peak moment (00:05:22 in 2017) at the published peak rate, and the
following hour decays from the rush instead of dropping off a cliff at 01:00.
"""

from __future__ import annotations

import math

import numpy as np

from double11.simulator.years import YearProfile

DAY_S = 24 * 3600
HOUR_S = 3600

# How the rush is drawn (why these values: they reproduce the published peak and
# first-hour share while keeping the peak second distinct from its neighbours).
RUSH_START_LEVEL = 0.6  # rate at 00:00:00 as a share of the rush level at the peak
SPIKE_SHARE = 0.4  # part of the peak rate carried by a sharp spike on the peak second
SPIKE_WIDTH_S = 2.0
LAST_HOUR_RAMP = 0.4  # the last hour runs from (1 - r) to (1 + r) times its mean


def _solve(f, lo: float, hi: float, target: float, steps: int = 80) -> float:
    """Bisection for an increasing f: the x in [lo, hi] with f(x) ~= target."""
    for _ in range(steps):
        mid = (lo + hi) / 2
        if f(mid) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _first_hour(profile: YearProfile, base: float) -> np.ndarray:
    """Per-second rate of hour 0: base + ramp-then-decay + a spike at the peak second."""
    share = profile.first_hour_share
    peak = profile.peak_payments_per_s / profile.payments  # share of the day in the peak second
    tp = profile.peak_second
    t = np.arange(HOUR_S, dtype=np.float64) + 0.5
    spike = SPIKE_SHARE * (peak - base) * np.exp(-np.abs(t - (tp + 0.5)) / SPIKE_WIDTH_S)
    amplitude = (1 - SPIKE_SHARE) * (peak - base)
    ramp = RUSH_START_LEVEL + (1 - RUSH_START_LEVEL) * t / (tp + 0.5)

    def rate(tau: float) -> np.ndarray:
        decay = np.exp(-(t - (tp + 0.5)) / tau)
        return base + spike + amplitude * np.where(t <= tp + 0.5, ramp, decay)

    # a slower decay carries more of the day; pick the one that gives the hour its share
    tau = _solve(lambda x: float(rate(x).sum()), 1.0, 1e7, share)
    out = rate(tau)
    return out * (share / out.sum())


def _decaying_hour(start: float, mean: float, floor: float) -> np.ndarray:
    """An hour that falls from `start` towards `floor` with the given mean rate."""
    t = np.arange(HOUR_S, dtype=np.float64) + 0.5
    if not (floor < mean < start):
        return np.full(HOUR_S, mean)

    def hour_mean(tau: float) -> float:
        return float((floor + (start - floor) * np.exp(-t / tau)).mean())

    tau = _solve(hour_mean, 1.0, 1e7, mean)
    out = floor + (start - floor) * np.exp(-t / tau)
    return out * (mean / out.mean())


def payment_curve(profile: YearProfile) -> np.ndarray:
    """Share of the day's payments in each second of the day (86,400 values, sum 1)."""
    hourly = np.asarray(profile.hourly_permille, dtype=np.float64) / 1000.0
    means = hourly / HOUR_S
    hours = [np.full(HOUR_S, m) for m in means]
    hours[0] = _first_hour(profile, base=means[1])
    hours[1] = _decaying_hour(start=float(hours[0][-1]), mean=means[1], floor=means[2])
    ramp = np.linspace(1 - LAST_HOUR_RAMP, 1 + LAST_HOUR_RAMP, HOUR_S)
    hours[23] = means[23] * ramp / ramp.mean()
    curve = np.concatenate(hours)
    return curve / curve.sum()


def sample_times_ms(curve: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n sorted instants (ms after midnight) drawn from the per-second curve.

    Stratified: the i-th instant sits at quantile (i + u_i) / n, so each second gets
    its expected count give or take one.  Plain random draws would add Poisson noise,
    and the busiest second of a noisy small-scale day overstates the peak.
    """
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    cdf = np.concatenate(([0.0], np.cumsum(curve)))
    cdf /= cdf[-1]
    q = (np.arange(n, dtype=np.float64) + rng.random(n)) / n
    seconds = np.interp(q, cdf, np.arange(len(cdf), dtype=np.float64))
    ms = np.minimum((seconds * 1000).astype(np.int64), len(curve) * 1000 - 1)
    return np.sort(ms)


def peak_second(curve: np.ndarray) -> int:
    return int(np.argmax(curve))


def format_clock(seconds: float) -> str:
    s = int(math.floor(seconds))
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"
