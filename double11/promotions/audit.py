"""The promotions' records read back as whole columns, for audits of a
(recovered) state: the bench's invariants and the tests'.  Plain NumPy over
the tables, never on a request's path."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from double11.promotions.tables import OFF_FIELDS

_OFF_NAMES = [name for name, _ in OFF_FIELDS]


def discounts_by_row(engine: Any, kind: Literal["checkouts", "orders", "lines"]) -> np.ndarray:
    """(rows, 4) discounts of every checkout, order or line (`kind`), by kind
    (DISCOUNT_KINDS' order), zero where none: for audits of whole tables."""
    checkouts = engine.checkouts.rows
    linked = np.flatnonzero(checkouts["promo"])
    cps = engine.promos.checkout_promos.rows[checkouts["promo"][linked] - 1]
    if kind == "checkouts":
        out = np.zeros((len(checkouts), 4), dtype=np.int64)
        out[linked] = np.stack([cps[name] for name in _OFF_NAMES], axis=1)
        return out
    table = engine.lines if kind == "lines" else engine.orders
    promos = engine.promos.line_promos if kind == "lines" else engine.promos.order_promos
    count, start = (("lines", "line_start") if kind == "lines" else ("orders", "order_start"))
    out = np.zeros((table.size, 4), dtype=np.int64)
    n = checkouts[count][linked].astype(np.int64)
    rows = np.repeat(checkouts[start][linked], n) + _within(n)
    at = np.repeat(cps[start], n) + _within(n)
    out[rows] = np.stack([promos.rows[name][at] for name in _OFF_NAMES], axis=1)
    return out


def _within(counts: np.ndarray) -> np.ndarray:
    """0..count-1 for each count, one after another."""
    return np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)


def payable(engine: Any, checkout_rows: np.ndarray) -> np.ndarray:
    """What the checkouts of these rows ask their buyers to pay: list less discounts."""
    rows = np.asarray(checkout_rows, dtype=np.int64)
    amount = engine.checkouts.rows["amount"][rows].astype(np.int64)
    link = engine.checkouts.rows["promo"][rows]
    linked = np.flatnonzero(link)
    if len(linked):
        cps = engine.promos.checkout_promos.rows[link[linked] - 1]
        amount[linked] -= sum(cps[name] for name in _OFF_NAMES)
    return amount


def line_deals(engine: Any) -> np.ndarray:
    """The row of the deal each line was sold on, -1 where none."""
    checkouts = engine.checkouts.rows
    out = np.full(engine.lines.size, -1, dtype=np.int64)
    linked = np.flatnonzero(checkouts["promo"])
    cps = engine.promos.checkout_promos.rows[checkouts["promo"][linked] - 1]
    n = checkouts["lines"][linked].astype(np.int64)
    rows = np.repeat(checkouts["line_start"][linked], n) + _within(n)
    deal = engine.promos.line_promos.rows["deal"][np.repeat(cps["line_start"], n) + _within(n)]
    out[rows] = deal.astype(np.int64) - 1
    return out
