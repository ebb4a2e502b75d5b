"""The quotas' compiled command, called from the engine's batch loop
(double11/engine/transitions.py) in batch order: a release checks and takes
its units in the same step, so it never takes a unit that an earlier
command of the batch reserved or sold."""

from __future__ import annotations

from double11.engine.compiled import kernel
from double11.errors import Result
from double11.quotas.spec import RELEASE

# plain ints: Numba freezes module globals as compile-time constants
OK, UNKNOWN_SKU, OUT_OF_STOCK, UNKNOWN_OP = (
    int(Result.ok), int(Result.unknown_sku), int(Result.out_of_stock), int(Result.unknown_op))
RELEASE_ARGS = len(RELEASE.arg_fields)
QTY_AT = RELEASE.arg_at("qty")


@kernel
def release(sku_id, sku_row, a, n_args, arg, available, sku_stocked):
    """Takes qty units (its arg) of the SKU at `sku_row` out of its units for
    sale and out of its stocked units, all or none.  Returns (code, ref):
    ref is the units left for sale (OK), the units it had for sale
    (out_of_stock: fewer than qty) or the SKU's id (unknown_sku)."""
    if n_args != RELEASE_ARGS:
        # only a batch that skipped validation (a forged log record) gets
        # here: its args are not a release's, so none is read
        return UNKNOWN_OP, 0
    if sku_row < 0:
        return UNKNOWN_SKU, sku_id
    qty = arg[a + QTY_AT]
    left = available[sku_row]
    if left < qty:
        return OUT_OF_STOCK, left
    available[sku_row] = left - qty
    sku_stocked[sku_row] -= qty
    return OK, left - qty
