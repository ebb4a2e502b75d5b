"""Whether new checkouts of sold-out SKUs would be refused out_of_stock, read
from the state between two batches, for the HTTP front to refuse them
itself (http/flow_control.py).

The front asks only about a checkout of one line, without coupons, well
formed and allowed to its sender.  The engine would refuse such a checkout
with out_of_stock, line 0, "has 0 for sale", exactly when:
- its idempotency key is new (a key used before gets its first answer, or
  idempotency_key_reused);
- its SKU is in the catalog, has no units for sale and no deal (a deal's
  checks come before the stock's);
- no unpaid checkout is due to expire (the next batch would put its units
  back on sale before taking this one).
"""

from __future__ import annotations

import numpy as np

from double11.engine.machine import Engine

REFUSE, PASS, STOCK_BACK = 1, 0, 2  # a verdict per (key, sku) asked


def verdicts(engine: Engine, now_ms: int, keys: np.ndarray, skus: np.ndarray) -> np.ndarray:
    """A verdict (uint8) for each checkout (its key's digest and its SKU):
    REFUSE as out_of_stock, PASS to the engine, or STOCK_BACK: its SKU has
    units for sale again (pass, and forget it is sold out)."""
    out = np.full(len(keys), PASS, dtype=np.uint8)
    if not len(keys):
        return out
    rows = engine.sku_index.lookup(skus)
    known = rows >= 0
    safe_rows = np.where(known, rows, 0)
    for_sale = engine.available[safe_rows]
    out[known & (for_sale > 0)] = STOCK_BACK
    checkouts = engine.checkouts.rows
    due = max(now_ms, engine.now_ms) - engine.config.payment_timeout_ms
    if engine.expire_cursor < len(checkouts) and checkouts[engine.expire_cursor]["created"] <= due:
        return out  # units are about to come back: the engine decides
    new_key = engine.idem_index.lookup(keys) < 0
    no_deal = engine.skus.rows["deal_head"][safe_rows] == 0
    out[known & (for_sale == 0) & no_deal & new_key] = REFUSE
    return out
