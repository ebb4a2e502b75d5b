"""A checkout's prices, step by step (docs/promotions.md, "Pricing"), on a
small scratch array: one column per line in the checkout's stored order.

Each discount is allocated to the lines it applies to pro rata to what each
has left: a line's share is `discount * left // base`, the remainder goes on
the last of those lines, and whatever the last line cannot take goes on the
ones before it, last first.  So the shares are exact (they sum to the
discount) and no line goes below zero.
"""

from __future__ import annotations

from double11.engine.compiled import inline

# rows of the scratch: each line's deal row (-1: none), each kind of discount,
# what it has left, this step's share, whether this step applies to it; and,
# by coupon instead of by line, what each coupon took off
S_DEAL, S_OFF_DEAL, S_OFF_STORE, S_OFF_THRESHOLD, S_OFF_PLATFORM, S_LEFT, S_STEP, S_ELIGIBLE, S_APPLIED = range(9)
SCRATCH_ROWS = 9
_EXACT_FACTOR_MAX = 3_037_000_499  # below this, a product of two fits int64


@inline
def muldiv(a, b, c):
    """floor(a * b / c), exact, for 0 <= a, b <= c (a share of c).  The
    product may pass int64: a float estimate is corrected with the exact
    remainder, computed in wrapping int64 arithmetic (it is small, so its
    wrapped value is its true value)."""
    if a < _EXACT_FACTOR_MAX and b < _EXACT_FACTOR_MAX:
        return (a * b) // c
    q = int(float(a) * float(b) / float(c))
    r = a * b - q * c
    while r < 0:
        q -= 1
        r += c
    while r >= c:
        q += 1
        r -= c
    return q


@inline
def start_line(ps, p, list_amount, off_deal):
    ps[S_OFF_DEAL, p] = off_deal
    ps[S_OFF_STORE, p] = 0
    ps[S_OFF_THRESHOLD, p] = 0
    ps[S_OFF_PLATFORM, p] = 0
    ps[S_LEFT, p] = list_amount - off_deal


@inline
def mark(ps, p, applies):
    ps[S_ELIGIBLE, p] = 1 if applies else 0


@inline
def _base(ps, count):
    base = 0
    for p in range(count):
        if ps[S_ELIGIBLE, p] != 0:
            base += ps[S_LEFT, p]
    return base


@inline
def _allocate(ps, count, discount, base, row):
    """`discount` (at most `base`) over the marked lines into `row`."""
    if discount <= 0:
        return
    given = 0
    last = -1
    for p in range(count):
        ps[S_STEP, p] = 0
        if ps[S_ELIGIBLE, p] != 0:
            share = muldiv(discount, ps[S_LEFT, p], base)
            ps[S_STEP, p] = share
            given += share
            last = p
    rest = discount - given
    p = last
    while rest > 0 and p >= 0:
        if ps[S_ELIGIBLE, p] != 0:
            more = min(rest, ps[S_LEFT, p] - ps[S_STEP, p])
            ps[S_STEP, p] += more
            rest -= more
        p -= 1
    for p in range(count):
        ps[row, p] += ps[S_STEP, p]
        ps[S_LEFT, p] -= ps[S_STEP, p]


@inline
def coupon(ps, count, k, row, discount, min_spend):
    """Coupon k over the marked lines: what it took off, or -1 when they
    do not reach its minimum spend.  A checkout always costs at least 1 fen
    (as on Taobao): a coupon takes off at most what leaves that."""
    base = _base(ps, count)
    if base < min_spend:
        return -1
    left = 0
    for p in range(count):
        left += ps[S_LEFT, p]
    taken = max(0, min(discount, base, left - 1))
    _allocate(ps, count, taken, base, row)
    ps[S_APPLIED, k] = taken
    return taken


@inline
def threshold(ps, count, every, off):
    """The threshold "every `every`, `off` off" over the marked lines."""
    base = _base(ps, count)
    _allocate(ps, count, (base // every) * off, base, S_OFF_THRESHOLD)
