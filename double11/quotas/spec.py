"""The quotas area's command, declared (the vocabulary: double11/spec.py).

`release` takes unsold units out of a SKU's stock: the giving half of a
quota moved between units (the area as a whole: __init__.py).  Its qty
travels in a batch's args, laid out by `Command.arg_fields`; the SKU is the
route's id, the batch's `target`.
"""

from __future__ import annotations

import msgspec

from double11 import limits
from double11.errors import Result
from double11.spec import IDEMPOTENCY_KEY, Area, Command, Field, id_field


class Released(msgspec.Struct):
    sku: int
    qty: int
    stock: int  # the units the SKU still has for sale after the release (its view's `stock`)


RELEASE_QTY = Field("qty", "integer", "units taken out of the SKU's stock: unsold units, not reserved by a checkout",
                    Result.invalid_quantity, low=1, high=limits.restock_qty_max)

RELEASE = Command(
    "release", "/v1/skus/{sku}/release", "Take unsold units out of a SKU's stock (a quota moved to another unit)",
    (id_field("sku", "the SKU's id", where="path"), RELEASE_QTY, IDEMPOTENCY_KEY), Result.ok, Released,
    (Result.unknown_sku, Result.out_of_stock), number=20, in_args=True)  # the operator's alone

QUOTAS = Area("quotas", (RELEASE,), tables=())
