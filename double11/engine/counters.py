"""Scarce counters: the one mechanism behind every limited quantity.

SKU stock today; coupon budgets, per-buyer limits and stock per store later.
Each kind of counter owns a range of rows in one `available` array.  A claim
is a group of lines (counter, quantity), served all or nothing: either every
line's units are taken or none is.  Claims are decided one after another in
batch order (first come, first served), inside the engine's compiled batch
loop, so no counter ever goes below 0 and no later claim can overtake an
earlier one.
"""

from __future__ import annotations

import numpy as np

from double11.engine.compiled import kernel


@kernel
def claim_lines(available, counters, qty, start, count):
    """Takes qty[j] units of available[counters[j]] for j in [start, start +
    count), all or nothing.  True when served; on False nothing changed."""
    for j in range(start, start + count):
        c = counters[j]
        if available[c] < qty[j]:
            for back in range(start, j):  # undo the lines already taken
                available[counters[back]] += qty[back]
            return False
        available[c] -= qty[j]
    return True


@kernel
def _claim_each(available, counters, qty, claim_start, claim_count, ok):
    for i in range(len(claim_start)):
        ok[i] = claim_lines(available, counters, qty, claim_start[i], claim_count[i])


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

    def claim(self, counters: np.ndarray, qty: np.ndarray, claim_lines_count: np.ndarray) -> np.ndarray:
        """Serves claims in order; claim i is the next claim_lines_count[i]
        lines.  Returns a bool per claim."""
        claim_count = np.asarray(claim_lines_count, dtype=np.int64)
        claim_start = np.cumsum(claim_count) - claim_count
        ok = np.empty(len(claim_count), dtype=np.bool_)
        _claim_each(self.available, np.asarray(counters, dtype=np.int64), np.asarray(qty, dtype=np.int64),
                    claim_start, claim_count, ok)
        return ok
