"""Scarce counters: the one mechanism behind every limited quantity.

SKU stock today; coupon budgets, per-buyer limits and stock per store later.
Each kind of counter owns a range of rows in one `available` array.  A claim
is a group of lines (counter, quantity); claims are served first come, first
served in batch order, each all or nothing, and no counter ever goes below 0.

The batch is resolved with NumPy in the common case and by a plain loop only
over the few claims that touch a counter running out within this batch:
- a line asking more than its counter holds at the start fails its claim
  outright (nothing in a batch of claims adds to a counter);
- among the remaining claims, a counter whose total demand fits serves every
  one of them, whatever else fails, so only claims on "contended" counters
  (demand > available) need to be decided one by one, in order.
"""

from __future__ import annotations

import numpy as np

from double11.engine.columns import add_at

from double11.engine.sorting import starts_of_runs


class ScarceCounters:
    def __init__(self) -> None:
        self.available = np.zeros(0, dtype=np.int64)
        self.kinds: dict[str, tuple[int, int]] = {}

    def add_kind(self, name: str, initial: np.ndarray) -> int:
        """Registers a kind of counter; returns the offset of its first row."""
        offset = len(self.available)
        self.available = np.concatenate([self.available, np.asarray(initial, dtype=np.int64)])
        self.kinds[name] = (offset, len(initial))
        return offset

    def release(self, counters: np.ndarray, qty: np.ndarray) -> None:
        add_at(self.available, counters, qty)

    def claim(self, counters: np.ndarray, qty: np.ndarray, claim_of_line: np.ndarray, claims: int) -> np.ndarray:
        """Serves claims in order.  Lines are given in claim order
        (claim_of_line non-decreasing).  Returns a bool per claim; the
        available units of every served line are taken."""
        ok = np.ones(claims, dtype=bool)
        if len(counters) == 0:
            return ok
        available = self.available
        ok[claim_of_line[qty > available[counters]]] = False
        line = np.flatnonzero(ok[claim_of_line])
        distinct, totals = _totals(counters[line], qty[line])
        contended = totals > available[distinct]
        if contended.any():
            self._decide_contended(ok, line, counters[line], qty[line], claim_of_line, distinct[contended])
            line = np.flatnonzero(ok[claim_of_line])
            distinct, totals = _totals(counters[line], qty[line])
        available[distinct] -= totals
        assert len(distinct) == 0 or available[distinct].min() >= 0, "a scarce counter went negative"
        return ok

    def _decide_contended(self, ok, line, c, q, claim_of_line, contended_counters) -> None:
        left = {int(k): int(self.available[k]) for k in contended_counters}
        on_contended = np.isin(c, contended_counters)
        claim_ids = claim_of_line[line[on_contended]]
        counters = c[on_contended]
        quantities = q[on_contended]
        # walk the claims touching contended counters, in order; all-or-nothing
        i = 0
        n = len(claim_ids)
        while i < n:
            claim = claim_ids[i]
            j = i
            need: dict[int, int] = {}
            while j < n and claim_ids[j] == claim:
                k = int(counters[j])
                need[k] = need.get(k, 0) + int(quantities[j])
                j += 1
            if all(left[k] >= v for k, v in need.items()):
                for k, v in need.items():
                    left[k] -= v
            else:
                ok[claim] = False
            i = j


def _totals(counters: np.ndarray, qty: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct counters and the total quantity asked of each."""
    if counters.size == 0:
        return counters, qty
    # sort (counter, line) packed in one int64: a value sort is several times
    # faster than an argsort
    line_bits = max(1, int(len(counters) - 1).bit_length())
    packed = np.sort((counters.astype(np.int64) << line_bits) | np.arange(len(counters)))
    c_sorted = packed >> line_bits
    q_sorted = qty[packed & ((1 << line_bits) - 1)]
    starts = np.flatnonzero(starts_of_runs(c_sorted))
    return c_sorted[starts], np.add.reduceat(q_sorted, starts)
